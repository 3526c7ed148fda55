"""The δ recursion — hand-derived backpropagation in batched matrix form.

For a batch of m examples (rows), with ⊙ the elementwise product (docs/derivation.md):

  δ^(L) = ŷ − y                                          (B1: output error, eq. C4)
  δ^(l) = (Θ^(l))ᵀ δ^(l+1) ⊙ f′(z^(l)),  bias row dropped   (B2: for rows, δ^(l+1) W ⊙ f′(z^(l)))
  Δ^(l) = Σ_i δ^(l+1)_i a^(l)_iᵀ = (δ^(l+1))ᵀ a^(l)        (B3: accumulated over the batch)
  D^(l) = (1/m) Δ^(l) + (λ/m) Θ^(l), the λ term off the bias column (j = 0)   (B4)
  ∂J/∂b^(l) = (1/m) Σ_i δ^(l+1)_i                          (B3 for the bias column)

:func:`backward` is the recursion itself, for any upstream output error; :func:`value_and_grad`
seeds it with (ŷ − y)/m and adds the regularisation term. The 1/m is applied once to δ^(L);
the recursion is linear, so this equals dividing every Δ^(l) by m (eq. B4) at a fraction of the cost.

With ``l2=None`` (the default, :data:`jaxbp.cost.NO_PENALTY`), :func:`value_and_grad` leaves the
penalty out instead of adding 0 · Σ W² — one pass over every weight less per step
(docs/benchmarks.md); any number, 0.0 included, is an ordinary λ whose terms are computed. :func:`weight_gradient` is eq. B3's product, laid out for the backend.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.activations import resolve
from jaxbp.cost import NO_PENALTY, add_l2_penalty, forward_cost
from jaxbp.forward import Cache
from jaxbp.losses import get_output
from jaxbp.params import Layer, Params
from jaxbp.precision import cast_tree, check_precision, dot, dot_tn
from jaxbp.validation import check_call

Array = jax.Array


class Backward(NamedTuple):
    """What the backward pass computes.

    Attributes:
      grads: Σ over the batch of δ^(l+1) a^(l)ᵀ and δ^(l+1), one ``Layer`` each — Δ^(l) of eq. B3
        for whatever seed δ^(L) was given (already scaled by 1/m by :func:`value_and_grad`).
      deltas: ``deltas[l]`` is δ^(l+2) of shape (m, n_out of layer l) — the error at the output of
        weight layer l; ``deltas[-1]`` is the seed δ^(L).
      input_delta: (Θ^(1))ᵀ δ^(2) without the bias row, per example: the cotangent of x, (m, n_1).
    """

    grads: Params
    deltas: tuple[Array, ...]
    input_delta: Array


def backward(params: Params, cache: Cache, delta_out: Array, *, activation="sigmoid") -> Backward:
    """Propagates an output error back through the network (eqs. B2, B3).

    Args:
      params: tuple of ``Layer(W, b)``.
      cache: the forward cache for the same params and batch.
      delta_out: δ^(L), shape (m, K): the error at the logits (ŷ − y, possibly scaled).
      activation: the hidden activation name(s) the forward pass used.

    Returns:
      A :class:`Backward` with Δ^(l) (unaveraged), every δ, and the input cotangent.
    """
    acts = resolve(activation, len(params) - 1)
    grads: list[Layer] = [None] * len(params)  # type: ignore[list-item]
    deltas: list[Array] = [None] * len(params)  # type: ignore[list-item]
    delta = delta_out
    for l in reversed(range(len(params))):
        deltas[l] = delta
        d = delta.astype(params[l].W.dtype)  # the products' operand (bf16 weights: bf16 δ)
        grads[l] = Layer(W=weight_gradient(d, cache.a[l]), b=jnp.sum(delta, axis=0))  # B3
        back = dot(d, params[l].W)  # (Θ^(l))ᵀ δ^(l+1), bias row dropped
        if l > 0:
            delta = back * acts[l - 1].f_prime(cache.z[l - 1], cache.a[l])  # B2
    return Backward(tuple(grads), tuple(deltas), back)


TRANSPOSE_MAX_BYTES = 512 * 1024
"""Largest δ, in bytes, that :func:`weight_gradient` transposes explicitly on CPU (see there)."""


def weight_gradient(delta: Array, a: Array) -> Array:
    """Δ^(l) = (δ^(l+1))ᵀ a^(l) = Σ_i δ^(l+1)_i a^(l)_iᵀ, summed over the batch (eq. B3).

    The product contracts the batch, the first dimension of both row-major operands. On CPU,
    XLA runs such a product at 60-75 % of the rate of a row-major product of the same size when
    it is small (docs/benchmarks.md, "The weight gradient's layout"); there, when δ takes at most
    :data:`TRANSPOSE_MAX_BYTES` and the batch is at least as long as both widths, δᵀ is formed in
    memory first (an ``optimization_barrier`` keeps XLA from folding the transpose back into the
    product). Same value, up to the order of the batch sum. Other platforms, and larger products,
    get the product as written.

    Args:
      delta: δ^(l+1), (m, n_out).
      a: a^(l), (m, n_in).

    Returns:
      Δ^(l), (n_out, n_in).
    """
    if delta.dtype == jnp.bfloat16 and a.dtype == jnp.bfloat16:
        return dot_tn(delta, a)
    m, n_out = delta.shape
    n_in = a.shape[-1]
    small = delta.size * delta.dtype.itemsize <= TRANSPOSE_MAX_BYTES
    if not (small and m >= max(n_in, n_out)):
        return dot_tn(delta, a)

    def row_major(delta, a):
        return dot(jax.lax.optimization_barrier(delta.T), a)

    return jax.lax.platform_dependent(delta, a, cpu=row_major, default=dot_tn)


def add_l2_grad(grads: Params, params: Params, l2, m: int) -> Params:
    """D^(l) += (λ/m) W^(l); biases untouched — the lecture's "if j = 0" rule (eq. B4).

    ``grads`` itself for ``l2=None`` (:data:`jaxbp.cost.NO_PENALTY`).
    """
    if l2 is NO_PENALTY:
        return grads
    return tuple(Layer(g.W + (l2 / m) * p.W, g.b) for g, p in zip(grads, params, strict=True))


def value_and_grad(
    params: Params,
    x: Array,
    y: Array,
    *,
    activation="sigmoid",
    output="softmax_ce",
    l2=NO_PENALTY,
    precision: str = "float32",
):
    """J(Θ) and its gradient by the hand-derived δ recursion (eqs. B1–B4).

    Args:
      params: tuple of ``Layer(W, b)`` (see :func:`jaxbp.init_params`).
      x: (m, n) inputs, one example per row.
      y: (m, K) targets (one-hot, multi-hot or real), or integer labels (m,) for softmax_ce.
      activation: hidden activation name, or one name per hidden layer.
      output: ``softmax_ce`` | ``sigmoid_bce`` | ``identity_mse``.
      l2: λ ≥ 0; adds (λ/2m) Σ W² to J and (λ/m) W to the weight gradients. ``None`` (the
        default): no penalty, and no pass over the weights to compute one; ``0.0`` is an
        ordinary λ (same values, one pass more).
      precision: ``"float32"`` (the default: every product in the parameters' dtype) or
        ``"bf16"``: the products in bfloat16 with float32 accumulation, everything else —
        cost, δ^(L), f′, the sums, the λ term — on the parameters themselves
        (:mod:`jaxbp.precision`); within 4·L·ε_bf16 of the float32 gradient, per leaf.

    Returns:
      ``(J, grads)``, ``grads`` with exactly the structure and dtypes of ``params``.

    Raises:
      ValueError / TypeError: naming the bad argument and what was received.

    Example:
      >>> params = jaxbp.init_params(jax.random.key(0), [4, 5, 3])
      >>> J, grads = jaxbp.value_and_grad(params, x, labels, activation="tanh")
    """
    check_precision(precision)
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    return _value_and_grad(params, x, y, l2, activation, output, precision)


@functools.partial(jax.jit, static_argnames=("activation", "output", "precision"))
def _value_and_grad(params, x, y, l2, activation, output, precision="float32"):
    m = x.shape[0]
    mixed = precision == "bf16"
    compute = cast_tree(params, jnp.bfloat16) if mixed else params  # the products' operands
    J, cache, y = forward_cost(
        compute, x, y, activation=activation, output=output, l2=NO_PENALTY if mixed else l2
    )
    if mixed:
        J = add_l2_penalty(J, params, l2, m)  # on the master parameters
    delta_out = get_output(output).delta(cache.a[-1], y) / m  # B1, with B4's 1/m folded in
    grads = backward(compute, cache, delta_out, activation=activation).grads
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)  # bf16: float32 sums
    return J, add_l2_grad(grads, params, l2, m)
