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

    PYTHONPATH=src python benchmarks/pool_prototype.py   # the bit-for-bit check against the layer
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxbp.layers import pooling
from jaxbp.layers.base import Layer, pair
from jaxbp.layers.conv import (
    Conv2D,  # noqa: F401  the layer's own, unchanged (for --prototype)
    check_padding,
    window_geometry,
)


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
    """:func:`jaxbp.layers.pooling.MaxPool2D` with the padded-placement backward (docstring):
    the layer's own ``init`` and ``forward``, its geometry recomputed here."""
    base = pooling.MaxPool2D(window, strides, padding)
    kh, kw = pair(window, "window", "MaxPool2D")
    sh, sw = pair((kh, kw) if strides is None else strides, "strides", "MaxPool2D")
    padding = check_padding(padding, "MaxPool2D")

    def backward(params, cache, dy):
        del params
        x, y = cache
        pads, _ = window_geometry(x.shape[1:3], (kh, kw), (sh, sw), padding, "MaxPool2D", "window")
        a = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
        Ho, Wo = y.shape[1:3]
        dx = None
        taken = jnp.zeros(y.shape, bool)
        for i in range(kh):
            for j in range(kw):  # row-major: the first maximum wins, as in the layer
                window_ij = a[:, i : i + (Ho - 1) * sh + 1 : sh, j : j + (Wo - 1) * sw + 1 : sw]
                winner = (window_ij == y) & ~taken
                taken = taken | winner
                part = jnp.where(winner, dy, jnp.zeros((), dy.dtype))
                part = _placed(part, a.shape, i, j, (sh, sw))
                dx = part if dx is None else dx + part
        (lo_h, _), (lo_w, _) = pads
        return (), dx[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]]

    return base._replace(backward=backward)


def check() -> int:
    """dx of this backward against the layer's own, bit for bit, in float64, on 40 geometries
    with and without ties; returns the number of cases."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    cases = 0
    for H, W in [(8, 8), (7, 9), (5, 5), (28, 28)]:
        for window, strides in [(2, None), (3, 2), (2, 1), ((3, 2), (1, 2)), (3, None)]:
            for padding in ("VALID", "SAME"):
                ref, new = (
                    pooling.MaxPool2D(window, strides, padding),
                    MaxPool2D(window, strides, padding),
                )
                try:
                    ref.init(None, (H, W, 3))
                except ValueError:  # a VALID window larger than the input
                    continue
                for tied in (False, True):
                    x = rng.normal(size=(2, H, W, 3))
                    x = jnp.asarray(np.round(x) if tied else x)  # rounding: many ties
                    y, cache = ref.forward((), x)
                    dy = jnp.asarray(rng.normal(size=y.shape))
                    _, want = ref.backward((), cache, dy)
                    _, got = jax.jit(lambda c, d, new=new: new.backward((), c, d))(cache, dy)
                    assert np.array_equal(np.asarray(got), np.asarray(want)), (
                        H, W, window, strides, padding, tied,
                    )  # fmt: skip
                    cases += 1
    return cases


if __name__ == "__main__":
    print(f"bit-identical to jaxbp.layers.pooling.MaxPool2D's backward on {check()} cases")
