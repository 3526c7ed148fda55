"""A network of layers with an output layer: its cost J, the output error δ^(L) = ŷ − y seeded at
the logits, the hand-derived gradient, and the same as a ``jax.custom_vjp`` loss.

For any ``model`` (a :class:`~jaxbp.layers.base.Layer`, usually a
:func:`~jaxbp.layers.Sequential`) whose forward gives logits z^(L) of shape (m, K), and an output
layer of :data:`jaxbp.losses.OUTPUTS` (softmax_ce, sigmoid_bce, identity_mse)::

    J(Θ) = (1/m) Σ_i cost(z_i^(L), y_i) + (λ/2m) Σ_W ‖W‖²            (eqs. C1–C3, R1)
    δ^(L) = (ŷ − y) / m                                               (eq. C4, with the 1/m)
    (Δ, _) = model.backward(params, cache, δ^(L))                     (eq. L5)
    D = Δ + (λ/m) W on the W… leaves, Δ elsewhere                     (eq. R2: off the bias)

Seeding the 1/m with δ^(L) makes every layer's (summed) backward return D = (1/m)Δ directly. The
penalty falls on the parameters named ``W…`` (dense and conv weights, attention projections,
embeddings) and never on biases, normalisation scales/offsets or running statistics.

Functions:

- :func:`cost` — J by the forward pass only (what ``jax.grad`` differentiates: the reference);
- :func:`value_and_grad` — ``((J, cache), grads)`` by the hand-derived backward;
- :func:`autodiff_value_and_grad` — the same by ``jax.value_and_grad`` of :func:`cost`;
- :func:`loss` — J as a ``jax.custom_vjp`` whose backward is the hand-derived one, so that
  ``jax.grad``, optax, ``jit`` and ``vmap`` run our derivation;
- :func:`penalty`, :func:`predict`.

``cache`` is the model's forward cache: pass it to ``model.update_state`` to carry BatchNorm's
running statistics to the next step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layers.base import Layer
from jaxbp.losses import get_output

Array = jax.Array


def _is_weight(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and str(last.key).startswith("W")


def penalty(params, l2, m: int) -> Array:
    """(λ/2m) Σ ‖W‖² over the ``W…`` leaves of ``params`` (eq. R1); 0 for ``l2=None``."""
    total = jnp.zeros((), jnp.result_type(*jax.tree.leaves(params)) if params else jnp.float32)
    if l2 is None:
        return total
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if _is_weight(path):
            total = total + jnp.sum(leaf * leaf)
    return (l2 / (2 * m)) * total


def penalty_grad(params, l2, m: int):
    """∂/∂params of :func:`penalty`: (λ/m) W on the ``W…`` leaves, zeros elsewhere (eq. R2)."""
    if l2 is None:
        return jax.tree.map(jnp.zeros_like, params)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (l2 / m) * leaf if _is_weight(path) else jnp.zeros_like(leaf), params
    )


def _check(model, x, y, output: str):
    if not isinstance(model, Layer):
        raise TypeError(f"model: must be a jaxbp.layers.Layer, got {type(model).__name__}")
    out = get_output(output)
    if jnp.ndim(y) != 2 or jnp.shape(y)[0] != jnp.shape(x)[0]:
        raise ValueError(
            f"y: must be (m, K) targets for the {jnp.shape(x)[0]} rows of x, got shape "
            f"{jnp.shape(y)}"
        )
    return out


def cost(model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True):
    """J(Θ) by the forward pass alone (eqs. C1–C3, R1): the function autodiff differentiates."""
    out = _check(model, x, y, output)
    z, _ = model.forward(params, x, key=key, train=train)
    _require_logits(z, y)
    return jnp.mean(out.cost(z, y)) + penalty(params, l2, x.shape[0])


def _require_logits(z, y):
    if z.shape != y.shape:
        raise ValueError(
            f"model: its output must be logits of the targets' shape {tuple(y.shape)}, got "
            f"{tuple(z.shape)}"
        )


def value_and_grad(
    model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True
):
    """``((J, cache), grads)`` with the hand-derived gradient D (eqs. C4, L5, R2).

    Args:
      model: the network; its forward must give (m, K) logits.
      params: its parameters (``model.init``).
      x: a batch of inputs, (m, *in_shape).
      y: (m, K) targets (one-hot for softmax_ce).
      output: an output layer of :data:`jaxbp.losses.OUTPUTS`.
      l2: λ ≥ 0, or None: no penalty.
      key: for dropout (``train=True``).
      train: training mode (batch statistics, dropout on).

    Returns:
      ``((J, cache), grads)``, like ``jax.value_and_grad(..., has_aux=True)``; ``cache`` feeds
      ``model.update_state``.
    """
    out = _check(model, x, y, output)
    m = x.shape[0]
    z, cache = model.forward(params, x, key=key, train=train)
    _require_logits(z, y)
    J = jnp.mean(out.cost(z, y)) + penalty(params, l2, m)
    delta = out.delta(out.link(z), y) / m  # δ^(L) = (ŷ − y)/m   (eq. C4)
    grads, _ = model.backward(params, cache, delta)
    if l2 is not None:
        grads = jax.tree.map(jnp.add, grads, penalty_grad(params, l2, m))
    return (J, cache), grads


def autodiff_value_and_grad(
    model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True
):
    """The reference: ``((J, cache), grads)`` with ``grads`` by ``jax.value_and_grad`` of the
    forward pass (no hand-derived backward involved)."""

    def J(p):
        out = _check(model, x, y, output)
        z, cache = model.forward(p, x, key=key, train=train)
        _require_logits(z, y)
        return jnp.mean(out.cost(z, y)) + penalty(p, l2, x.shape[0]), cache

    return jax.value_and_grad(J, has_aux=True)(params)


def loss(model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True):
    """J(Θ) as a ``jax.custom_vjp`` whose backward pass is the hand-derived one.

    ``jax.grad(lambda p: loss(model, p, x, y, output="softmax_ce"))(params)`` then runs
    :func:`value_and_grad`'s δ recursion, not autodiff; the cotangents of ``x`` (the first layer's
    dx; none for integer inputs), ``y`` (∂J/∂y from the logits) and ``l2`` (Σ‖W‖²/2m) are the
    true ones, so the function composes with any transformation. Stateful models: this returns
    J only — use :func:`value_and_grad` to get the cache for ``model.update_state``.
    """
    _check(model, x, y, output)
    return _loss(model, output, bool(train), params, x, y, l2, key)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _loss(model, output, train, params, x, y, l2, key):
    return cost(model, params, x, y, output=output, l2=l2, key=key, train=train)


def _loss_fwd(model, output, train, params, x, y, l2, key):
    out = get_output(output)
    m = x.shape[0]
    z, cache = model.forward(params, x, key=key, train=train)
    _require_logits(z, y)
    J = jnp.mean(out.cost(z, y)) + penalty(params, l2, m)
    return J, (params, cache, z, y, l2, x)


def _loss_bwd(model, output, train, res, g):
    del train
    params, cache, z, y, l2, x = res
    out = get_output(output)
    m = z.shape[0]
    delta = out.delta(out.link(z), y) * (g / m)
    grads, dx = model.backward(params, cache, delta)
    if l2 is not None:
        grads = jax.tree.map(lambda d, p: d + g * p, grads, penalty_grad(params, l2, m))
        dl2 = g * penalty(params, 1.0, m).astype(jnp.result_type(l2))
    else:
        dl2 = None
    dy = _cotangent(out.target_grad(z, y) * (g / m), y)
    dx = _cotangent(dx, x)
    return grads, dx, dy, dl2, None


def _cotangent(value, like):
    """``value`` as the cotangent of ``like``: its dtype, or float0 zeros for an integer input."""
    if value is None or not jnp.issubdtype(jnp.result_type(like), jnp.inexact):
        return np.zeros(jnp.shape(like), dtype=jax.dtypes.float0)
    return value.astype(jnp.result_type(like))


_loss.defvjp(_loss_fwd, _loss_bwd)


def predict(model: Layer, params, x) -> Array:
    """The predicted class of each row: argmax of the logits, evaluation mode."""
    z, _ = model.forward(params, x, train=False)
    return jnp.argmax(z, axis=-1)
