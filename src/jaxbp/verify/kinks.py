"""Kinks (relu, leaky_relu): finite differences that straddle z = 0 are reported apart.

A central difference whose step moves some pre-activation z of a kinked unit across zero measures
the average of the two one-sided slopes, not the derivative: it would fail a correct gradient
(``torch.autograd.gradcheck``'s false failure at the ReLU kink). The verifier therefore asks, for
every perturbation direction t with step h, whether some watched pre-activation lies within the
step (eq. V9)::

    |z| < 2 |∂z/∂θ · t|        (the linearised change of z over the step, with a factor 2 margin)

computed with one ``jax.jvp`` of the user's ``kinks(params, *args)`` function per direction.
Such directions leave the ordinary ``fd`` row for an ``fd-kink`` row, where they are differenced
again, centrally, with the step scaled by KINK_STEP_FRACTION · min |z| / |dz| — half the way to
the nearest kink, so that neither side crosses it — and the hand value must match that quotient
within the finite-difference tolerance, whose round-off allowance (V5) grows as the step shrinks.

Only a watched z exactly at 0 admits no such step. There the one-sided differences

    D₊ = (J(θ₊) − J(θ)) / h,    D₋ = (J(θ) − J(θ₋)) / h

decide: a z moving toward zero (z · dz < 0) is crossed by the + step, one moving away by the −
step; when only one side crosses, the hand value must equal the other side's slope; when both do
(z · dz = 0, where the convention of :mod:`jaxbp.activations` picks a side), it must lie in
[min D±, max D±]. Their tolerance adds KINK_TRUNCATION · eps^(1/3) · scale for the one-sided
differences' O(h) truncation. The row's note shows the re-differenced value and D₋, D₊ at its
worst element. Bugs at kinked units are still caught precisely by rev and fwd, which need no
step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.report import Row, compare, fd_step_factor

KINK_MARGIN = 2.0
"""A pre-activation is "within a step" of the kink when |z| < KINK_MARGIN · |dz|."""

KINK_STEP_FRACTION = 0.5
"""Kink directions are differenced again with the step × KINK_STEP_FRACTION · |z| / |dz|."""

KINK_TRUNCATION = 10.0
"""Allowance for the one-sided differences' O(h) truncation, in units of eps^(1/3) · scale."""


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


def one_sided(j0: float, j_plus: np.ndarray, j_minus: np.ndarray, step: np.ndarray):
    """(D₋, D₊): backward and forward one-sided differences over half the central step."""
    half = step / 2
    return (j0 - j_minus) / half, (j_plus - j0) / half


class SmallStep(NamedTuple):
    """Central differences of the kink directions with a step that reaches no kink.

    Attributes:
      d: the difference quotients (NaN where a watched z is exactly 0: no step avoids it).
      noise: their round-off allowance (V5).
      hand: the hand value along the perturbation actually applied.
      factor: the step, as a fraction of the ordinary one.
    """

    d: np.ndarray
    noise: np.ndarray
    hand: np.ndarray
    factor: np.ndarray


def kink_row(
    *,
    path: str,
    hand: np.ndarray,
    d_minus: np.ndarray,
    d_plus: np.ndarray,
    sides: np.ndarray,
    small: SmallStep,
    indices: list[tuple],
    noise: np.ndarray,
    rtol: float,
    atol: float | None,
    dtype,
    shape: tuple,
    method: str,
    order: int,
) -> Row:
    """The ``fd-kink`` row (V9): each hand value against the central difference with a step that
    stops short of the kink; where none exists (z exactly 0), against the one-sided difference of
    the side that does not cross (``sides`` from :func:`crossing_sides`), or their bracket."""
    bracket = np.clip(hand, np.minimum(d_minus, d_plus), np.maximum(d_minus, d_plus))
    one_side = np.where(sides == PLUS, d_minus, np.where(sides == MINUS, d_plus, bracket))
    scale = float(np.max(np.abs(np.concatenate([d_minus, d_plus])), initial=0.0))
    one_side_allowance = 2 * noise + KINK_TRUNCATION * fd_step_factor(dtype) * scale
    central = np.isfinite(small.d)
    row = compare(
        hand,
        np.where(central, small.d, one_side),
        dtype=dtype,
        oracle="fd-kink",
        path=path,
        rtol=rtol,
        atol=atol,
        method=f"{method}, {len(hand)} within a step of a kink",
        noise=np.where(central, small.noise, one_side_allowance),
        shape=shape,
        order=order,
        ref_name="the kink-avoiding differences",
    )
    if row.worst_index is None:
        return row
    k = row.worst_index[0]
    how = (
        f"step ×{small.factor[k]:.2g}: {small.d[k]:.6e}" if central[k] else "at the kink: one-sided"
    )
    note = (
        f"{len(hand)} direction(s) reach a kink within the step, re-differenced with smaller "
        f"steps (×{np.min(small.factor):.2g} … ×{np.max(small.factor):.2g}); at element "
        f"{indices[k]}: hand {hand[k]:.6e}, {how}; one-sided D- {d_minus[k]:.6e}, "
        f"D+ {d_plus[k]:.6e}"
    )
    return Row(**{**row.__dict__, "worst_index": indices[k], "note": note})
