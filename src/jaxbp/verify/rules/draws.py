"""What a rule check draws and derives on the host: random vectors (NumPy, from ``key``: no
random kernel is compiled per shape), the finite-difference steps, host copies one precision up
or in float64, and the default rtol along a row's path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import fd, tolerance
from jaxbp.verify.rules.problem import _Problem


def _normal(rng, shape, dtype) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape), dtype)


def _tangent_blocks(rng, prob: _Problem, n: int):
    """n random tangents per float leaf, each supported on that leaf only: (blocks, stacked)."""
    L = len(prob.floats)
    blocks = [_normal(rng, (n, *x.shape), x.dtype) for x in prob.floats]
    ts = [np.zeros((L * n, *x.shape), x.dtype) for x in prob.floats]
    for i in range(L):
        ts[i][i * n : (i + 1) * n] = blocks[i]
    return blocks, ts


def _steps(prob: _Problem) -> list[float]:
    """h per float leaf: :func:`jaxbp.verify.fd.base_step` of the leaf's rms in its reference
    dtype (an all-zero leaf: the rms of all float leaves together, else 1) — the step rule of
    every check."""
    rms = [float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))) if np.size(x) else 0.0
           for x in prob.floats]  # fmt: skip
    scales = fd.scales(np.asarray(rms))
    return [float(fd.base_step(s, tolerance.reference_dtype(x.dtype)))
            for s, x in zip(scales, prob.floats, strict=True)]  # fmt: skip


def fd_estimates(values, hs: np.ndarray) -> list:
    """Per float output leaf, :func:`jaxbp.verify.fd.at_offsets` of the reference program's
    values (one list of output leaves per offset, each stacked over the tangents) with each
    tangent's step ``hs``."""
    return [fd.at_offsets([v[j] for v in values], hs) for j in range(len(values[0]))]


def _up(values) -> list:
    """Host copies cast to their reference dtype (exact)."""
    return [np.asarray(v).astype(tolerance.reference_dtype(v.dtype)) for v in values]


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _rtol_of(dtypes, kind: str) -> float:
    """The loosest default rtol along a row's path (its primal leaf and the outputs it passes
    through): the dtypes JAX gives, never what the rule returned."""

    def one(d):
        if kind == "fd" and tolerance.reference_dtype(d) == jnp.dtype(d):
            return tolerance.default_rtol(d, "fd")  # no higher precision: the fd floor
        return tolerance.default_rtol(d, "analytic")

    return max(one(d) for d in dtypes)
