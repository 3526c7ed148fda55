"""Output layers and their costs: the link ŷ = g(z^(L)), the per-example cost computed stably from
the logits z^(L), the output error δ^(L) = ŷ − y, and softmax with its Jacobian.

Three output layers, each the canonical link of its cost, which is why every one of them has the
same output error δ^(L) = ∂cost/∂z^(L) = ŷ − y (docs/derivation.md, eq. C4):

============== =============== ============================================================
name           link ŷ = g(z)   per-example cost, as computed from the logits z
============== =============== ============================================================
softmax_ce     softmax         −Σ_k y_k log ŷ_k = Σ_k y_k (logsumexp(z) − z_k)      (eq. C2)
sigmoid_bce    sigmoid         −Σ_k [y_k log ŷ_k + (1−y_k) log(1−ŷ_k)]
                               = Σ_k softplus(z_k) − y_k z_k                           (eq. C1)
identity_mse   identity        ½ Σ_k (z_k − y_k)²                                      (eq. C3)
============== =============== ============================================================

Computing from logits keeps cost and gradient finite for |z| up to float32's range: log ŷ is never
formed from a rounded-to-zero ŷ.

The softmax_ce output error ŷ − y assumes each target row sums to 1 (one-hot or a probability
vector), as the lecture's derivation does (Σ_j y_j = 1 in its last step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Output(NamedTuple):
    """An output layer: link, cost and output error.

    Attributes:
      name: registry name.
      link: ``z -> ŷ``, the output activation, applied to the last axis.
      cost: ``(z, y) -> (m,)`` per-example cost from logits ``z`` of shape (m, K).
      delta: ``(y_hat, y) -> δ^(L)``, the output error ∂cost/∂z = ŷ − y (eq. C4).
      target_grad: ``(z, y) -> ∂cost/∂y`` per example, used for the targets' cotangent.
    """

    name: str
    link: Callable[[Array], Array]
    cost: Callable[[Array, Array], Array]
    delta: Callable[[Array, Array], Array]
    target_grad: Callable[[Array, Array], Array]


def softmax(z: Array) -> Array:
    """ŷ_i = e^{z_i} / Σ_k e^{z_k} over the last axis, shifted by max z for stability (eq. S1)."""
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def softmax_jacobian(z: Array) -> Array:
    """Closed-form Jacobian of softmax: ∂ŷ_i/∂z_j = ŷ_i (δ_ij − ŷ_j) (eq. S2).

    The lecture's two cases: ŷ_i(1 − ŷ_i) on the diagonal, −ŷ_i ŷ_j off it.

    Args:
      z: logits of shape (..., K).

    Returns:
      Array of shape (..., K, K) with ``J[..., i, j] = ∂ŷ_i/∂z_j``.
    """
    y_hat = softmax(z)
    eye = jnp.eye(z.shape[-1], dtype=y_hat.dtype)
    return y_hat[..., :, None] * (eye - y_hat[..., None, :])


def log_softmax(z: Array) -> Array:
    """log ŷ = z − logsumexp(z), stable for any finite logits."""
    return z - jax.nn.logsumexp(z, axis=-1, keepdims=True)


def output_delta(y_hat: Array, y: Array) -> Array:
    """Output error δ^(L) = ŷ − y (eq. C4): the gradient of every cost here w.r.t. its logits."""
    return y_hat - y


def softmax_ce_cost(z: Array, y: Array) -> Array:
    """Categorical cross-entropy −Σ_k y_k log softmax(z)_k per example (eq. C2)."""
    return -jnp.sum(y * log_softmax(z), axis=-1)


def softmax_ce_target_grad(z: Array, y: Array) -> Array:
    """∂/∂y of the categorical cross-entropy: −log ŷ."""
    del y
    return -log_softmax(z)


def sigmoid_bce_cost(z: Array, y: Array) -> Array:
    """Binary / multi-label cross-entropy per example, Σ_k softplus(z_k) − y_k z_k (eq. C1).

    Equal to −Σ_k [y_k log σ(z_k) + (1 − y_k) log(1 − σ(z_k))], since −log σ(z) = softplus(−z)
    and −log(1 − σ(z)) = softplus(z).
    """
    return jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)


def sigmoid_bce_target_grad(z: Array, y: Array) -> Array:
    """∂/∂y of the binary cross-entropy: −z."""
    del y
    return -z


def identity_mse_cost(z: Array, y: Array) -> Array:
    """Squared error ½ ‖z − y‖² per example (eq. C3)."""
    r = z - y
    return 0.5 * jnp.sum(r * r, axis=-1)


def identity_mse_target_grad(z: Array, y: Array) -> Array:
    """∂/∂y of the squared error: y − z."""
    return y - z


def _identity(z: Array) -> Array:
    return z


OUTPUTS: dict[str, Output] = {
    o.name: o
    for o in (
        Output("softmax_ce", softmax, softmax_ce_cost, output_delta, softmax_ce_target_grad),
        Output(
            "sigmoid_bce", jax.nn.sigmoid, sigmoid_bce_cost, output_delta, sigmoid_bce_target_grad
        ),
        Output(
            "identity_mse", _identity, identity_mse_cost, output_delta, identity_mse_target_grad
        ),
    )
}
"""Every output layer by name."""


def get_output(name: str) -> Output:
    """Looks up an output layer by name.

    Raises:
      ValueError: naming the unknown name and listing the valid ones.
    """
    try:
        return OUTPUTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"output: unknown name {name!r}; valid names are {', '.join(OUTPUTS)}"
        ) from None
