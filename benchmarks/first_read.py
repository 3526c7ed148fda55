"""What makes the hand-derived step on mnist slower than ``jax.grad``'s: the step's first matrix
product reading its operands cold (docs/benchmarks.md, "hand ≤ 0.95 × jax.grad").

The ``jax.grad`` step reads every W once for the L2 term (0 · Σ W² with λ = 0) before its first
product; the hand-derived step leaves that term out and starts with z⁽²⁾ = x W⁽¹⁾ᵀ. This times, in
shuffled rounds, the hand-derived step alone and with one extra read placed in the cost — 0 · Σ x,
0 · Σ W⁽¹⁾, or 0 · Σ b⁽¹⁾ (a read of 512 numbers, as a control) — beside ``jax.grad``:

    PYTHONPATH=src python benchmarks/first_read.py --configs mnist,deep,course

An extra read that makes the step faster is not something the core should do: it is what this
backend's first product needs on this machine, not part of the derivation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp

import jaxbp
from jaxbp.bench.methods import make_problem
from jaxbp.bench.timing import interleaved, paired_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_core import config, runner  # noqa: E402  (the before/after script's step, runner)

KW = dict(activation="sigmoid", output="softmax_ce")


def with_read(read):
    """The hand-derived value_and_grad with 0 · Σ read(params, x) added to J."""

    def value_and_grad(p, x, y):
        J, grads = jaxbp.value_and_grad(p, x, y, **KW)
        return J + 0.0 * jnp.sum(read(p, x)), grads

    return value_and_grad


SOURCES = {
    "hand": lambda p, x, y: jaxbp.value_and_grad(p, x, y, **KW),
    "hand + 0·Σx": with_read(lambda p, x: x),
    "hand + 0·ΣW⁽¹⁾": with_read(lambda p, x: p[0].W),
    "hand + 0·Σb⁽¹⁾": with_read(lambda p, x: p[0].b),
    "jax.grad": lambda p, x, y: jaxbp.autodiff_value_and_grad(p, x, y, **KW),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mnist,deep,course")
    parser.add_argument("--budget", type=float, default=3.0)
    args = parser.parse_args()
    names = [n for n in SOURCES if n != "jax.grad"]
    print("| config | " + " | ".join(f"{n} / jax.grad" for n in names) + " | jax.grad ms |")
    print("|---|" + "---:|" * (len(names) + 1))
    for name in args.configs.split(","):
        problem = make_problem(config(name))
        t = interleaved({k: runner(v, problem) for k, v in SOURCES.items()}, budget_s=args.budget)
        ratios = " | ".join(f"{paired_ratio(t[n], t['jax.grad']):.3f}" for n in names)
        print(f"| {name} | {ratios} | {t['jax.grad'].median * 1e3:.4g} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
