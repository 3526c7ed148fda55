"""Shadow verification during training: the hand-derived gradient against ``jax.grad`` of the
same cost, at the parameters training has reached, leaf by leaf.

The error of a leaf is max |g_hand − g_auto| divided by the scale of the terms that were summed
to form that gradient: the larger of max |g_auto| and max over the leaf of
(1/s) Σ_i |g_i| + (λ/m) |W|, where g_i are single-example gradients of a sample of s rows. Near
convergence the data term and the L2 term (or the examples' terms) cancel and |g| becomes small
while the rounding error of the sum stays proportional to the terms; dividing by |g| alone would
then report rounding as divergence. The tolerance is √ε of the dtype.

The network is the MLP (``activation``, ``output``) or any :class:`jaxbp.model.Model` (the CNN):
its ``value_and_grad`` against its ``autodiff``, the L2 term on its ``W…`` leaves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.model import Model, is_weight, mlp
from jaxbp.params import Params

Array = jax.Array

SCALE_ROWS = 64
"""Rows whose single-example gradients estimate the scale of the summed terms."""


class ShadowError(RuntimeError):
    """Hand-derived and autodiff gradients differ beyond the dtype's tolerance."""


def shadow_tolerance(dtype) -> float:
    """√ε of the dtype: far above rounding differences between two correct gradients
    (≈ 3.5e-4 for float32, 1.5e-8 for float64), far below the error of a wrong one."""
    return math.sqrt(float(jnp.finfo(dtype).eps))


def _model(model, activation, output, hand=None) -> Model:
    if model is None:
        model = mlp(activation=activation, output=output)
    if hand is not None:
        model = model._replace(value_and_grad=_bound(hand, activation, output, model))
    return model


def _bound(hand, activation, output, model):
    """``hand`` as a Model's ``(params, x, y, *, l2)`` function: an MLP source gets the MLP's
    ``activation`` / ``output``; a function for a given ``model`` is its own already."""
    if activation is None and output is None:
        return hand

    def value_and_grad(params, x, y, *, l2=None):
        return hand(params, x, y, activation=activation, output=output, l2=l2)

    return value_and_grad


def term_scale(
    params: Params, x, y, *, activation=None, output=None, l2=0.0, model: Model | None = None
) -> Params:
    """Per element, the mean |single-example gradient| over the first :data:`SCALE_ROWS` rows
    plus the L2 term's (λ/m)|W| on the weights: the magnitude of what the gradient sums
    (autodiff only). The MLP's ``activation`` / ``output``, or a :class:`~jaxbp.model.Model`."""
    model = _model(model, activation, output)
    xs, ys = x[:SCALE_ROWS], y[:SCALE_ROWS]

    def one(xi, yi):
        return jax.grad(lambda p: model.cost(p, xi[None], yi[None])[0])(params)

    # lax.map, not vmap: under the runner's vmap over seeds a vmap over examples too would batch
    # both operands of a convolution's transpose, which JAX does not implement
    per_example = jax.lax.map(lambda xy: one(*xy), (xs, ys))
    m = x.shape[0]

    def scale(path, g, p):
        mean = jnp.mean(jnp.abs(g), axis=0)
        return mean + (l2 / m) * jnp.abs(p) if is_weight(path) else mean

    return jax.tree_util.tree_map_with_path(scale, per_example, params)


def shadow_errors(
    params: Params,
    x,
    y,
    *,
    activation=None,
    output=None,
    l2=0.0,
    hand: Callable | None = None,
    model: Model | None = None,
    key=None,
) -> dict[str, Array]:
    """Hand-derived vs autodiff at the same parameters.

    Args:
      params, x, y, activation, output, l2: as for :func:`jaxbp.value_and_grad` (``activation``
        and ``output``: the MLP's; leave them out with ``model``).
      hand: the gradient source under test (default: the model's own ``value_and_grad`` — for
        the MLP the δ recursion, :func:`jaxbp.value_and_grad`); an MLP source with the MLP's
        arguments, else a ``(params, x, y, *, l2)`` function.
      model: a :class:`~jaxbp.model.Model` instead of the MLP: its ``value_and_grad`` is
        compared with its ``autodiff``.
      key: a ``stochastic`` model's masks (dropout), the same for both sides (default
        ``jax.random.key(0)``); ignored otherwise.

    Returns:
      ``{"J": …, "[0].W": …, "[0].b": …}``: the relative error of J and of every leaf (see the
      module docstring; NaN if either side is not finite). Pure and jittable; vmap it over seeds.
    """
    model = _model(model, activation, output, hand)
    kw = {}
    if model.stochastic:
        kw["key"] = jax.random.key(0) if key is None else key
    J_h, g_h = model.value_and_grad(params, x, y, l2=l2, **kw)
    J_a, g_a = model.autodiff(params, x, y, l2=l2, **kw)
    scale = term_scale(params, x, y, l2=l2, model=model)
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
