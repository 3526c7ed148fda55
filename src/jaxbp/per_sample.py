"""The lecture's per-sample algorithm, and per-example gradients.

The lecture's loop (docs/derivation.md, eq. B5):

  Δ^(l) := 0 for all l
  for t = 1 … m:
      a^(1) = x^(t); forward propagation → a^(2) … a^(L)
      δ^(L) = a^(L) − y^(t); compute δ^(L−1) … δ^(2)
      Δ^(l) := Δ^(l) + δ^(l+1) (a^(l))ᵀ
  D^(l) = (1/m) Δ^(l) (+ (λ/m) Θ^(l) off the bias column)

is :func:`scan_value_and_grad`, with the loop as ``jax.lax.scan`` carrying Δ. The same per-example
terms δ^(l+1) a^(l)ᵀ, kept apart instead of summed, are :func:`per_example_grads` (``jax.vmap``);
their mean plus the L2 term is :func:`vmap_value_and_grad`. All reuse
:func:`jaxbp.backprop.backward` on a batch of one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxbp.backprop import add_l2_grad, backward
from jaxbp.cost import NO_PENALTY, add_l2_penalty
from jaxbp.forward import as_targets, forward
from jaxbp.losses import get_output
from jaxbp.params import Params
from jaxbp.validation import check_call

Array = jax.Array


def _example_value_and_grad(params, x_t, y_t, activation, output):
    """cost and δ^(l+1) a^(l)ᵀ for one example x_t (n,), y_t (K,)."""
    out = get_output(output)
    cache = forward(params, x_t[None], activation=activation, output=output)
    cost_t = out.cost(cache.z[-1], y_t[None])[0]
    delta_out = out.delta(cache.a[-1], y_t[None])  # δ^(L) = a^(L) − y^(t)
    return cost_t, backward(params, cache, delta_out, activation=activation).grads


def scan_value_and_grad(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
):
    """J(Θ) and D^(l) by the lecture's per-sample loop, as a ``lax.scan`` over examples (eq. B5).

    Same contract and result as :func:`jaxbp.value_and_grad`; slower, since it runs m
    matrix-vector passes instead of one matrix-matrix pass — it exists to show, and to test,
    that the batched form is the lecture's algorithm.
    """
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    return _scan_value_and_grad(params, x, y, l2, activation, output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _scan_value_and_grad(params, x, y, l2, activation, output):
    x = x.astype(params[0].W.dtype)
    y = as_targets(y, params[-1].W.shape[0], x.dtype)
    m = x.shape[0]

    def step(carry, example):
        cost_sum, Delta = carry
        cost_t, g = _example_value_and_grad(params, *example, activation, output)
        return (cost_sum + cost_t, jax.tree.map(jnp.add, Delta, g)), None  # Δ += δ aᵀ

    init = (jnp.zeros((), x.dtype), jax.tree.map(jnp.zeros_like, params))
    (cost_sum, Delta), _ = jax.lax.scan(step, init, (x, y))
    J = add_l2_penalty(cost_sum / m, params, l2, m)
    D = jax.tree.map(lambda d: d / m, Delta)
    return J, add_l2_grad(D, params, l2, m)


def per_example_grads(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce"
) -> Params:
    """Per-example gradients δ^(l+1)_i a^(l)_iᵀ, batched with ``jax.vmap``.

    Returns:
      A pytree with the structure of ``params`` and a leading batch axis of length m on every
      leaf; its mean over that axis is the (unregularised) batch gradient.
    """
    params, x, y, activation, output = check_call(params, x, y, activation, output)
    return _per_example_grads(params, x, y, activation, output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _per_example_grads(params, x, y, activation, output):
    x = x.astype(params[0].W.dtype)
    y = as_targets(y, params[-1].W.shape[0], x.dtype)
    one = functools.partial(_example_value_and_grad, activation=activation, output=output)
    return jax.vmap(lambda x_t, y_t: one(params, x_t, y_t)[1])(x, y)


def vmap_value_and_grad(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
):
    """J(Θ) and D^(l) as the mean of per-example costs and gradients (``jax.vmap``), plus the L2
    terms (eqs. B3, B4, R1).

    Same contract and result as :func:`jaxbp.value_and_grad`; it materialises m per-example
    gradients (memory m · Σ n_out (n_in + 1)) before averaging them.
    """
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    return _vmap_value_and_grad(params, x, y, l2, activation, output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _vmap_value_and_grad(params, x, y, l2, activation, output):
    x = x.astype(params[0].W.dtype)
    y = as_targets(y, params[-1].W.shape[0], x.dtype)
    m = x.shape[0]
    one = functools.partial(_example_value_and_grad, activation=activation, output=output)
    costs, grads = jax.vmap(lambda x_t, y_t: one(params, x_t, y_t))(x, y)
    J = add_l2_penalty(jnp.mean(costs), params, l2, m)
    D = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return J, add_l2_grad(D, params, l2, m)
