"""Flatten: (m, H, W, C) → (m, H·W·C); Reshape: (m, n) → (m, *shape); each back for δ.

Reshaping moves no value, so its Jacobian is a permutation of the identity and the backward pass
reshapes δ back to the input's shape (docs/derivation.md, eq. L4). :func:`Reshape` is how a
network takes the rows a data set gives and makes them images (``Reshape((8, 8, 1))`` for the
digits' 64 features), so that image networks need no special case in the runner.
"""

from __future__ import annotations

import math

import numpy as np

from jaxbp.layers.base import (
    ANY_AXES,
    Layer,
    check_array,
    check_dy,
    check_shape,
    register,
    shape_text,
)


@register("Flatten")
def Flatten() -> Layer:
    """All axes but the batch axis into one, row-major (as ``jnp.reshape``) (eq. L4)."""

    def init(key, in_shape):
        del key
        shape = check_shape(in_shape, None, "Flatten")
        return (), (math.prod(shape),)

    def forward(params, x, *, key=None, train=False):
        del params, key, train
        check_array(x, "x", ("m", ANY_AXES), "Flatten")
        return x.reshape(x.shape[0], -1), x.shape

    def backward(params, cache, dy):
        del params
        check_dy(dy, (cache[0], math.prod(cache[1:])), "Flatten")
        return (), dy.reshape(cache)

    return Layer(init, forward, backward, name="Flatten")


def _target(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        target = tuple(shape)
    except TypeError:
        raise ValueError(
            f"Reshape: shape must be a tuple of positive ints, got {shape!r}"
        ) from None
    if not target or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in target
    ):
        raise ValueError(f"Reshape: shape must be a tuple of positive ints, got {shape!r}")
    return tuple(int(d) for d in target)


@register("Reshape")
def Reshape(shape) -> Layer:
    """Each example's values, row-major, into ``shape``: x (m, *in_shape) → y (m, *shape) (eq. L4).

    The number of values per example is kept: ``prod(in_shape) == prod(shape)`` (checked by
    ``init``, and by ``forward`` on x). Backward reshapes dy (m, *shape) back to x's shape. No
    parameters (``()``). ``Reshape((8, 8, 1))`` makes digits' 64-feature rows 8×8 images.

    Args:
      shape: the shape of one example's output, a tuple of positive ints (an int n is ``(n,)``).

    Raises:
      ValueError: ``shape`` not a non-empty tuple of positive ints, naming it; (from ``init``) an
        ``in_shape`` of another size; (from ``forward``) an x with no batch axis or another number
        of values per example; (from ``backward``) a dy not of shape (m, *shape) — each naming
        the layer, the argument and both shapes.
      TypeError: (from ``forward`` / ``backward``) x or dy not an array.
    """
    target = _target(shape)
    size = math.prod(target)
    name = f"Reshape({shape_text(target)})"

    def init(key, in_shape):
        del key
        got = check_shape(in_shape, None, name)
        if math.prod(got) != size:
            raise ValueError(
                f"{name}: in_shape {shape_text(got)} has {math.prod(got)} values per example, "
                f"shape {shape_text(target)} needs {size}"
            )
        return (), target

    def forward(params, x, *, key=None, train=False):
        del params, key, train
        got = check_array(x, "x", ("m", ANY_AXES), name)
        if math.prod(got[1:]) != size:
            raise ValueError(
                f"{name}: x must have {size} values per example (shape (m, …) with "
                f"prod(…) = {size}, as shape {shape_text(target)}), got shape {shape_text(got)}"
            )
        return x.reshape(got[0], *target), got

    def backward(params, cache, dy):
        del params
        check_dy(dy, (cache[0], *target), name)
        return (), dy.reshape(cache)

    return Layer(init, forward, backward, name=name)
