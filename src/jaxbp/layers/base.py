"""The layer contract: a :class:`Layer` is a ``NamedTuple`` of pure functions.

Every layer of :mod:`jaxbp.layers` — and every composition of layers — is the same triple (plus
an optional fourth function for layers that carry running statistics)::

    params, out_shape = layer.init(key, in_shape)            # shapes of ONE example, no batch axis
    y, cache = layer.forward(params, x, key=None, train=False)    # x: (m, *in_shape)
    grads, dx = layer.backward(params, cache, dy)             # the hand-derived VJP
    params = layer.update_state(params, cache)                # running statistics (BatchNorm)

``backward`` is the layer's vector–Jacobian product written out by hand: given
dy = ∂E/∂y (the error δ arriving from above, one row per example) it returns ∂E/∂params (a pytree
like ``params``) and dx = ∂E/∂x (the δ handed to the layer below). No ``jax.grad``, ``jax.vjp``
or ``jax.linear_transpose`` is called inside any backward of this package; each one's docstring
holds its derivation (docs/derivation.md, § Layers; docs/conv_backward.md for the convolution).

Conventions:

- Data layout NHWC (batch, height, width, channels); convolution kernels HWIO; a dense layer's
  weight is the lecture's Θ, shape (n_out, n_in), with z = Θ a + b written row-wise as
  z = a Θᵀ + b.
- Parameters are dicts of arrays (``()`` for a layer without any); weights are named ``W…``,
  biases ``b…`` — the L2 penalty of :mod:`jaxbp.layers.network` falls on the ``W…`` leaves only
  (the lecture's "off the bias").
- ``backward`` returns sums over the batch (a VJP), not means: the 1/m of D = (1/m)Δ enters
  through the output error δ^(L) = (ŷ − y)/m that :mod:`jaxbp.layers.network` seeds.
- Running statistics (BatchNorm's running mean and variance) live in ``params["state"]``; they
  are not trained: ``update_state`` writes the new values the forward pass recorded in its cache,
  and ``backward`` returns their true derivative (zero in training mode, where the output does
  not depend on them).
- Keys are explicit and keyword-only: ``forward(..., key=k, train=True)`` for dropout;
  :func:`jaxbp.layers.Sequential` splits one key among its layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Array = jax.Array
Shape = tuple[int, ...]
Params = Any
Cache = Any


def keep_params(params: Params, cache: Cache) -> Params:
    """``update_state`` of a layer without running statistics: ``params`` unchanged."""
    del cache
    return params


class Layer(NamedTuple):
    """A layer: init, forward and hand-derived backward as pure functions.

    (Not to be confused with :class:`jaxbp.Layer`, the ``(W, b)`` pair of the MLP's parameters.)

    Attributes:
      init: ``(key, in_shape) -> (params, out_shape)``; shapes exclude the batch axis.
      forward: ``(params, x, *, key=None, train=False) -> (y, cache)`` on a batch ``x`` of shape
        ``(m, *in_shape)``; ``cache`` holds what ``backward`` needs.
      backward: ``(params, cache, dy) -> (grads, dx)``, the hand-derived VJP: ``grads`` like
        ``params`` (∂E/∂params summed over the batch), ``dx`` = ∂E/∂x like ``x`` (``None`` for
        integer inputs, e.g. Embedding's indices).
      update_state: ``(params, cache) -> params`` with the running statistics the training
        forward pass recorded; the identity for stateless layers.
      name: a readable description, e.g. ``Conv2D(6, (5, 5), SAME)``.
    """

    init: Callable[[Array, Shape], tuple[Params, Shape]]
    forward: Callable[..., tuple[Array, Cache]]
    backward: Callable[[Params, Cache, Array], tuple[Params, Array | None]]
    update_state: Callable[[Params, Cache], Params] = keep_params
    name: str = "Layer"


def check_shape(in_shape, rank: int | None, layer: str) -> Shape:
    """``in_shape`` as a tuple of positive ints of length ``rank`` (any rank for None).

    Raises:
      ValueError: naming the layer and the shape received.
    """
    try:
        shape = tuple(int(d) for d in in_shape)
    except TypeError:
        raise ValueError(f"{layer}: in_shape must be a tuple of ints, got {in_shape!r}") from None
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"{layer}: in_shape must have {rank} axes (one example, no batch axis), got {shape}"
        )
    if any(d < 1 for d in shape):
        raise ValueError(f"{layer}: in_shape axes must be positive, got {shape}")
    return shape


def positive_int(value, name: str, layer: str) -> int:
    """``value`` as an int ≥ 1, else ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return value


def pair(value, name: str, layer: str) -> tuple[int, int]:
    """An int or a pair of ints ≥ 1 as a pair (kernel sizes, windows, strides)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{layer}: {name} must be an int or a pair of ints, got {value!r}"
        ) from None
    return positive_int(a, name, layer), positive_int(b, name, layer)
