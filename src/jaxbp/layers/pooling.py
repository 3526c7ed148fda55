"""Max and average pooling (NHWC) with hand-derived backwards: δ routed to the argmax, or spread.

Notation of docs/derivation.md § L (as :mod:`jaxbp.layers.conv`): (i, j) an output position,
(p, q) an offset in the kh × kw window, s the stride, a the input padded as ``jax.lax`` pads
it, δ = ∂E/∂z the error from above. Forward, channel by channel::

    max:  z[n, i, j, c] = max_{p, q} a[n, s·i + p, s·j + q, c]             (pads −∞, never chosen)
    avg:  z[n, i, j, c] = (1 / (kh·kw)) Σ_{p, q} a[n, s·i + p, s·j + q, c]   (pads 0)

Average pooling divides by the full window area kh·kw, padding included (``count_include_pad``
in PyTorch's terms; TensorFlow's SAME average pool divides by the count of real entries
instead): the layer is then one fixed linear filter, the same everywhere, and near a SAME border
its output is pulled towards zero.

Backward (docs/derivation.md, eqs. L10–L11). Windows may overlap (stride < window), so an input
collects from every window that reads it:

- L10 max: ∂E/∂a[n, u, v, c] = Σ_{i, j : (u, v) = argmax of window (i, j)} δ[n, i, j, c] — the
      derivative of a max is 1 at the winner and 0 elsewhere, so δ is routed to one element per
      window. Ties (equal values in one window) go to the FIRST maximum in row-major order over
      the window offsets (p, q), which is what ``jax.vjp`` of ``lax.reduce_window`` max gives
      (XLA's select-and-scatter with ``≥``); the tests check the rule against it on tied
      inputs. At a tie the max is not differentiable; this is a convention, as relu′(0) = 0.
- L11 avg: ∂E/∂a[n, u, v, c] = Σ_{i, j : window (i, j) reads (u, v)} δ[n, i, j, c] / (kh·kw).

Both are written as a loop over the kh·kw window offsets (over the kernel, not the positions):
offset (p, q) reads the strided slice a[p::s, q::s] of the padded input, one element per window,
and adds its share of δ back at the same positions; the padding is cropped off at the end, and
rows no window reaches (the stride's remainder) keep a zero gradient. The share is put in place
by ``lax.pad`` — p zeros before, s − 1 between entries (:func:`_placed`) — rather than by an
update of the strided slice, ``dx.at[:, p::s, q::s].add(…)``, which XLA runs as a scatter: the
pads and adds fuse into element-wise loops, the same values bit for bit, and the LeNet step of
``benchmarks/cnn_step.py`` is 1.17× faster for it (docs/benchmarks.md, "cnn").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbp.layers.base import Layer, check_array, check_dy, check_shape, pair, register, shape_text
from jaxbp.layers.conv import check_padding, window_geometry


class _Pool(NamedTuple):
    """What max and average pooling share: the window's geometry and the three helpers."""

    size: tuple[int, int]  # (kh, kw)
    strides: tuple[int, int]  # (sh, sw)
    init: Callable  # (key, in_shape) -> ((), out_shape)
    reduce: Callable  # (x, init_value, op) -> z, lax.reduce_window over the windows
    out_shape: Callable  # x's shape -> the output's (m, Ho, Wo, C)
    offsets: Callable  # (x_shape, z_shape) -> (padded shape, pads, {(p, q): index}, crop)
    name: str  # the layer's description


def _pool(kind: str, window, strides, padding) -> _Pool:
    name = f"{kind}Pool2D"
    kh, kw = pair(window, "window", name)
    sh, sw = pair((kh, kw) if strides is None else strides, "strides", name)
    padding = check_padding(padding, name)
    geometry_text = f"{(kh, kw)}" + ("" if (sh, sw) == (kh, kw) else f", strides={(sh, sw)}")
    name = f"{name}({geometry_text}, {padding})"

    def geometry(spatial, given):
        return window_geometry(spatial, (kh, kw), (sh, sw), padding, name, "window", given)

    def init(key, in_shape):
        del key
        H, W, C = check_shape(in_shape, 3, name)
        _, (Ho, Wo) = geometry((H, W), f"in_shape {(H, W, C)}")
        return (), (Ho, Wo, C)

    def reduce(x, init_value, op):
        # init_value a NumPy constant: concrete under jit, so lax recognises the max / sum
        # monoid and its (differentiable) reduce_window_max / reduce_window_sum.
        pads, _ = geometry(x.shape[1:3], f"x of shape {shape_text(x.shape)}")
        return lax.reduce_window(
            x, init_value, op, (1, kh, kw, 1), (1, sh, sw, 1), ((0, 0), *pads, (0, 0))
        )

    def out_shape(x_shape):
        _, (Ho, Wo) = geometry(x_shape[1:3], f"the cached x of shape {shape_text(x_shape)}")
        return (x_shape[0], Ho, Wo, x_shape[3])

    def offsets(x_shape, y_shape):
        """Padded input shape, pads, and for each window offset (p, q) its strided index."""
        pads, _ = geometry(x_shape[1:3], f"the cached x of shape {shape_text(x_shape)}")
        (lo_h, hi_h), (lo_w, hi_w) = pads
        padded = (x_shape[0], x_shape[1] + lo_h + hi_h, x_shape[2] + lo_w + hi_w, x_shape[3])
        Ho, Wo = y_shape[1:3]
        index = {
            (p, q): (
                slice(None),
                slice(p, p + (Ho - 1) * sh + 1, sh),
                slice(q, q + (Wo - 1) * sw + 1, sw),
                slice(None),
            )
            for p in range(kh)
            for q in range(kw)  # row-major: the order of the tie rule
        }
        crop = (
            slice(None),
            slice(lo_h, lo_h + x_shape[1]),
            slice(lo_w, lo_w + x_shape[2]),
            slice(None),
        )
        return padded, pads, index, crop

    return _Pool((kh, kw), (sh, sw), init, reduce, out_shape, offsets, name)


