"""Compositions: :func:`Sequential` (the chained δ recursion) and :func:`Residual` (y = x + F(x)).

``Sequential(l₁, …, l_L)`` is again a :class:`~jaxbp.layers.base.Layer`. Its forward runs the
layers in order, caching each one's cache; its backward is the lecture's backpropagation
generalised from dense layers to any layer: start from δ at the output and hand each layer's
dx down as the next one's dy, collecting each layer's parameter gradient on the way
(docs/derivation.md, eq. L5)::

    δ_L = dy;   for l = L … 1:   (grads_l, δ_{l−1}) = l.backward(params_l, cache_l, δ_l)

Residual adds the identity path: y = x + F(x) gives ∂E/∂x = δ + F.backward(δ) (eq. L6) — the
two paths' errors add where they meet, as at every fan-out node of the lecture's graph.
"""

from __future__ import annotations

import jax

from jaxbp.layers.base import Layer, check_shape, register, shape_text


def _split(key, n: int):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


@register("Sequential")
def Sequential(*layers: Layer) -> Layer:
    """The composition ``layers[-1] ∘ … ∘ layers[0]`` as one layer (eq. L5).

    Params and caches are tuples with one entry per layer; ``forward``'s ``key`` (when given) is
    split into one key per layer, so that two dropout layers never share a mask.

    Raises:
      TypeError: an argument that is not a :class:`Layer`; (from ``forward`` / ``backward``)
        ``params`` or the cache not a tuple or list of one entry per layer.
      ValueError: no layers; (from ``forward`` / ``backward``) ``params`` or the cache with
        another number of entries. Each layer checks its own ``x`` and ``dy``.
    """
    if not layers:
        raise ValueError("Sequential: needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Sequential: argument {i} must be a jaxbp.layers.Layer, got {type(layer).__name__}"
            )

    def init(key, in_shape):
        shape = check_shape(in_shape, None, "Sequential")
        params = []
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            p, shape = layer.init(k, shape)
            params.append(p)
        return tuple(params), shape

    name = "Sequential(" + ", ".join(layer.name for layer in layers) + ")"

    def check_entries(value, arg: str):
        """``params`` and caches hold one entry per layer (a tuple, or a list from a file)."""
        if not isinstance(value, (tuple, list)):
            raise TypeError(
                f"{name}: {arg} must be a tuple of {len(layers)} entries (one per layer), got "
                f"{type(value).__name__}"
            )
        if len(value) != len(layers):
            raise ValueError(
                f"{name}: {arg} must have {len(layers)} entries (one per layer), got {len(value)}"
            )

    def forward(params, x, *, key=None, train=False):
        check_entries(params, "params")
        caches = []
        for layer, p, k in zip(layers, params, _split(key, len(layers)), strict=True):
            x, cache = layer.forward(p, x, key=k, train=train)
            caches.append(cache)
        return x, tuple(caches)

    def backward(params, cache, dy):
        check_entries(params, "params")
        check_entries(cache, "cache")
        grads = [None] * len(layers)
        delta = dy
        for i in reversed(range(len(layers))):  # δ_{l−1} from δ_l, top to bottom (eq. L5)
            grads[i], delta = layers[i].backward(params[i], cache[i], delta)
        return tuple(grads), delta

    def update_state(params, cache):
        return tuple(
            layer.update_state(p, c) for layer, p, c in zip(layers, params, cache, strict=True)
        )

    return Layer(init, forward, backward, update_state, name, tuple(layers), Sequential)


@register("Residual")
def Residual(layer: Layer) -> Layer:
    """y = x + F(x) for an ``F`` whose output shape is its input shape (eq. L6).

    Raises:
      TypeError: ``layer`` is not a :class:`Layer`.
      ValueError: (from ``init``) ``F`` changes the shape; (from ``forward``) F(x) not of x's
        shape. F checks its own ``x`` and ``dy`` (which has F's output shape, x's).
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"Residual: layer must be a jaxbp.layers.Layer, got {type(layer).__name__}")
    name = f"Residual({layer.name})"

    def init(key, in_shape):
        shape = check_shape(in_shape, None, name)
        params, out_shape = layer.init(key, shape)
        if tuple(out_shape) != shape:
            raise ValueError(
                f"{name}: {layer.name} maps shape {shape} to {tuple(out_shape)}; "
                "y = x + F(x) needs F to keep the shape"
            )
        return params, shape

    def forward(params, x, *, key=None, train=False):
        fx, cache = layer.forward(params, x, key=key, train=train)
        if fx.shape != x.shape:
            raise ValueError(
                f"{name}: {layer.name} maps x of shape {shape_text(x.shape)} to "
                f"{shape_text(fx.shape)}; y = x + F(x) needs F to keep the shape"
            )
        return x + fx, cache

    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return grads, dy + dx  # the identity path's δ plus F's (eq. L6)

    return Layer(init, forward, backward, layer.update_state, name, (layer,), Residual)
