"""Flatten: (m, H, W, C) → (m, H·W·C), and back for δ.

Reshaping moves no value, so its Jacobian is a permutation of the identity and the backward pass
reshapes δ back to the input's shape (docs/derivation.md, eq. L4).
"""

from __future__ import annotations

import math

from jaxbp.layers.base import ANY_AXES, Layer, check_array, check_dy, check_shape


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
