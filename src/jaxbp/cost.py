"""The cost J(Θ) of the lecture, as a plain function of the parameters: the single definition that
both the hand-derived gradient and ``jax.grad`` differentiate.

J(Θ) = (1/m) Σ_i cost(z^(L)_i, y_i) + (λ / 2m) Σ_l Σ_{j, i ≥ 1} (Θ^(l)_{j,i})²   (eqs. C1–C3, R1)

The penalty skips the bias column (i = 0): here it sums ``W`` only, never ``b``.

:func:`forward_cost` assembles it — forward pass, targets, data cost, L2 term — once, for every
caller (:func:`cost`, the custom VJP, the δ recursion, the trainer's evaluation).

"No penalty" is said explicitly: ``l2=None`` (:data:`NO_PENALTY`) means J has no L2 term and
nothing computes one — no pass over the weights, in J or in the gradient. A number, ``0.0``
included, is an ordinary λ: its term (λ/2m) Σ W² is computed, whatever its value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.forward import Cache, as_targets, forward
from jaxbp.losses import get_output
from jaxbp.params import Params

Array = jax.Array

NO_PENALTY = None
"""``l2=NO_PENALTY`` (``None``, the default of every gradient source): no L2 term at all."""


def l2_penalty(params: Params, l2, m: int) -> Array:
    """(λ / 2m) Σ_l ‖W^(l)‖², biases excluded (eq. R1)."""
    return (l2 / (2 * m)) * sum(jnp.sum(layer.W * layer.W) for layer in params)


def add_l2_penalty(J: Array, params: Params, l2, m: int) -> Array:
    """J + (λ / 2m) Σ_l ‖W^(l)‖² (eq. R1); J itself for ``l2=None`` (:data:`NO_PENALTY`)."""
    if l2 is NO_PENALTY:
        return J
    return J + l2_penalty(params, l2, m)


def data_cost(logits: Array, y: Array, output: str) -> Array:
    """(1/m) Σ_i cost(z^(L)_i, y_i), from the logits (eqs. C1–C3)."""
    return jnp.mean(get_output(output).cost(logits, y))


class ForwardCost(NamedTuple):
    """J(Θ) and what computing it produced.

    Attributes:
      J: the mean cost over the batch plus the L2 term (none for ``l2=None``), a scalar.
      cache: the forward cache (z and a of every layer).
      y: the targets as (m, K) in the logits' dtype (integer labels made one-hot).
    """

    J: Array
    cache: Cache
    y: Array


def forward_cost(params: Params, x: Array, y: Array, *, activation, output: str, l2) -> ForwardCost:
    """Forward pass → targets → data cost + L2 term: J(Θ) assembled (eqs. C1–C3, R1).

    The one place that sequence is written; no input checks.

    Args:
      params, x, y, activation, output: as for :func:`jaxbp.value_and_grad`.
      l2: λ ≥ 0, or ``None`` (:data:`NO_PENALTY`) for no L2 term at all.
    """
    cache = forward(params, x, activation=activation, output=output)
    logits = cache.z[-1]
    y = as_targets(y, logits.shape[-1], logits.dtype)
    J = add_l2_penalty(data_cost(logits, y, output), params, l2, x.shape[0])
    return ForwardCost(J, cache, y)


def cost(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
) -> Array:
    """J(Θ): mean cost over the batch plus the L2 penalty off the biases (eqs. C1–C3, R1).

    No input checks (see :func:`jaxbp.loss` for the checked, custom-VJP version); this is the
    reference that :func:`jaxbp.autodiff_value_and_grad` differentiates with ``jax.grad``.
    ``l2=None`` (the default): no penalty term.
    """
    return forward_cost(params, x, y, activation=activation, output=output, l2=l2).J
