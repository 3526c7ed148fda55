"""Time to a trained model, process to process (docs/benchmarks.md, "Time to a trained model";
issue 13, item 5): ``jaxbp train`` on digits against an equivalent PyTorch script
(benchmarks/ttm_torch.py) and scikit-learn's ``MLPClassifier`` (benchmarks/ttm_sklearn.py), each
a fresh process timed from its start to its exit — interpreter start, imports, data loading,
compilation, training, evaluation and, for jaxbp, its run directory. Repetitions alternate in
shuffled rounds; every process gets the same thread count (the cores this one may use).

jaxbp runs ``--config experiments/digits.toml --seeds 0`` three ways: with no compilation cache
(a first run), with a warm cache (JAXBP_CACHE_DIR filled by an untimed run first), and warm with
``--no-plots``. ``--cnn`` adds ``experiments/digits-cnn.toml`` against the PyTorch LeNet.

    PYTHONPATH=src python benchmarks/time_to_model.py [--repeats 3] [--cnn] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JAXBP = str(Path(sys.executable).with_name("jaxbp"))


def threads() -> int:
    return len(os.sched_getaffinity(0))


def write_split(path: Path, val_fraction: float = 0.1) -> str:
    """jaxbp's digits split (experiments/digits.toml: stratified 0.2 test, then ``val_fraction``
    validation, data seed 0; digits-cnn.toml has none) as row indices into ``load_digits()``,
    for the PyTorch and scikit-learn scripts: every contender trains and tests on the same
    rows."""
    import numpy as np
    from sklearn.datasets import load_digits

    from jaxbp.data.split import stratified_split

    y = load_digits().target
    rng = np.random.default_rng(0)
    keep, test = stratified_split(y, 0.2, rng)
    train, _ = stratified_split(y[keep], val_fraction, rng)
    np.savez(path, train=keep[train], test=test)
    return str(path)


def contenders(tmp: Path, cnn: bool) -> dict[str, dict]:
    """name → {"cmd", "env", "jaxbp" (True: a jaxbp train command, given --out)}."""
    n = str(threads())
    rows = write_split(tmp / "split.npz")
    env = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}
    cache = {"JAXBP_CACHE_DIR": str(tmp / "cache")}
    digits = ["--config", str(ROOT / "experiments/digits.toml"), "--seeds", "0"]
    out = {
        "jaxbp train, no compilation cache": {
            "cmd": [JAXBP, "train", *digits, "--no-compile-cache"],
            "env": env,
            "jaxbp": True,
        },
        "jaxbp train, warm compilation cache": {
            "cmd": [JAXBP, "train", *digits],
            "env": env | cache,
            "jaxbp": True,
        },
        "jaxbp train --no-plots, warm cache": {
            "cmd": [JAXBP, "train", *digits, "--no-plots"],
            "env": env | cache,
            "jaxbp": True,
        },
        "PyTorch script (benchmarks/ttm_torch.py)": {
            "cmd": [
                sys.executable,
                str(ROOT / "benchmarks/ttm_torch.py"),
                "--threads",
                n,
                "--split",
                rows,
            ],
            "env": env,
        },
        "scikit-learn MLPClassifier (benchmarks/ttm_sklearn.py)": {
            "cmd": [sys.executable, str(ROOT / "benchmarks/ttm_sklearn.py"), "--split", rows],
            "env": env,
        },
    }
    if cnn:
        lenet = ["--config", str(ROOT / "experiments/digits-cnn.toml"), "--seeds", "0"]
        out["jaxbp train --model cnn, warm cache"] = {
            "cmd": [JAXBP, "train", *lenet],
            "env": env | cache,
            "jaxbp": True,
        }
        out["PyTorch LeNet script (ttm_torch.py --model cnn)"] = {
            "cmd": [sys.executable, str(ROOT / "benchmarks/ttm_torch.py"), "--model", "cnn",
                    "--threads", n, "--split", write_split(tmp / "split-cnn.npz", 0.0),
                    "--scaling", "max"],
            "env": env,
        }  # fmt: skip
    return out


def run_once(spec: dict, run_dir: Path) -> dict:
    """Wall seconds from spawn to exit, and the test accuracy the process reports."""
    cmd = list(spec["cmd"])
    if spec.get("jaxbp"):
        cmd += ["--out", str(run_dir)]
    env = {**os.environ, **spec["env"]}
    env.pop("PYTHONPATH", None)  # the installed jaxbp, as a user runs it
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    if spec.get("jaxbp"):
        summary = json.loads((run_dir / "summary.json").read_text())
        shutil.rmtree(run_dir)
        return {"wall_s": wall, "test_accuracy": summary["test_accuracy"],
                "train_s": summary["wall_time_s"]}  # fmt: skip
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "test_accuracy": reply["test_accuracy"], "train_s": reply["train_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cnn", action="store_true", help="also the LeNet on digits")
    parser.add_argument("--json", help="write the samples and medians here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jaxbp-ttm-"))
    try:
        specs = contenders(tmp, args.cnn)
        for name, spec in specs.items():  # fill the cache; PyTorch's and sklearn's disk caches
            print(f"warm-up: {name}", file=sys.stderr, flush=True)
            run_once(spec, tmp / "warmup")
        samples = {name: [] for name in specs}
        for r in range(args.repeats):
            order = list(specs)
            random.Random(r).shuffle(order)
            for name in order:
                samples[name].append(run_once(specs[name], tmp / f"run-{r}"))
                print(f"round {r + 1}: {name}: {samples[name][-1]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"{threads()} threads per process; load average {load:.2f} after the runs\n")
    print("| process | wall s (median) | runs | in-process training s | test accuracy |")
    print("|---|---:|---|---:|---:|")
    rows = {}
    for name, runs in samples.items():
        wall = statistics.median(s["wall_s"] for s in runs)
        rows[name] = {"median_wall_s": wall, "runs": runs}
        walls = ", ".join(f"{s['wall_s']:.2f}" for s in runs)
        print(
            f"| {name} | {wall:.2f} | {walls} "
            f"| {statistics.median(s['train_s'] for s in runs):.2f} "
            f"| {statistics.median(s['test_accuracy'] for s in runs):.4f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
