"""Watched kinks (relu, leaky_relu): which steps move a pre-activation across z = 0 (eq. V9).

A central difference whose step moves some pre-activation z of a kinked unit across zero measures
the average of the two one-sided slopes, not the derivative (``torch.autograd.gradcheck``'s false
failure at the ReLU kink). :mod:`jaxbp.verify.fd` finds such directions by itself, from the
one-sided differences of its step ladder, and reports them as non-smooth. With a
``kinks(params, *args)`` function (the pre-activations of the kinked units) the verifier does
better: it computes, with one ``jax.jvp`` per direction, the first-order distance |z| / |∂z/∂θ · v|
to the nearest watched kink and keeps every step of the ladder within half of it, so the
direction is differenced cleanly and judged like any other; only a watched z exactly at 0 admits
no such step, and that direction is reported as non-smooth with its one-sided slopes.

The helpers below state the crossing condition for a step whose linearised change is dz::

    |z| < KINK_MARGIN · |dz|        (within the step, with a factor 2 margin)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINK_MARGIN = 2.0
"""A pre-activation is "within a step" of the kink when |z| < KINK_MARGIN · |dz|."""


def within_step(z, dz) -> jax.Array:
    """True when any |z| < KINK_MARGIN · |dz| over the leaves of ``z`` and ``dz`` (eq. V9)."""
    flags = [
        jnp.any(jnp.abs(zl) < KINK_MARGIN * jnp.abs(dzl))
        for zl, dzl in zip(jax.tree.leaves(z), jax.tree.leaves(dz), strict=True)
    ]
    return jnp.any(jnp.stack(flags)) if flags else jnp.asarray(False)


PLUS, MINUS = 1, 2
"""Bits of :func:`crossing_sides`: the + step crosses a kink, the − step does."""


def crossing_sides(z, dz) -> jax.Array:
    """Which steps cross a kink: 0, :data:`PLUS`, :data:`MINUS` or both (int32), over all leaves.

    A watched z within the step (V9) is crossed by the + step when it moves toward zero
    (z · dz < 0), by the − step when it moves away (z · dz > 0), by both when z · dz = 0.
    """
    plus = jnp.asarray(False)
    minus = jnp.asarray(False)
    for zl, dzl in zip(jax.tree.leaves(z), jax.tree.leaves(dz), strict=True):
        near = jnp.abs(zl) < KINK_MARGIN * jnp.abs(dzl)
        plus = plus | jnp.any(near & (zl * dzl <= 0))
        minus = minus | jnp.any(near & (zl * dzl >= 0))
    return PLUS * plus.astype(jnp.int32) + MINUS * minus.astype(jnp.int32)


def step_ratio(z, dz) -> jax.Array:
    """min over watched units of |z| / |dz|: the fraction of the step at which the nearest kink is
    reached, to first order (inf when the step moves no watched unit)."""
    ratio = jnp.asarray(jnp.inf, jnp.float32)
    for zl, dzl in zip(jax.tree.leaves(z), jax.tree.leaves(dz), strict=True):
        if zl.size:
            moved = dzl != 0
            r = jnp.where(moved, jnp.abs(zl) / jnp.where(moved, jnp.abs(dzl), 1), jnp.inf)
            ratio = jnp.minimum(ratio, jnp.min(r).astype(jnp.float32))
    return ratio
