"""The rows of :func:`~jaxbp.verify.rules.check_custom_vjp`: f's results against its
reference's — per transform (``primal``, ``vjp primal``, ``vjp``, ``jvp``), the eager-only
identities V10–V12 of f's own cotangents, and second order (``grad of vjp``)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxbp.verify.report import Row, compare
from jaxbp.verify.rules.draws import _f64, _rtol_of
from jaxbp.verify.rules.identities import (
    _Cotangents,
    _fd_identity,
    _identity_rows,
    _zero_linearity_rows,
)
from jaxbp.verify.rules.problem import _Out, _Problem
from jaxbp.verify.rules.rows import (
    DOT,
    DOT_FD,
    GRAD_OF_VJP,
    JVP,
    PRIMAL,
    VJP,
    VJP_PRIMAL,
    _combine,
    _err,
    _fail_row,
    _status_row,
)


class _Against(NamedTuple):
    """What check_custom_vjp holds f's results against: the reference's, one precision up, and
    the tolerances (n random vectors per leaf, B members of the vmap batch)."""

    name: str  # f's name: the path of the rows that name no leaf
    prob: _Problem
    out: _Out
    refs: dict  # the reference's parts vjp, jvp, fd, g2: each its result or the exception raised
    ref_y: list | None  # per float output leaf: (B, *shape), the reference's output in float64
    rtols: dict  # the caller's {oracle: rtol}
    atols: dict  # the caller's {oracle: atol}
    r_an: list  # per float primal leaf: the default analytic rtol along its path
    r_out: list  # per float output leaf: the default rtol of its primal rows
    n: int
    B: int


def _transform_rows(ag: _Against, transform: str, h, want_jvp: bool) -> list[Row]:
    """f's results under one transform against the reference's: ``primal`` and ``vjp primal``
    per output leaf, ``vjp`` per input leaf, and ``jvp`` per input leaf where f has forward mode
    (``want_jvp``). ``h`` holds f(x), the primal of ``jax.vjp(f)``, its VJPs and its JVPs (member 0;
    every member under ``vmap``), or the exception f raised under the transform."""
    prob, refs, rtols, atols, n, B = ag.prob, ag.refs, ag.rtols, ag.atols, ag.n, ag.B
    out_labels = ag.out.float_labels
    n_out = len(out_labels)
    sel = slice(None) if transform == "vmap" else 0  # the batch, or member 0
    if isinstance(h, Exception):
        return [_fail_row(VJP, ag.name, f"f failed under {transform}: {_err(h)}",
                          order=-1, transform=transform)]  # fmt: skip
    rows: list[Row] = []
    y_plain_h, y_vjp_h, vjps_h, jts_h = h
    for oracle, ys in ((PRIMAL, y_plain_h), (VJP_PRIMAL, y_vjp_h)):
        for j, label in enumerate(out_labels):
            if ag.ref_y is None:
                rows.append(_status_row(oracle, label, "the reference failed one precision "
                                        f"up: {_err(refs['vjp'])}", order=j - n_out,
                                        transform=transform))  # fmt: skip
                continue
            rows.append(dataclasses.replace(
                compare(ys[j], ag.ref_y[j][sel], oracle=oracle, path=label,
                        rtol=rtols.get(oracle, ag.r_out[j]), atol=atols.get(oracle),
                        method="vs the reference" + (f", {B} members" if sel != 0 else ""),
                        order=j - n_out),
                transform=transform))  # fmt: skip
    for i, label in enumerate(prob.labels):
        if isinstance(refs["vjp"], Exception):
            rows.append(_status_row(VJP, label, "jax.vjp of the reference failed: "
                                    f"{_err(refs['vjp'])}", order=prob.orders[i],
                                    transform=transform))  # fmt: skip
            continue
        ref = _f64(refs["vjp"][1][i][sel])
        rows.append(dataclasses.replace(
            compare(vjps_h[i], ref, oracle=VJP, path=label, rtol=rtols.get(VJP, ag.r_an[i]),
                    atol=atols.get(VJP), shape=prob.shapes[i], order=prob.orders[i],
                    method=f"{n} random cotangents vs the reference"
                    + (f", {B} members" if sel != 0 else "")),
            transform=transform))  # fmt: skip
    if want_jvp:
        if isinstance(jts_h, Exception):
            rows.append(
                _fail_row(
                    JVP,
                    ag.name,
                    f"jax.jvp(f) failed under {transform}: {_err(jts_h)}",
                    order=-1,
                    transform=transform,
                )
            )
        elif isinstance(refs["jvp"], Exception):
            rows.append(
                _status_row(
                    JVP,
                    ag.name,
                    f"jax.jvp of the reference failed: {_err(refs['jvp'])}",
                    order=-1,
                    transform=transform,
                )
            )
        else:
            for i, label in enumerate(prob.labels):
                ks = slice(i * n, (i + 1) * n)
                per_out = []
                for j in range(n_out):
                    hj = jts_h[j][:, ks] if sel != 0 else jts_h[j][ks]
                    rj = _f64(refs["jvp"][1][j][sel])
                    rj = rj[:, ks] if sel != 0 else rj[ks]
                    rt = rtols.get(JVP, _rtol_of([str(prob.dtypes[i]), ag.out.float_dtypes[j]],
                                                 "analytic"))  # fmt: skip
                    per_out.append(
                        compare(
                            hj,
                            rj,
                            oracle=JVP,
                            path=label,
                            rtol=rt,
                            atol=atols.get(JVP),
                            order=prob.orders[i],
                            method=f"{n} random tangents vs the reference",
                        )
                    )
                rows.append(
                    dataclasses.replace(
                        _combine(per_out, label, prob.orders[i], out_labels),
                        transform=transform,
                    )
                )
    return rows


def _eager_identity_rows(ag: _Against, hc: _Cotangents, hs_k: np.ndarray) -> list[Row]:
    """Eager only: the dot-product identity for f's own cotangents ``hc``, J t by the reference's
    ``jax.jvp`` and by its central differences (steps ``hs_k``, one per tangent), then zero
    cotangent and linearity."""
    prob, refs, n = ag.prob, ag.refs, hc.n
    rows: list[Row] = []
    if isinstance(refs["jvp"], Exception):
        rows += [
            _status_row(
                DOT,
                lab,
                f"jax.jvp of the reference failed: {_err(refs['jvp'])}",
                order=prob.orders[i],
            )
            for i, lab in enumerate(prob.labels)
        ]
    else:
        jts64 = [_f64(jt[0]) for jt in refs["jvp"][1]]
        rows += _identity_rows(DOT, hc, jts64, ag.r_an, method=f"{n} random pairs, J t by the "
                               "reference's jax.jvp", transform="eager")  # fmt: skip
    if isinstance(refs["fd"], Exception):
        rows += [
            _status_row(
                DOT_FD,
                lab,
                f"f failed at perturbed points: {_err(refs['fd'])}",
                order=prob.orders[i],
            )
            for i, lab in enumerate(prob.labels)
        ]
    else:
        d1, allowance, source = _fd_identity(refs["fd"], hc.cs64, hs_k, n)
        rows += _identity_rows(DOT_FD, hc, d1, ag.r_an, method=f"{n} random pairs, J t by "
                               "finite differences of the reference", transform="eager",
                               extra_noise=allowance, source=source)  # fmt: skip
    rows += _zero_linearity_rows(hc, ag.r_an, set(), transform="eager")
    return rows


def _grad_of_vjp_rows(ag: _Against, g2_traced) -> list[Row]:
    """Second order, under jit: ∇ₓ⟨VJP(x)(c)_i, u_i⟩ of f (``g2_traced``, or the exception its
    bwd raised) against the reference's, one row per primal leaf i; ``not applicable`` where
    either cannot be differentiated."""
    prob, refs = ag.prob, ag.refs
    rows: list[Row] = []
    g2, g2_error = (None, g2_traced) if isinstance(g2_traced, Exception) else (g2_traced, None)
    g2_ref, g2_ref_error = (
        (None, refs["g2"]) if isinstance(refs["g2"], Exception) else (refs["g2"], None)
    )
    for i, label in enumerate(prob.labels):
        if g2_error is not None:
            rows.append(_status_row(GRAD_OF_VJP, label, "the rule's backward pass is not "
                                    f"differentiable: {_err(g2_error)}", order=prob.orders[i],
                                    transform="jit"))  # fmt: skip
        elif g2_ref_error is not None:
            rows.append(_status_row(GRAD_OF_VJP, label, "the reference's second derivative "
                                    f"failed: {_err(g2_ref_error)}", order=prob.orders[i],
                                    transform="jit"))  # fmt: skip
        else:
            per_leaf = [compare(g2[k][i], _f64(g2_ref[k][i]), oracle=GRAD_OF_VJP, path=label,
                                rtol=ag.rtols.get(GRAD_OF_VJP, max(ag.r_an[i], ag.r_an[k])),
                                atol=ag.atols.get(GRAD_OF_VJP), order=prob.orders[i],
                                method="∇⟨VJP(x)(c)_i, u_i⟩ vs the reference's")
                        for k in range(len(prob.labels))]  # fmt: skip
            row = _combine(per_leaf, label, prob.orders[i], [f"∂/∂{lab}" for lab in prob.labels],
                           what="derivative")  # fmt: skip
            rows.append(dataclasses.replace(row, transform="jit"))
    return rows
