"""What a rule check draws and derives on the host: random vectors (NumPy, from ``key``: no
random kernel is compiled per shape), the finite-difference steps, host copies one precision up
or in float64, and the default rtol along a row's path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import tolerance
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
    """h per float leaf: fd_step_factor(ref dtype) · rms(leaf) (an all-zero leaf: the rms of all
    float leaves together, else 1)."""
    sq = [np.asarray(x, np.float64) ** 2 for x in prob.floats]
    total = float(np.sqrt(sum(float(s.sum()) for s in sq) / max(sum(s.size for s in sq), 1)))
    steps = []
    for x, s in zip(prob.floats, sq, strict=True):
        ref = tolerance.reference_dtype(x.dtype)
        rms = float(np.sqrt(s.mean())) if s.size else 0.0
        tiny = float(jnp.finfo(ref).tiny)
        scale = rms if rms > tiny else (total if total > tiny else 1.0)
        steps.append(tolerance.fd_step_factor(ref) * scale)
    return steps


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
