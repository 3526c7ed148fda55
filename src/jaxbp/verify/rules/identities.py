"""The identities V10–V12 of a VJP rule, as rows: the dot-product identity ⟨J t, c⟩ = ⟨t, Jᵀc⟩
(J t by ``jax.jvp`` or by central differences), zero cotangent and linearity — shared by
:func:`~jaxbp.verify.rules.check_vjp` and :func:`~jaxbp.verify.rules.check_custom_vjp`."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxbp.verify import fd
from jaxbp.verify.report import Row, compare
from jaxbp.verify.rules.draws import fd_estimates
from jaxbp.verify.rules.problem import _Problem
from jaxbp.verify.rules.rows import LINEARITY, ZERO_COTANGENT


class _Cotangents(NamedTuple):
    """A VJP rule's cotangents and the random vectors they answer: what the V10–V12 rows compare.

    Per float primal leaf i, ``hand[i]`` stacks the rule's cotangents of c₁ … c_n, then of the
    zero cotangent, then of α c₁ + β c₂ (:func:`_zero_linearity_rows` reads the last two).
    """

    prob: _Problem
    hand: list  # per float primal leaf: (n + 2, *shape), in the dtypes the rule returned
    hand64: list  # the same in float64
    blocks: list  # per float primal leaf: (n, *shape), the tangents supported on that leaf
    cs64: list  # per float output leaf: (n, *shape), the cotangents c₁ … c_n in float64
    n: int  # random (t, c) pairs per primal leaf
    alpha: float
    beta: float
    rtols: dict  # the caller's {oracle: rtol}
    atols: dict  # the caller's {oracle: atol}


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise inner products of two stacks (leading axis kept)."""
    return np.sum(a.reshape(a.shape[0], -1) * b.reshape(b.shape[0], -1), axis=1)


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))


def _identity_rows(oracle, hc: _Cotangents, jts64, rtol_default, *, method, transform,
                   extra_noise=None, source=None, skip=()) -> list[Row]:  # fmt: skip
    """⟨J t, c⟩ (from ``jts64``: per output leaf, (L·n, …)) against ⟨t, Jᵀc⟩ (the hand's);
    ``rtol_default`` per float primal leaf, ``extra_noise`` per tangent (the fd allowance)."""
    prob, n = hc.prob, hc.n
    K = len(prob.floats) * n
    reps = np.arange(K) % n
    lhs = sum(_dot(jt, c[reps]) for jt, c in zip(jts64, hc.cs64, strict=True))
    norm_jt = np.sqrt(sum(_norm(jt) ** 2 for jt in jts64))
    norm_c = np.sqrt(sum(_norm(c) ** 2 for c in hc.cs64))[reps]
    rows = []
    for i, label in enumerate(prob.labels):
        if i in skip:
            continue
        sl = slice(i * n, (i + 1) * n)
        t = hc.blocks[i].astype(np.float64)
        g = hc.hand64[i][:n]
        rhs = _dot(t, g)
        rt = hc.rtols.get(oracle, rtol_default[i])
        atol = hc.atols.get(oracle)
        noise = None
        if atol is None:
            noise = rt * (norm_jt[sl] * norm_c[sl] + _norm(t) * _norm(g))
            if extra_noise is not None:
                noise = noise + extra_noise[sl]
        rows.append(compare(rhs, lhs[sl], oracle=oracle, path=label, rtol=rt, atol=atol,
                            allowance=noise, allowance_name="round-off" if extra_noise is None
                            else "round-off + fd", bound_source=_identity_source(rt, source),
                            method=method, shape=prob.shapes[i], order=prob.orders[i],
                            dtype=str(hc.hand[i].dtype), note=None))  # fmt: skip
        rows[-1] = dataclasses.replace(rows[-1], transform=transform)
    return rows


def _identity_source(rtol, fd_source) -> str:
    """The bound source of an identity row."""
    text = (f"round-off of the two inner products: {rtol:.1e}·(‖J t‖‖c‖ + ‖t‖‖Jᵀc‖) "
            "(Cauchy–Schwarz)")  # fmt: skip
    return f"{text}; {fd_source}" if fd_source else text


def _fd_identity(values, cs64, hs, n):
    """From the reference's values at the points x + o·h·t (o in :data:`jaxbp.verify.fd.OFFSETS`):
    J t ≈ R, Richardson's estimate, per output leaf, and per tangent the allowance of ⟨R, c⟩,
    Σ|c|·(measured truncation + round-off) (:func:`jaxbp.verify.fd.at_offsets`), and its source."""
    ests = fd_estimates(values, hs)
    K = hs.shape[0]
    reps = np.arange(K) % n
    allowance = sum(_dot(e.allowance, np.abs(c[reps])) for e, c in zip(ests, cs64, strict=True))
    source = fd.describe(ests[0].eval_dtype, step="h = 2·step_factor·rms of the leaf")
    return [e.value for e in ests], allowance, source


def _zero_linearity_rows(hc: _Cotangents, r_an, bad, *, transform) -> list[Row]:
    """V11 and V12 from the hand results stacked as [c₁ … c_n, 0, α c₁ + β c₂]; ``r_an`` the
    default rtol per float primal leaf, ``bad`` the leaves left out (a wrong shape)."""
    prob, hand, hand64, n = hc.prob, hc.hand, hc.hand64, hc.n
    alpha, beta, rtols, atols = hc.alpha, hc.beta, hc.rtols, hc.atols
    rows = []
    for i, label in enumerate(prob.labels):
        if i in bad:
            continue
        rows.append(dataclasses.replace(
            compare(hand[i][n], np.zeros(prob.shapes[i]), oracle=ZERO_COTANGENT, path=label,
                    rtol=0.0, atol=atols.get(ZERO_COTANGENT, 0.0), order=prob.orders[i]),
            transform=transform))  # fmt: skip
    for i, label in enumerate(prob.labels):
        if i in bad:
            continue
        v1, v2 = hand64[i][0], hand64[i][1]
        rt = rtols.get(LINEARITY, r_an[i])
        scale = abs(alpha) * float(np.max(np.abs(v1), initial=0)) + abs(beta) * float(
            np.max(np.abs(v2), initial=0)
        )
        rows.append(dataclasses.replace(
            compare(hand[i][n + 1], alpha * v1 + beta * v2, oracle=LINEARITY, path=label, rtol=rt,
                    atol=atols.get(LINEARITY, rt * scale), order=prob.orders[i]),
            transform=transform))  # fmt: skip
    return rows
