"""J(Θ) as a ``jax.custom_vjp`` whose backward pass is the hand-derived δ recursion.

``jax.grad(jaxbp.loss)`` — and with it optax, ``jit``, ``vmap`` and higher-level code that only
sees a loss function — runs our derivation instead of JAX's own reverse mode. The rule returns a
cotangent for every differentiable input, each scaled by the upstream cotangent g:

- params: g · D^(l) (eqs. B1–B4);
- x:      g · (1/m) (Θ^(1))ᵀ δ^(2) per example, bias row dropped (eq. B6) — input gradients for
          saliency maps and adversarial examples;
- y:      g · (1/m) ∂cost/∂y (−log ŷ, −z or y − z for the three outputs); zero (float0) for
          integer labels;
- l2:     g · (1/2m) Σ W²; none for ``l2=None`` (the default: no penalty term at all).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.backprop import add_l2_grad, backward
from jaxbp.cost import NO_PENALTY, forward_cost
from jaxbp.forward import as_targets
from jaxbp.losses import get_output
from jaxbp.params import Params
from jaxbp.validation import check_call

Array = jax.Array


def loss(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
) -> Array:
    """J(Θ), differentiable by ``jax.grad`` through the hand-derived backward pass.

    Args and checks as :func:`jaxbp.value_and_grad`. A single example (x of shape (n,)) is a batch
    of one, so ``jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))`` gives per-example gradients.

    Example:
      >>> grads = jax.grad(jaxbp.loss)(params, x, y, activation="relu")
      >>> updates, opt_state = optimizer.update(grads, opt_state)
    """
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    if l2 is not NO_PENALTY:
        l2 = jnp.asarray(l2, params[0].W.dtype)
    return _loss(activation, output, params, x, y, l2)


def _zero_cotangent(v):
    if jnp.issubdtype(jnp.result_type(v), jnp.inexact):
        return jnp.zeros_like(v)
    return np.zeros(jnp.shape(v), dtype=jax.dtypes.float0)


def _cotangent(value, like):
    """``value`` as the cotangent of ``like``: same dtype, or float0 for an integer primal."""
    if jnp.issubdtype(jnp.result_type(like), jnp.inexact):
        return value.astype(jnp.result_type(like))
    return _zero_cotangent(like)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _loss(activation, output, params, x, y, l2):
    return forward_cost(params, x, y, activation=activation, output=output, l2=l2).J


def _loss_fwd(activation, output, params, x, y, l2):
    J, cache, _ = forward_cost(params, x, y, activation=activation, output=output, l2=l2)
    return J, (params, x, y, l2, cache)


def _loss_bwd(activation, output, residuals, g):
    params, x, y, l2, cache = residuals
    out = get_output(output)
    logits, y_hat = cache.z[-1], cache.a[-1]
    y_t = as_targets(y, logits.shape[-1], logits.dtype)
    m = x.shape[0]
    scale = g / m
    result = backward(params, cache, out.delta(y_hat, y_t) * scale, activation=activation)
    grads = add_l2_grad(result.grads, params, None if l2 is NO_PENALTY else g * l2, m)
    dx = _cotangent(result.input_delta, x)
    dy = _cotangent(out.target_grad(logits, y_t) * scale, y)
    if l2 is NO_PENALTY:
        return grads, dx, dy, None
    dl2 = (g / (2 * m) * sum(jnp.sum(p.W * p.W) for p in params)).astype(l2.dtype)
    return grads, dx, dy, dl2


_loss.defvjp(_loss_fwd, _loss_bwd)
