"""The cost J(Θ) of the lecture, as a plain function of the parameters: the single definition that
both the hand-derived gradient and ``jax.grad`` differentiate.

J(Θ) = (1/m) Σ_i cost(z^(L)_i, y_i) + (λ / 2m) Σ_l Σ_{j, i ≥ 1} (Θ^(l)_{j,i})²   (eqs. C1–C3, R1)

The penalty skips the bias column (i = 0): here it sums ``W`` only, never ``b``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbp.forward import as_targets, forward
from jaxbp.losses import get_output
from jaxbp.params import Params

Array = jax.Array


def l2_penalty(params: Params, l2, m: int) -> Array:
    """(λ / 2m) Σ_l ‖W^(l)‖², biases excluded (eq. R1)."""
    return (l2 / (2 * m)) * sum(jnp.sum(layer.W * layer.W) for layer in params)


def data_cost(logits: Array, y: Array, output: str) -> Array:
    """(1/m) Σ_i cost(z^(L)_i, y_i), from the logits (eqs. C1–C3)."""
    return jnp.mean(get_output(output).cost(logits, y))


def cost(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=0.0
) -> Array:
    """J(Θ): mean cost over the batch plus the L2 penalty off the biases (eqs. C1–C3, R1).

    No input checks (see :func:`jaxbp.loss` for the checked, custom-VJP version); this is the
    reference that :func:`jaxbp.autodiff_value_and_grad` differentiates with ``jax.grad``.
    """
    cache = forward(params, x, activation=activation, output=output)
    logits = cache.z[-1]
    y = as_targets(y, logits.shape[-1], logits.dtype)
    return data_cost(logits, y, output) + l2_penalty(params, l2, x.shape[0])
