"""Random translations of images, as a layer: training-time data augmentation.

In training mode each example of the batch (m, H, W, C) is moved by its own offset (u, v), drawn
uniformly from {−s, …, s}², the pixels moved in from outside the image zero (docs/derivation.md,
eq. L20)::

    y[h, w] = x[h − u, w − v]    where 0 ≤ h − u < H and 0 ≤ w − v < W,   else 0

i.e. y = T_(u,v) x, the content moved down by u and right by v. In evaluation mode (or s = 0)
the layer is the identity. For a fixed draw y is linear in x; T's transpose is the translation
by the opposite offset, which is the backward pass::

    ∂E/∂x[h, w] = Σ_{h', w'} δ[h', w'] · [h' − u = h][w' − v = w] = δ[h + u, w + v]
    ∂E/∂x = T_(−u,−v) δ        (zero where h + u or w + v falls outside the image)

The pixels pushed out of the image get no error; the zeros moved in pass none back. Both
directions are one zero padding by s and a slice of H × W per example, at (s − u, s − v) forward
and (s + u, s + v) backward. The cache is the offsets (``None`` for the identity) and x's shape,
which ``dy`` must have.

Placed first in a network it augments the training data: a fresh translation of every example
every step, drawn from the step's key, so the hand and autodiff gradients see the same images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbp.layers.base import Layer, cached_shape, check_array, check_dy, check_shape, register


def _translate(x, corner, s: int):
    """Each x[i] (H, W, C) padded by s zeros on both sides of H and W, then cut at corner[i]."""
    m, H, W, C = x.shape
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))

    def one(image, at):
        return jax.lax.dynamic_slice(image, (at[0], at[1], 0), (H, W, C))

    return jax.vmap(one)(padded, corner)


@register("RandomShift")
def RandomShift(max_shift: int) -> Layer:
    """Translate each training image by a random (u, v) ∈ {−s, …, s}², zero fill (eq. L20).

    ``forward(params, x, key=k, train=True)`` draws the offsets from ``k`` (a key is
    required); ``train=False``, or ``max_shift == 0``, is the identity. Input (m, H, W, C) with
    s < H and s < W; no parameters (``()``).

    Args:
      max_shift: s, the largest translation in pixels along each axis, an int ≥ 0.

    Raises:
      ValueError: ``max_shift`` not an int ≥ 0; (from ``init``) an input that is not (H, W, C)
        or with s ≥ H or s ≥ W; (from ``forward``) such an ``x`` (m, H, W, C), or
        ``train=True`` without a ``key``; (from ``backward``) a ``dy`` not of x's shape.
    """
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"RandomShift: max_shift must be an int ≥ 0, got {max_shift!r}")
    s = max_shift
    name = f"RandomShift(max_shift={s})"

    def check_size(shape, what: str):
        if s >= min(shape[-3:-1]):
            raise ValueError(
                f"{name}: max_shift {s} must be smaller than the image's height and width, "
                f"got {what} {shape}"
            )

    def init(key, in_shape):
        del key
        shape = check_shape(in_shape, 3, name)
        check_size(shape, "in_shape")
        return (), shape

    def forward(params, x, *, key=None, train=False):
        del params
        check_size(check_array(x, "x", ("m", "H", "W", "C"), name), "x of shape")
        if not train or s == 0:
            return x, (None, x.shape)
        if key is None:
            raise ValueError(
                f"{name}: key must be a PRNG key when train=True (the offsets are drawn from "
                "it), got None"
            )
        offsets = jax.random.randint(key, (x.shape[0], 2), -s, s + 1)  # (u, v) per example
        return _translate(x, s - offsets, s), (offsets, x.shape)  # y[h, w] = x[h − u, w − v]

    def backward(params, cache, dy):
        del params
        offsets, x_shape = cache
        check_dy(dy, cached_shape(x_shape), name)
        if offsets is None:  # evaluation mode or s = 0: y = x
            return (), dy
        return (), _translate(dy, s + offsets, s)  # ∂E/∂x[h, w] = δ[h + u, w + v]

    return Layer(init, forward, backward, name=name)
