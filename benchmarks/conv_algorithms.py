"""Conv2D's two algorithms — XLA convolutions and im2col (patches × GEMM) — on the LeNet layers
jaxbp trains, one forward + hand-derived backward each, interleaved (docs/benchmarks.md, "cnn:
im2col"): the measurements behind :func:`jaxbp.layers.conv.im2col_is_faster`, the rule of
``Conv2D(algorithm="auto")``.

The layers are those of ``experiments/digits-cnn.toml`` (8×8 digits, channels 32, 64, batch
64), ``experiments/mnist-cnn.toml`` (28×28, channels 16, 32, batch 64) and ``jaxbp bench``'s
``cnn`` configuration (28×28, channels 6, 16, batch 256); each a 5×5 SAME convolution, stride 1.
Before timing, each layer's two algorithms are checked against each other (forward and the
three gradients, float32, relative to the largest entry).

    PYTHONPATH=src python benchmarks/conv_algorithms.py [--budget 2] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxbp.bench.timing import interleaved
from jaxbp.layers.conv import Conv2D, im2col_is_faster

LAYERS = {  # name: (H, C_in, C_out, batch)
    "digits conv1 8x8 1->32 m64": (8, 1, 32, 64),
    "digits conv2 4x4 32->64 m64": (4, 32, 64, 64),
    "mnist-cnn conv1 28x28 1->16 m64": (28, 1, 16, 64),
    "mnist-cnn conv2 14x14 16->32 m64": (14, 16, 32, 64),
    "bench cnn conv1 28x28 1->6 m256": (28, 1, 6, 256),
    "bench cnn conv2 14x14 6->16 m256": (14, 6, 16, 256),
}
KERNEL = 5
ALGORITHMS = ("conv", "im2col")


def step(layer):
    """One forward and the hand-derived backward with δ = z (any cotangent of z's shape)."""

    @jax.jit
    def run(params, x):
        z, cache = layer.forward(params, x)
        return layer.backward(params, cache, z)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per method")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    runs, auto = {}, {}
    for name, (H, C, O, m) in LAYERS.items():
        kx, kp = jax.random.split(jax.random.key(0))
        x = jax.random.normal(kx, (m, H, H, C))
        outs = {}
        for algorithm in ALGORITHMS:
            layer = Conv2D(O, KERNEL, padding="SAME", algorithm=algorithm)
            params, _ = layer.init(kp, (H, H, C))
            f = step(layer)
            outs[algorithm] = (layer.forward(params, x)[0], f(params, x))

            def run(n, f=f, params=params, x=x):
                out = None
                for _ in range(n):
                    out = f(params, x)
                jax.block_until_ready(out)

            runs[(name, algorithm)] = run
        for a, b in zip(*(jax.tree.leaves(outs[k]) for k in ALGORITHMS), strict=True):
            err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
            assert err < 1e-5, (name, err)
        auto[name] = "im2col" if im2col_is_faster((H, H), (KERNEL, KERNEL)) else "conv"
    timings = interleaved(runs, budget_s=args.budget)
    lines = [
        f"ms per forward + hand-derived backward of one Conv2D (5×5, SAME), median over "
        f"interleaved rounds; {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}",
        "",
        "| layer | conv | im2col | conv / im2col | auto takes |",
        "|---|---:|---:|---:|---|",
    ]
    for name in LAYERS:
        conv, im2col = (timings[(name, a)].median * 1e3 for a in ALGORITHMS)
        lines.append(f"| {name} | {conv:.2f} | {im2col:.2f} | {conv / im2col:.2f} | {auto[name]} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
