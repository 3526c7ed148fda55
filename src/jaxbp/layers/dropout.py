"""Inverted dropout: y = a ⊙ mask / (1 − rate), with ``rate`` the probability of DROPPING a unit.

(stax's ``Dropout(rate)`` takes the probability of KEEPING a unit under the name ``rate``; here
``rate`` means what it says in Srivastava et al. 2014, Keras and PyTorch: the fraction dropped.)

Forward in training mode, one independent Bernoulli draw per entry (docs/derivation.md,
eq. L15)::

    mask ~ Bernoulli(1 − rate)       (True: kept)
    y = a ⊙ mask / (1 − rate)        (the kept units scaled up, so that E[y] = a)

Scaling at training time ("inverted" dropout) makes evaluation the identity: y = a, no rescaling
of the weights afterwards. The backward multiplies by the same mask, which the forward pass puts
in its cache::

    ∂E/∂a = δ ⊙ mask / (1 − rate)

y is linear in a for a fixed mask, so this is the exact VJP of the forward pass with that mask;
:func:`jaxbp.layers.check_layer` passes the same ``key`` to every call so that the forward pass
it differentiates is that fixed function. The cache is the mask (``None`` where the layer is
the identity) and x's shape, which ``dy`` must have.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbp.layers.base import (
    ANY_AXES,
    Layer,
    cached_shape,
    check_array,
    check_dy,
    check_shape,
    register,
)


@register("Dropout")
def Dropout(rate: float) -> Layer:
    """Inverted dropout dropping each entry with probability ``rate`` in training (eq. L15).

    ``forward(params, x, key=k, train=True)`` draws the mask from ``k`` (a key is required);
    ``train=False``, or ``rate == 0``, is the identity. No parameters (``()``).

    Args:
      rate: the probability of dropping an entry, in [0, 1).

    Raises:
      ValueError: ``rate`` outside [0, 1); (from ``forward``) ``train=True`` without a ``key``;
        (from ``backward``) a ``dy`` not of x's shape.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
    if not 0 <= rate < 1:
        raise ValueError(
            f"Dropout: rate (the probability of dropping) must be in [0, 1), got {rate!r}"
        )
    rate = float(rate)
    keep = 1.0 - rate
    name = f"Dropout(rate={rate})"

    def init(key, in_shape):
        del key
        return (), check_shape(in_shape, None, name)

    def forward(params, x, *, key=None, train=False):
        del params
        check_array(x, "x", ("m", ANY_AXES), name)
        if not train:
            return x, (None, x.shape)
        if key is None:
            raise ValueError(
                f"{name}: key must be a PRNG key when train=True (the mask is drawn from it), "
                "got None"
            )
        if rate == 0:
            return x, (None, x.shape)
        mask = jax.random.bernoulli(key, keep, x.shape)  # True: kept
        return jnp.where(mask, x / keep, 0), (mask, x.shape)

    def backward(params, cache, dy):
        del params
        mask, x_shape = cache
        check_dy(dy, cached_shape(x_shape), name)
        if mask is None:  # evaluation mode or rate 0: y = a
            return (), dy
        return (), jnp.where(mask, dy / keep, 0)  # δ ⊙ mask / (1 − rate)

    return Layer(init, forward, backward, name=name)
