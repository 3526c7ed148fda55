"""Chooses among configurations of an experiment by cross-validation inside its training split,
never looking at its test split (experiments/README.md, "Rules").

The experiment's training and validation rows (its default split, ``data_seed`` as in its
config) are written to an NPZ archive in their original units (images keep their shape); then
every variant is trained on ``--folds`` random stratified splits of *those* rows (data seeds
1, 2, …: 20 % held out as a test split, 10 % of the rest for validation) with one seed each, and
the held-out accuracy is averaged over the folds. The experiment's own test rows take no part.

    .venv/bin/python experiments/cv_probe.py digits-cnn --folds 6 \\
        --variant "" --variant "scaling=max" --variant "scaling=max shift=1" --variant "epochs=80"

A variant is space-separated ``field=value`` changes to the config (TOML syntax for the value:
``channels=[64,128]``, ``scaling="max"`` or ``scaling=max``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_all import config  # noqa: E402


def training_rows(name: str, path: Path) -> None:
    """The experiment's training + validation rows, in original units, as ``path`` (NPZ)."""
    from jaxbp.experiment import load_data

    ds = load_data(config(name).resolve())
    x = np.concatenate([ds.x_train, ds.x_val]) * ds.scale + ds.mean
    y = np.concatenate([ds.y_train, ds.y_val])
    if ds.image_shape is not None:
        x = x.reshape(len(x), *ds.image_shape)
        if x.shape[-1] == 1:
            x = x[..., 0]
    np.savez(path, x=np.round(x, 6), y=y)


def parse(variant: str) -> dict:
    changes = {}
    for item in variant.split():
        key, _, value = item.partition("=")
        try:
            changes[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            changes[key] = value
    return changes


def held_out(fold: dict) -> float:
    """A fold's accuracy on every row it held out: its test rows and, when it has one, its
    validation split (a variant with ``val_fraction=0`` holds out its test rows alone)."""
    if fold["n_val"] == 0:
        return fold["test"]
    n = fold["n_test"] + fold["n_val"]
    return (fold["test"] * fold["n_test"] + fold["val"] * fold["n_val"]) / n


def main() -> int:
    from jaxbp.experiment import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--folds", type=int, default=6)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--json", help="write every fold's result here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jaxbp-cv-"))
    data = tmp / "train.npz"
    training_rows(args.experiment, data)
    base = config(args.experiment)
    results = {}
    for variant in args.variant or [""]:
        folds = []
        for fold in range(1, args.folds + 1):
            c = base.updated(data=str(data), data_seed=fold, test_fraction=0.2, seeds=(0,))
            c = c.updated(**parse(variant))
            s = run(c, tmp / "run", overwrite=True).values
            folds.append({"test": s["test_accuracy"], "val": s["final_val_accuracy"],
                          "n_test": s["n_test"], "n_val": s["n_val"]})  # fmt: skip
        held = [held_out(f) for f in folds]
        results[variant or "(as configured)"] = folds
        print(
            f"{variant or '(as configured)':40s} held-out accuracy {100 * np.mean(held):.2f} % "
            f"± {100 * np.std(held) / np.sqrt(len(held)):.2f} (folds: "
            f"{', '.join(f'{100 * h:.1f}' for h in held)})",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
