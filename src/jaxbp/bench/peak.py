"""The machine's peak GEMM throughput, measured: the yardstick for "% of peak".

A training step is three matrix products per layer (:mod:`jaxbp.bench.configs`), so the best a
step can do is the rate of the backend's own matrix multiply. That rate is measured here, with
the same JAX/XLA in the same process, for a few square and skinny shapes in row-major
``a @ b`` form; the best shape's rate is the peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.bench.timing import interleaved

SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (1024, 2048, 2048), (256, 2048, 2048))
"""(M, K, N) of the products timed: C (M, N) = A (M, K) @ B (K, N)."""

QUICK_SHAPES = ((1024, 1024, 1024), (1024, 2048, 2048))
"""Shapes for ``--quick``."""


class GemmPeak(NamedTuple):
    """Measured matrix-multiply rates.

    Attributes:
      gflops: the best shape's GFLOP/s (2·M·K·N per product).
      shape: that shape (M, K, N).
      per_shape: every shape measured, as ((M, K, N), GFLOP/s).
      torch_per_shape: PyTorch's ``a @ b`` on the same shapes in the same rounds, in its own
        process (its BLAS — MKL or OpenBLAS on a CPU — is another library than XLA's), or empty
        when not measured.
    """

    gflops: float
    shape: tuple[int, int, int]
    per_shape: tuple[tuple[tuple[int, int, int], float], ...]
    torch_per_shape: tuple[tuple[tuple[int, int, int], float], ...] = ()


def gemm_runner(shape: tuple[int, int, int], *, dtype=jnp.float32, precision=None):
    """``(run, flops)``: ``run(n)`` does n products C = A @ B of shape (M, K, N), compiled and
    warmed up, and blocks on the last; ``flops`` = 2·M·K·N per product."""
    M, K, N = shape
    ka, kb = jax.random.split(jax.random.fold_in(jax.random.key(0), M * 7 + K * 3 + N))
    a = jax.random.normal(ka, (M, K), dtype)
    b = jax.random.normal(kb, (K, N), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=precision))
    f(a, b).block_until_ready()

    def run(n: int) -> None:
        out = None
        for _ in range(n):
            out = f(a, b)
        out.block_until_ready()

    return run, 2 * M * K * N


def gemm_peak(
    shapes: Sequence[tuple[int, int, int]] = SHAPES,
    *,
    dtype=jnp.float32,
    budget_s: float = 1.0,
    precision=None,
    torch: bool = False,
) -> GemmPeak:
    """Times ``a @ b`` for each (M, K, N) in ``shapes`` and returns the best rate.

    Args:
      shapes: (M, K, N) triples.
      dtype: operand dtype.
      budget_s: seconds of timed samples per shape (interleaved across shapes).
      precision: passed to ``jnp.matmul`` (``None``: the backend default).
      torch: also time PyTorch's product on the CPU in the same rounds, in PyTorch's own worker
        process (:func:`jaxbp.bench.peers.torch_gemm_runner`; for reference only: the peak is
        XLA's).
    """
    runs, flops = {}, {}
    for shape in shapes:
        shape = tuple(shape)
        runs[("xla", shape)], flops[shape] = gemm_runner(shape, dtype=dtype, precision=precision)
        if torch:
            from jaxbp.bench.peers import torch_gemm_runner

            runs[("torch", shape)], _ = torch_gemm_runner(shape, dtype=jnp.dtype(dtype).name)
    timings = interleaved(
        {str(k): r for k, r in runs.items()}, budget_s=budget_s, sample_s=0.05, min_rounds=3
    )

    def rates(lib):
        return tuple(
            (s, flops[s] / timings[str((lib, s))].median / 1e9) for lb, s in runs if lb == lib
        )

    per_shape = rates("xla")
    best = max(per_shape, key=lambda item: item[1])
    return GemmPeak(best[1], best[0], per_shape, rates("torch") if torch else ())
