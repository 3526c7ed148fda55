"""The rate of each matrix product of a training step, in the layout the step uses and as a
plain row-major (NN) product of the same size (docs/benchmarks.md, "≥ 85 % of GEMM peak").

Per layer, batch-major, W of shape (n_out, n_in): z = a Wᵀ (contracts both operands' last
dimension, "NT"), δ W ("NN") and Δ = δᵀ a (contracts both operands' first dimension, the batch,
"TN"). Each product is jitted alone and timed in shuffled rounds; XLA_FLAGS in the environment
apply, so backends can be compared:

    PYTHONPATH=src python benchmarks/gemm_layouts.py --configs deep,mnist
    XLA_FLAGS=--xla_cpu_use_onednn=true PYTHONPATH=src python benchmarks/gemm_layouts.py
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

from jaxbp.bench import CONFIGS
from jaxbp.bench.timing import interleaved

PRODUCTS = {
    "z = a Wᵀ (NT)": lambda m, i, o: ((m, i), (o, i), lambda a, w: a @ w.T),
    "δ W (NN)": lambda m, i, o: ((m, o), (o, i), lambda d, w: d @ w),
    "Δ = δᵀ a (TN)": lambda m, i, o: ((m, o), (m, i), lambda d, a: d.T @ a),
}


def runner(shape_a, shape_b, fn):
    a = jax.random.normal(jax.random.key(0), shape_a, jnp.float32)
    b = jax.random.normal(jax.random.key(1), shape_b, jnp.float32)
    f = jax.jit(fn)
    f(a, b).block_until_ready()

    def run(n: int) -> None:
        for _ in range(n):
            out = f(a, b)
        out.block_until_ready()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="deep,mnist,wide")
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| config | layer n_in→n_out, m | product | GFLOP/s | same size as NN |")
    print("|---|---|---|---:|---:|")
    for name in args.configs.split(","):
        config = CONFIGS[name]
        layers = sorted(set(zip(config.sizes[:-1], config.sizes[1:], strict=True)))
        m = config.batch
        for n_in, n_out in layers:
            runs, flops = {}, 2 * m * n_in * n_out
            for label, make in PRODUCTS.items():
                runs[label] = runner(*make(m, n_in, n_out))
                shape_a, shape_b, _ = make(m, n_in, n_out)
                # the same (M, K, N) as a plain a @ b of row-major operands
                M, K = (shape_a[1], shape_a[0]) if "TN" in label else shape_a
                N = shape_b[0] if "NT" in label else shape_b[1]
                runs[label + " as NN"] = runner((M, K), (K, N), lambda a, b: a @ b)
            t = interleaved(runs, budget_s=args.budget)
            for label in PRODUCTS:
                rate = flops / t[label].median / 1e9
                nn = flops / t[label + " as NN"].median / 1e9
                print(f"| {name} | {n_in}→{n_out}, {m} | {label} | {rate:.0f} | {nn:.0f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
