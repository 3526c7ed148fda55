"""Runs every experiment in this folder and writes experiments/RESULTS.md.

For each dataset config (``<name>.toml``): :func:`jaxbp.experiment.run` (what ``jaxbp train``
runs, in this process) with 5 seeds trained together by vmap,
once with the hand-derived gradients (``--grad manual``) and once with ``jax.grad``
(``--grad autodiff``); then scikit-learn's ``MLPClassifier`` on the same split, standardisation
and architecture, 5 seeds; then a table of test accuracy (mean ± std over seeds), the manual vs
autodiff final-loss difference, wall time, and the published reference where there is one.

Hyperparameters are fixed in the configs before any test accuracy is seen; nothing here looks
at the test split except to report it.

Usage (from the repository root):
  .venv/bin/python experiments/run_all.py                 # everything
  .venv/bin/python experiments/run_all.py --only digits iris
  .venv/bin/python experiments/run_all.py --report-only   # rebuild RESULTS.md from the runs

RESULTS.md is merged, not rewritten: a dataset's row is replaced only when this invocation has
results for it (just run, or cached in ``<runs>/results.json``); every other row is kept as it
was, so ``--report-only`` on a fresh clone (no runs) leaves the table as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASETS = (
    "iris", "wine", "digits", "mnist1d", "optdigits", "pendigits", "letter", "mnist",
    "digits-cnn", "mnist-cnn", "digits-bf16", "optdigits-bf16", "mnist-bf16",
)  # fmt: skip
"""Experiments, one ``<name>.toml`` each; the ``-cnn`` ones train ``--model cnn``; the ``-bf16``
ones are a :data:`VARIANTS` of another experiment."""
VARIANTS = {
    "digits-bf16": ("digits", {"precision": "bf16"}),
    "optdigits-bf16": ("optdigits", {"precision": "bf16"}),
    "mnist-bf16": ("mnist", {"precision": "bf16"}),
}
"""Experiments that are another's config with some fields changed: ``--precision bf16`` (the
products in bfloat16 with float32 accumulation, float32 master parameters), compared in the
table with the float32 row they derive from."""
GRADS = ("manual", "autodiff")
PUBLISHED = {
    "mnist1d": "MLP ≈ 68 % (Greydanus 2020)",
    "optdigits": "k-NN 98.00 % (optdigits.names)",
    "pendigits": "k-NN (k=1) ≈ 97.7 %",
    "letter": "≈ 80 % (Frey & Slate 1991); 1-NN ≈ 95.7 %",
    "mnist": "2-layer MLP, 300 hidden: 95.3 % on the full 60k/10k split (LeCun et al. 1998)",
    "mnist-cnn": "LeNet-5: 99.05 % (0.95 % error) on the full 60k/10k split (LeCun et al. 1998)",
}
SPLITS = {
    "iris": "stratified 80/20, seed 0",
    "wine": "stratified 80/20, seed 0",
    "digits": "stratified 80/20, seed 0",
    "mnist1d": "its own 4000/1000",
    "optdigits": "standard .tra/.tes",
    "pendigits": "standard .tra/.tes",
    "letter": "standard first 16000 / last 4000",
    "mnist": "t10k only, stratified 8000/2000, seed 0",
    "digits-cnn": "stratified 80/20, seed 0",
    "mnist-cnn": "t10k only, stratified 8000/2000, seed 0",
}
SPLITS.update({name: SPLITS[base] for name, (base, _) in VARIANTS.items()})
SKLEARN_ACTIVATION = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "identity": "identity"}


def config(name: str):
    """The experiment's TrainConfig, read from ``<name>.toml``."""
    from jaxbp.experiment import TrainConfig

    base, changes = VARIANTS.get(name, (name, {}))
    return TrainConfig.from_toml(HERE / f"{base}.toml").updated(**changes)


def grads(name: str) -> tuple[str, ...]:
    """The gradient sources an experiment is run with: bf16 computes the hand-derived gradient
    only (``--precision bf16`` needs ``--grad manual``)."""
    return ("manual",) if config(name).precision == "bf16" else GRADS


def train(name: str, grad: str, seeds: list[int], runs: Path) -> dict:
    """One run in this process: the config with ``seeds`` and ``grad``; its summary.json."""
    from jaxbp.experiment import run

    out = runs / f"{name}-{grad}"
    print(f"training {name} with {grad} gradients, seeds {seeds} → {out}", flush=True)
    return run(config(name).updated(seeds=tuple(seeds), grad=grad), out, overwrite=True).values


