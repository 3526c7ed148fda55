"""The hand-derived step against ``jax.grad``'s inside the runner's epoch — what ``jaxbp train``
runs (docs/benchmarks.md, "Inside the training loop"); ``jaxbp bench`` reports the same figure
per configuration (``in_epoch``, :mod:`jaxbp.bench.epoch`). This runs only that part:

    PYTHONPATH=src python benchmarks/epoch_step.py --configs tiny,course,mnist,wide,deep
"""

from __future__ import annotations

import argparse
import sys

from jaxbp.bench import CONFIGS
from jaxbp.bench.epoch import MINIBATCHES, bench_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,course,mnist,wide,deep")
    parser.add_argument("--minibatches", type=int, default=MINIBATCHES)
    parser.add_argument("--budget", type=float, default=4.0)
    args = parser.parse_args()
    print(
        "| config | minibatches per epoch | manual ms/step | jax.grad ms/step | manual / jax.grad |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        e = bench_epoch(CONFIGS[name], minibatches=args.minibatches, budget_s=args.budget)
        print(
            f"| {name} | {e['minibatches']} | {e['manual_ms']:.4g} | {e['autodiff_ms']:.4g} "
            f"| {e['ratio']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
