"""The convolution's kernel gradient ∂E/∂W = Σ_{n,h,w} x_pad[n, h+i, w+j, :]ᵀ δ[n, h, w, :] on
the ``cnn`` configuration's two layers, four ways, each alone, interleaved (docs/benchmarks.md,
"cnn"): is im2col plus one product faster than XLA's convolution?

- ``conv``: one XLA convolution, batch and image as its contraction (x as ``CHWN``, δ as the
  ``IHWO`` kernel) — what ``jax.grad`` derives and what a hand-written rule can write;
- ``stack``: im2col by k² shifted slices stacked into (m, H, W, k², C_in), then one product;
- ``patches``: ``lax.conv_general_dilated_patches`` (im2col as a convolution), then one product;
- ``per_offset``: k² products x_shiftedᵀ δ, one per kernel offset, without the im2col copy.

    PYTHONPATH=src python benchmarks/conv_kernel_grad.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp.bench.timing import interleaved


def _pads(k: int) -> tuple[int, int]:
    return (k - 1) // 2, k - 1 - (k - 1) // 2  # SAME, stride 1


def conv(x, dy, k):
    lo, hi = _pads(k)
    return lax.conv_general_dilated(
        x, dy, (1, 1), [(lo, hi), (lo, hi)], dimension_numbers=("CHWN", "IHWO", "HWNC")
    )


def stack(x, dy, k):
    lo, hi = _pads(k)
    m, H, W, C = x.shape
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    cols = jnp.stack([xp[:, i : i + H, j : j + W, :] for i in range(k) for j in range(k)], axis=3)
    return jnp.einsum("nhwpc,nhwo->pco", cols, dy).reshape(k, k, C, -1)


def patches(x, dy, k):
    C = x.shape[-1]
    p = lax.conv_general_dilated_patches(
        x, (k, k), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )  # (m, H, W, C·k·k), C major
    return jnp.einsum("nhwp,nhwo->po", p, dy).reshape(C, k, k, -1).transpose(1, 2, 0, 3)


def per_offset(x, dy, k):
    lo, hi = _pads(k)
    m, H, W, C = x.shape
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    rows = [
        jnp.einsum("nhwc,nhwo->co", xp[:, i : i + H, j : j + W, :], dy)
        for i in range(k)
        for j in range(k)
    ]
    return jnp.stack(rows).reshape(k, k, C, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--budget", type=float, default=1.5)
    args = parser.parse_args()
    layers = {"conv1 28x28 1->6": (28, 1, 6), "conv2 14x14 6->16": (14, 6, 16)}
    runs = {}
    for name, (H, C, O) in layers.items():
        kx, kd = jax.random.split(jax.random.key(0))
        x = jax.random.normal(kx, (args.batch, H, H, C))
        dy = jax.random.normal(kd, (args.batch, H, H, O))
        ref = conv(x, dy, 5)
        for fn in (conv, stack, patches, per_offset):
            f = jax.jit(fn, static_argnums=2)
            err = float(jnp.max(jnp.abs(f(x, dy, 5) - ref)) / jnp.max(jnp.abs(ref)))
            assert err < 1e-4, (name, fn.__name__, err)

            def run(n, f=f, x=x, dy=dy):
                out = None
                for _ in range(n):
                    out = f(x, dy, 5)
                jax.block_until_ready(out)

            runs[(name, fn.__name__)] = run
    t = interleaved(runs, budget_s=args.budget)
    names = ("conv", "stack", "patches", "per_offset")
    print(f"batch {args.batch}, ms per kernel gradient (median over interleaved rounds)\n")
    print("| layer | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for layer in layers:
        print(
            f"| {layer} | " + " | ".join(f"{t[(layer, n)].median * 1e3:.2f}" for n in names) + " |"
        )


if __name__ == "__main__":
    main()