def sklearn_reference(name: str, seeds: list[int]) -> dict:
    """MLPClassifier on the jaxbp split: same standardised features, hidden layers, activation,
    minibatch size, epochs, initial learning rate and L2 term (sklearn's alpha is per minibatch,
    so alpha = λ·B/m). Its Adam has no learning-rate schedule; L-BFGS configs use its lbfgs."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from jaxbp.experiment import load_data

    c = config(name).resolve()
    ds = load_data(c)
    if c.model == "cnn":
        return svc_reference(ds)
    activation = c.activation if isinstance(c.activation, str) else None
    if activation not in SKLEARN_ACTIVATION:
        return {"skipped": f"activation {list(c.activation)} has no MLPClassifier equivalent"}
    m = ds.x_train.shape[0]
    batch = m if c.batch_size == "all" else c.batch_size
    accuracies, t0 = [], time.perf_counter()
    for seed in seeds:
        clf = MLPClassifier(
            hidden_layer_sizes=c.hidden,
            activation=SKLEARN_ACTIVATION[activation],
            solver="lbfgs" if c.optimizer == "lbfgs" else "adam",
            alpha=c.l2 * batch / m,
            batch_size=batch,
            learning_rate_init=c.lr,
            max_iter=c.epochs,
            n_iter_no_change=c.epochs + 1,  # no early stop on training loss: run all epochs
            tol=0.0,
            random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(ds.x_train, ds.y_train)
        accuracies.append(float(clf.score(ds.x_test, ds.y_test)))
    return {"accuracies": accuracies, "wall_time_s": time.perf_counter() - t0}


def svc_reference(ds) -> dict:
    """scikit-learn has no CNN: its RBF-kernel SVC (default C and gamma, deterministic) on the
    same standardised split stands in as the classical reference for the cnn experiments."""
    from sklearn.svm import SVC

    t0 = time.perf_counter()
    clf = SVC(kernel="rbf").fit(ds.x_train, ds.y_train)
    accuracy = float(clf.score(ds.x_test, ds.y_test))
    return {"accuracies": [accuracy], "model": "SVC", "wall_time_s": time.perf_counter() - t0}


def pct(values) -> str:
    a = 100 * np.asarray(values, np.float64)
    return f"{a.mean():.2f} ± {a.std():.2f}"


def loss_gap(mine: dict, other: dict) -> str:
    """max |ΔJ| between two runs' final training losses over the seeds (relative in brackets)."""
    lm = np.asarray(mine["final_train_losses"], np.float64)
    lo = np.asarray(other["final_train_losses"], np.float64)
    diff = np.abs(lm - lo)
    i = int(np.argmax(diff))
    rel = diff[i] / max(abs(lo[i]), np.finfo(np.float64).tiny)
    return f"{diff[i]:.1e} ({rel:.0e})"


def row(name: str, r: dict, results: dict | None = None) -> str:
    """The table row of one dataset's results (manual, autodiff and sklearn summaries); a
    :data:`VARIANTS` row (no autodiff run) is compared with its base experiment's manual run in
    ``results`` where that is there."""
    man, sk = r["manual"], r.get("sklearn", {})
    manual = pct(man["test_accuracies"])
    if "autodiff" in r:
        auto, gap = pct(r["autodiff"]["test_accuracies"]), loss_gap(man, r["autodiff"])
    else:
        auto, gap = "— (bf16: manual only)", "—"
        base = (results or {}).get(VARIANTS[name][0])
        if base is not None:
            f32 = base["manual"]
            delta = 100 * (np.mean(man["test_accuracies"]) - np.mean(f32["test_accuracies"]))
            manual += f" (float32 {delta:+.2f})"
            gap = f"vs float32 manual: {loss_gap(man, f32)}"
    n = f"{man['n_train']}/{man['n_val']}/{man['n_test']}"
    if man.get("model") == "cnn":  # "cnn 8x8x1 conv 16,32 k5 dense 120,84 relu"
        net = man["network"]
    else:
        net = "–".join(map(str, man["sizes"])) + f" {man['activation']}"
    skl = pct(sk["accuracies"]) if "accuracies" in sk else sk.get("skipped", "not run")
    if sk.get("model") == "SVC":
        skl = f"{100 * sk['accuracies'][0]:.2f} (SVC, RBF)"
    if man.get("precision", "float32") != "float32":
        net += f", {man['precision']} products"
    return (
        f"| {name} | {SPLITS[name]} ({n}) | {net} | {manual} | {auto} | {gap} "
        f"| {man['wall_time_s']:.1f} | {skl} | {PUBLISHED.get(name, '—')} |"
    )


