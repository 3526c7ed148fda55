"""A scatter-free backward for :func:`jaxbp.layers.pooling.MaxPool2D`, proposed for
src/jaxbp/layers/pooling.py and measured with ``benchmarks/cnn_step.py --prototype
benchmarks/pool_prototype.py`` (docs/benchmarks.md, "cnn").

The layer's backward routes δ window offset by window offset, ``dx.at[:, i::s, j::s].add(…)`` —
a strided-slice update that JAX lowers to an XLA ``scatter`` (two per offset in StableHLO: 16
for LeNet's two 2×2 pools). Here the same update is an addition of the contribution *padded*
into place: ``lax.pad`` with ``interior = s − 1`` zeros between entries and ``i`` (``j``) zeros
before puts entry (p, q) at (p·s + i, q·s + j), exactly the strided slice's positions, for any
window, stride and padding (overlapping windows included). XLA fuses the pads and adds into
elementwise loops. Forward, the tie rule (first maximum in row-major offset order) and every
value are the layer's own; only the backward's write pattern changes.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxbp.layers import pooling
from jaxbp.layers.base import Layer, pair
from jaxbp.layers.conv import Conv2D  # noqa: F401  the layer's own, unchanged (for --prototype)


def _placed(v, padded_shape, i: int, j: int, s: tuple[int, int]):
    """``v`` (m, Ho, Wo, C) at rows i, i+s, … and columns j, j+s, … of a zero array of
    ``padded_shape`` — ``zeros.at[:, i::s, j::s].set(v)`` without a scatter."""
    sh, sw = s
    Ho, Wo = v.shape[1:3]
    hi_h = padded_shape[1] - i - (Ho - 1) * sh - 1
    hi_w = padded_shape[2] - j - (Wo - 1) * sw - 1
    zero = jnp.zeros((), v.dtype)
    return lax.pad(v, zero, ((0, 0, 0), (i, hi_h, sh - 1), (j, hi_w, sw - 1), (0, 0, 0)))


def MaxPool2D(window, strides=None, padding: str = "VALID") -> Layer:
    """:func:`jaxbp.layers.pooling.MaxPool2D` with the padded-placement backward (docstring)."""
    base = pooling.MaxPool2D(window, strides, padding)
    _, (kh, kw), _, _, offsets, _ = pooling._pool("Max", window, strides, padding)
    sh, sw = pair((kh, kw) if strides is None else strides, "strides", "MaxPool2D")

    def backward(params, cache, dy):
        del params
        x, y = cache
        padded, pads, index, crop = offsets(x.shape, y.shape)
        a = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
        dx = None
        taken = jnp.zeros(y.shape, bool)
        for (i, j), idx in index.items():
            winner = (a[idx] == y) & ~taken  # the first maximum in row-major order
            taken = taken | winner
            part = _placed(jnp.where(winner, dy, jnp.zeros((), dy.dtype)), padded, i, j, (sh, sw))
            dx = part if dx is None else dx + part
        return (), dx[crop]

    return base._replace(backward=backward)