def _placed(v, padded_shape, p: int, q: int, strides: tuple[int, int]):
    """``v`` (m, Ho, Wo, C) at rows p, p + s, … and columns q, q + s, … of a zero array of
    ``padded_shape``: ``zeros.at[:, p::s, q::s].set(v)`` as one ``lax.pad`` (no scatter)."""
    sh, sw = strides
    Ho, Wo = v.shape[1:3]
    hi_h = padded_shape[1] - p - (Ho - 1) * sh - 1
    hi_w = padded_shape[2] - q - (Wo - 1) * sw - 1
    zero = jnp.zeros((), v.dtype)
    return lax.pad(v, zero, ((0, 0, 0), (p, hi_h, sh - 1), (q, hi_w, sw - 1), (0, 0, 0)))


def _sum_placed(parts, padded_shape, strides, dtype):
    """Σ over the window offsets of each share placed at its positions (:func:`_placed`), in
    the offsets' order; zeros when there is none."""
    dx = None
    for (p, q), part in parts:
        placed = _placed(part, padded_shape, p, q, strides)
        dx = placed if dx is None else dx + placed
    return jnp.zeros(padded_shape, dtype) if dx is None else dx


@register("MaxPool2D")
def MaxPool2D(window, strides=None, padding: str = "VALID") -> Layer:
    """Max pooling over ``window`` (an int or a pair), δ routed to each window's argmax (eq. L10).

    Args:
      window: an int or a pair (kh, kw).
      strides: an int or a pair; default ``window`` (non-overlapping windows).
      padding: ``"VALID"`` or ``"SAME"`` (padding with −∞, as ``jax.lax``).

    Raises:
      ValueError: naming the argument — a non-positive size, a bad padding string; from
        ``init``, an ``in_shape`` that is not (H, W, C) or smaller than a VALID window; from
        ``forward``, such an ``x`` (m, H, W, C); from ``backward``, a ``dy`` of another shape
        than forward's output.
    """
    pool = _pool("Max", window, strides, padding)

    def forward(params, x, *, key=None, train=False):
        del params, key, train
        check_array(x, "x", ("m", "H", "W", "C"), pool.name)
        y = pool.reduce(x, np.array(-np.inf, x.dtype), lax.max)
        return y, (x, y)

    def backward(params, cache, dy):
        del params
        x, y = cache
        check_dy(dy, y.shape, pool.name)
        padded, pads, index, crop = pool.offsets(x.shape, y.shape)
        a = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
        taken = jnp.zeros(y.shape, bool)  # has this window's δ been routed yet?
        parts = []
        for offset, idx in index.items():
            winner = (a[idx] == y) & ~taken  # the first maximum in row-major order
            taken = taken | winner
            parts.append((offset, jnp.where(winner, dy, jnp.zeros((), dy.dtype))))
        return (), _sum_placed(parts, padded, pool.strides, dy.dtype)[crop]

    return Layer(pool.init, forward, backward, name=pool.name)


@register("AvgPool2D")
def AvgPool2D(window, strides=None, padding: str = "VALID") -> Layer:
    """Average pooling over ``window``, dividing by kh·kw, padding included (eq. L11).

    Args:
      window: an int or a pair (kh, kw).
      strides: an int or a pair; default ``window`` (non-overlapping windows).
      padding: ``"VALID"`` or ``"SAME"`` (zero padding counted in the window's area).

    Raises:
      ValueError: naming the argument — a non-positive size, a bad padding string; from
        ``init``, an ``in_shape`` that is not (H, W, C) or smaller than a VALID window; from
        ``forward``, such an ``x`` (m, H, W, C); from ``backward``, a ``dy`` of another shape
        than forward's output.
    """
    pool = _pool("Avg", window, strides, padding)
    kh, kw = pool.size

    def forward(params, x, *, key=None, train=False):
        del params, key, train
        check_array(x, "x", ("m", "H", "W", "C"), pool.name)
        y = pool.reduce(x, np.array(0, x.dtype), lax.add) / (kh * kw)
        return y, x.shape

    def backward(params, cache, dy):
        del params
        x_shape = cache
        check_dy(dy, pool.out_shape(x_shape), pool.name)
        padded, _, index, crop = pool.offsets(x_shape, dy.shape)
        share = dy / (kh * kw)
        parts = [(offset, share) for offset in index]
        return (), _sum_placed(parts, padded, pool.strides, dy.dtype)[crop]

    return Layer(pool.init, forward, backward, name=pool.name)