def header(seeds: list[int]) -> list[str]:
    """RESULTS.md down to the table's separator line."""
    return [
        "# Results: hand-derived backpropagation on real datasets",
        "",
        f"Written by `experiments/run_all.py`. Test accuracy is the mean ± standard deviation over "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) trained together by `jax.vmap` "
        "(`jaxbp train --seeds`), float32, CPU. **manual** = the hand-derived δ recursion "
        "(`--grad manual`, the default); **autodiff** = `jax.grad` of the same cost "
        "(`--grad autodiff`), same seeds, same minibatch order. *max |ΔJ|* is the largest "
        "difference between the two runs' final training loss J(Θ) over the seeds (relative "
        "difference in brackets). Wall time: the 5-seed manual run, from start to summary, "
        "including compilation.",
        "",
        "| dataset | split | network | manual: test acc. % | autodiff: test acc. % "
        "| max \\|ΔJ\\| manual vs autodiff | wall time (s) | scikit-learn MLPClassifier % "
        "| published |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


NOTES = [
    "",
    "Notes",
    "",
    "- Splits: n = train/validation/test. The validation split (10 % of the training part, "
    "stratified) is carved out of the training data; the test split is never used for any "
    "choice. Hyperparameters are in `experiments/<dataset>.toml`.",
    "- MNIST: only the 10 000-image MNIST *test* set is available here, so it is split "
    "8000/2000 (stratified, seed 0); the published 95.3 % (4.7 % error) is for the full "
    "60 000-image training set and is not directly comparable.",
    "- cnn rows (`<dataset>-cnn.toml`, `--model cnn`): the LeNet-style network of "
    "`jaxbp.layers.models.lenet` (conv k×k SAME → relu → 2×2 max pool per block, then dense "
    "layers), trained with each layer's hand-derived backward (**manual**) or `jax.grad` of "
    "the same network (**autodiff**). scikit-learn has no CNN: its column holds an RBF-kernel "
    "`SVC` (default C and gamma) on the same standardised split. The published LeNet-5 figure "
    "is for the full 60 000-image training set.",
    "- bf16 rows (`--precision bf16` on the config of the row they name): every matrix "
    "product of the forward pass and the δ recursion in bfloat16 with float32 accumulation, "
    "float32 master parameters, cost, δ^(L) and optimizer (`jaxbp.precision`); the hand-derived "
    "gradient only, so no autodiff run. In brackets: the difference of the mean test accuracy "
    "from the float32 manual row, in points; the ΔJ column compares the final training losses "
    "with that row's. scikit-learn's column repeats its float32 reference.",
    "- MNIST-1D: generated locally by `mnist1d.make_dataset` with its default arguments.",
    "- scikit-learn: `MLPClassifier` on the same standardised split with the same hidden "
    "layers, activation, minibatch size, number of epochs, initial learning rate and L2 "
    "term (alpha = λ·B/m); its Adam uses a constant learning rate where jaxbp uses cosine "
    "decay.",
    "- Manual and autodiff runs differ only in float32 rounding (the two gradients agree to "
    "~1e-6 relative at every step); over many steps the trajectories drift apart by that "
    "rounding, which is what the ΔJ column shows.",
]


def table_rows(text: str) -> dict[str, str]:
    """The data rows of a RESULTS.md table, by dataset name (its first cell)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (
            line.startswith("| ")
            and cells[0] not in ("dataset", "")
            and not cells[0].startswith("-")
        ):
            rows[cells[0]] = line
    return rows


def merge(existing: str, results: dict, seeds: list[int]) -> tuple[str, list[str]]:
    """RESULTS.md with the rows of ``results`` regenerated and every other row of ``existing``
    kept as it was; rows in :data:`DATASETS` order, unknown names after. Returns the text and
    the names of the rows kept."""
    rows = table_rows(existing)
    kept = [name for name in rows if name not in results]
    rows.update({name: row(name, r, results) for name, r in results.items()})
    order = [n for n in DATASETS if n in rows] + [n for n in rows if n not in DATASETS]
    lines = [*header(seeds), *(rows[n] for n in order), *NOTES]
    return "\n".join(lines) + "\n", kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--runs", default=str(HERE / "runs"), help="where run directories go")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="reuse existing runs")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = Path(args.runs)
    cache = runs / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    for name in args.only:
        if not args.report_only:
            r = {grad: train(name, grad, seeds, runs) for grad in grads(name)}
            if not args.no_sklearn:
                print(f"scikit-learn MLPClassifier on {name} …", flush=True)
                r["sklearn"] = sklearn_reference(name, seeds)
            results[name] = r
            runs.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(results, indent=1))
    path = HERE / "RESULTS.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    text, kept = merge(existing, {n: results[n] for n in DATASETS if n in results}, seeds)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}" + (f" (rows kept as they were: {', '.join(kept)})" if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
