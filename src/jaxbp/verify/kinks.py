"""Kinks (relu, leaky_relu): finite differences that straddle z = 0 are reported apart.

A central difference whose step moves some pre-activation z of a kinked unit across zero measures
the average of the two one-sided slopes, not the derivative: it would fail a correct gradient
(``torch.autograd.gradcheck``'s false failure at the ReLU kink). The verifier therefore asks, for
every perturbation direction t with step h, whether some watched pre-activation lies within the
step (eq. V9)::

    |z| < 2 |∂z/∂θ · t|        (the linearised change of z over the step, with a factor 2 margin)

computed with one ``jax.jvp`` of the user's ``kinks(params, *args)`` function per direction.
Such directions leave the ordinary ``fd`` row and go to an ``fd-kink`` row, judged with the
one-sided differences

    D₊ = (J(θ₊) − J(θ)) / h,    D₋ = (J(θ) − J(θ₋)) / h.

A z moving toward zero (z · dz < 0) is crossed by the + step, one moving away by the − step. When
only one side crosses, the other side's slope is the derivative and the hand value must equal it;
when both do (two units crossing in opposite senses, or z exactly 0, where the convention of
:mod:`jaxbp.activations` picks a side), the hand value must lie in [min D±, max D±]. The
tolerance is the finite-difference one plus KINK_TRUNCATION · eps^(1/3) · scale for the one-sided
differences' O(h) truncation (h = eps^(1/3) · max(rms(leaf), 1), so (h/2)·|J''| is of that order
when |J''| is of the order of the gradient). The row's note shows D₋ and D₊ at its worst element.
Bugs at kinked units are still caught precisely by rev and fwd, which need no step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.report import Row, compare, fd_step_factor

KINK_MARGIN = 2.0
"""A pre-activation is "within a step" of the kink when |z| < KINK_MARGIN · |dz|."""

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


def one_sided(j0: float, j_plus: np.ndarray, j_minus: np.ndarray, step: np.ndarray):
    """(D₋, D₊): backward and forward one-sided differences over half the central step."""
    half = step / 2
    return (j0 - j_minus) / half, (j_plus - j0) / half


def kink_row(
    *,
    path: str,
    hand: np.ndarray,
    d_minus: np.ndarray,
    d_plus: np.ndarray,
    sides: np.ndarray,
    indices: list[tuple],
    noise: np.ndarray,
    rtol: float,
    atol: float | None,
    dtype,
    shape: tuple,
    method: str,
    order: int,
) -> Row:
    """The ``fd-kink`` row: each hand value against the one-sided difference of the side that
    does not cross a kink (``sides`` from :func:`crossing_sides`), or the bracket of both."""
    bracket = np.clip(hand, np.minimum(d_minus, d_plus), np.maximum(d_minus, d_plus))
    nearest = np.where(sides == PLUS, d_minus, np.where(sides == MINUS, d_plus, bracket))
    scale = float(np.max(np.abs(np.concatenate([d_minus, d_plus])), initial=0.0))
    row = compare(
        hand,
        nearest,
        dtype=dtype,
        oracle="fd-kink",
        path=path,
        rtol=rtol,
        atol=atol,
        method=f"{method}, {len(hand)} within a step of a kink",
        noise=2 * noise + KINK_TRUNCATION * fd_step_factor(dtype) * scale,
        shape=shape,
        order=order,
        ref_name="the one-sided differences",
    )
    if row.worst_index is None:
        return row
    k = row.worst_index[0]
    note = (
        f"{len(hand)} direction(s) straddle a kink; at element {indices[k]}: hand "
        f"{hand[k]:.6e}, one-sided D- {d_minus[k]:.6e}, D+ {d_plus[k]:.6e}"
    )
    return Row(**{**row.__dict__, "worst_index": indices[k], "note": note})
