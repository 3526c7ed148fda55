"""Shadow verification during training: the hand-derived gradient against ``jax.grad`` of the
same cost, at the parameters training has reached, leaf by leaf.

The error of a leaf is max |g_hand − g_auto| divided by the scale of the terms that were summed
to form that gradient: the larger of max |g_auto| and max over the leaf of
(1/s) Σ_i |g_i| + (λ/m) |W|, where g_i are single-example gradients of a sample of s rows. Near
convergence the data term and the L2 term (or the examples' terms) cancel and |g| becomes small
while the rounding error of the sum stays proportional to the terms; dividing by |g| alone would
then report rounding as divergence. The tolerance is √ε of the dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.autodiff import autodiff_value_and_grad
from jaxbp.backprop import value_and_grad as manual_value_and_grad
from jaxbp.cost import cost
from jaxbp.params import Layer, Params

Array = jax.Array

SCALE_ROWS = 64
"""Rows whose single-example gradients estimate the scale of the summed terms."""


class ShadowError(RuntimeError):
    """Hand-derived and autodiff gradients differ beyond the dtype's tolerance."""


def shadow_tolerance(dtype) -> float:
    """√ε of the dtype: far above rounding differences between two correct gradients
    (≈ 3.5e-4 for float32, 1.5e-8 for float64), far below the error of a wrong one."""
    return math.sqrt(float(jnp.finfo(dtype).eps))


def term_scale(params: Params, x, y, *, activation, output: str, l2=0.0) -> Params:
    """Per element, the mean |single-example gradient| over the first :data:`SCALE_ROWS` rows
    plus the L2 term's (λ/m)|W|: the magnitude of what the gradient sums (autodiff only)."""
    xs, ys = x[:SCALE_ROWS], y[:SCALE_ROWS]

    def one(xi, yi):
        return jax.grad(cost)(params, xi[None], yi[None], activation=activation, output=output)

    per_example = jax.vmap(one)(xs, ys)
    m = x.shape[0]
    return tuple(
        Layer(jnp.mean(jnp.abs(g.W), axis=0) + (l2 / m) * jnp.abs(p.W), jnp.mean(jnp.abs(g.b), 0))
        for g, p in zip(per_example, params, strict=True)
    )


def shadow_errors(
    params: Params,
    x,
    y,
    *,
    activation,
    output: str,
    l2=0.0,
    hand: Callable | None = None,
) -> dict[str, Array]:
    """Hand-derived vs autodiff at the same parameters.

    Args:
      params, x, y, activation, output, l2: as for :func:`jaxbp.value_and_grad`.
      hand: the gradient source under test (default: the δ recursion, :func:`jaxbp.value_and_grad`).

    Returns:
      ``{"J": …, "[0].W": …, "[0].b": …}``: the relative error of J and of every leaf (see the
      module docstring; NaN if either side is not finite). Pure and jittable; vmap it over seeds.
    """
    hand = manual_value_and_grad if hand is None else hand
    kw = dict(activation=activation, output=output, l2=l2)
    J_h, g_h = hand(params, x, y, **kw)
    J_a, g_a = autodiff_value_and_grad(params, x, y, **kw)
    scale = term_scale(params, x, y, **kw)
    tiny = jnp.finfo(J_a.dtype).tiny

    def rel(h, a, s):
        denom = jnp.maximum(jnp.maximum(jnp.max(jnp.abs(a)), jnp.max(s)), tiny)
        finite = jnp.all(jnp.isfinite(h)) & jnp.all(jnp.isfinite(a))
        return jnp.where(finite, jnp.max(jnp.abs(h - a)) / denom, jnp.nan)

    errors = {"J": rel(J_h, J_a, jnp.abs(J_a))}
    flat, _ = jax.tree_util.tree_flatten_with_path(g_a)
    leaves = zip(flat, jax.tree.leaves(g_h), jax.tree.leaves(scale), strict=True)
    for (path, a), h, s in leaves:
        errors[jax.tree_util.keystr(path)] = rel(h, a, s)
    return errors


def check_shadow(errors: dict, dtype, *, epoch: int) -> float:
    """Raises :class:`ShadowError` naming the worst leaf when any error exceeds
    :func:`shadow_tolerance` (or is NaN); returns the worst error otherwise.

    Args:
      errors: :func:`shadow_errors` output on the host (a seed axis is reduced with max).
      dtype: the parameters' dtype.
      epoch: for the message.
    """
    tol = shadow_tolerance(dtype)
    worst_name, worst = None, 0.0
    for name, value in errors.items():
        v = np.asarray(value, np.float64)
        err = float("inf") if np.any(np.isnan(v)) else float(np.max(v))
        if worst_name is None or err > worst:
            worst_name, worst = name, err
    if not worst <= tol:
        raise ShadowError(
            f"epoch {epoch}: hand-derived and autodiff gradients diverge at {worst_name}: "
            f"max relative error {worst:.3e} > tolerance {tol:.1e} for {jnp.dtype(dtype).name}"
        )
    return worst
