"""Shared test utilities: tolerances per dtype and a leaf-by-leaf tree comparison."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RTOL_F64 = 1e-12
"""Hand-derived vs autodiff in float64: relative to the leaf's largest magnitude."""


def rtol_for(dtype) -> float:
    """Relative tolerance for comparing two float computations of the same quantity.

    float64: :data:`RTOL_F64`. Lower precision: 256 ulps of 1 — reassociated sums over a few
    hundred terms stay well inside it, while any real derivation error is orders larger.
    """
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return RTOL_F64
    return 256 * float(jnp.finfo(dtype).eps)


def max_rel_error(a, b) -> float:
    """max |a − b| / max(max |b|, tiny); NaN or Inf anywhere gives inf (never "equal")."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = max(float(np.max(np.abs(b), initial=0.0)), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


def assert_tree_close(actual, expected, rtol: float) -> float:
    """Every leaf pair within ``rtol`` (see :func:`max_rel_error`); names every failing leaf.

    Returns:
      The worst relative error over all leaves.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"tree structures differ: {jax.tree.structure(actual)} vs {jax.tree.structure(expected)}"
    )
    worst, failures = 0.0, []
    flat, _ = jax.tree_util.tree_flatten_with_path(expected)
    for (path, e), a in zip(flat, jax.tree.leaves(actual), strict=True):
        assert jnp.shape(a) == jnp.shape(e), f"{jax.tree_util.keystr(path)}: shape differs"
        err = max_rel_error(a, e)
        worst = max(worst, err)
        if not err <= rtol:
            failures.append(f"{jax.tree_util.keystr(path)}: rel. error {err:.3e} > {rtol:.1e}")
    assert not failures, "; ".join(failures)
    return worst


def raise_after_epoch(monkeypatch, epoch: int, make_error) -> None:
    """Makes :func:`jaxbp.train.fit` raise ``make_error()`` once epoch ``epoch`` has been
    yielded (a Ctrl-C, a divergence …); ``monkeypatch.undo()`` restores it."""
    from jaxbp import train as T

    real_fit = T.fit

    def fit(*a, **kw):
        for item in real_fit(*a, **kw):
            yield item
            if item[0] == epoch:
                raise make_error()

    monkeypatch.setattr(T, "fit", fit)
