"""fwd and fd rows of :func:`jaxbp.verify.check`: plan the directions (coordinates and
projections within the budget), run the directional program once, judge each direction with the
step ladder's verdict (:mod:`jaxbp.verify.fd`), and report kinks as non-smooth rows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import numpy as np

from jaxbp.verify import fd, oracles
from jaxbp.verify.hand import State, leaf_scales
from jaxbp.verify.report import Row, compare


class Reference(NamedTuple):
    """The loss in the reference precision at the point of the check, and what rev found there."""

    loss: Callable  # loss_fn of the (combined) tree
    layout: oracles.Layout
    theta: jax.Array  # the checked leaves, flat, in the reference precision
    fixed: tuple  # the leaves held fixed
    args: tuple  # the other arguments, upcast
    hand_flat: np.ndarray  # the hand gradient, flat, float64
    grad: np.ndarray  # rev's gradient, flat, float64
    value: float  # f(θ)
    eval_dtype: object  # the dtype the loss comes out in
    eval_eps: float


class FDOptions(NamedTuple):
    modes: tuple
    budget: object
    step: object
    n_projections: int
    kinks: Callable | None
    rng: np.random.Generator
    flops: float | None  # one loss evaluation, from XLA's cost analysis (None: unknown)


def directional_rows(state: State, ref: Reference, opts: FDOptions, leaves) -> tuple:
    """fwd and fd rows: plan the directions, run the program once, judge each direction."""
    idx, layout, g_rev = state.idx, ref.layout, ref.grad
    modes, fd_step, kinks, rng = opts.modes, opts.step, opts.kinks, opts.rng
    sizes = {i: int(np.size(leaves[i])) for i in idx}
    priority = {}
    for i in idx:
        h = state.hand[i].ravel()
        first = []
        if g_rev is not None and h.size:
            first.append(int(np.argmax(np.abs(h - g_rev[layout.segment(i)]))))
        if h.size:
            first.append(int(np.argmax(np.abs(h))))
        priority[i] = first
    flops = opts.flops
    plan = oracles.plan(sizes, opts.budget, flops=flops, n_projections=opts.n_projections,
                        rng=rng, priority=priority)  # fmt: skip
    scales = dict(zip(range(len(leaves)), leaf_scales(leaves, layout.checked), strict=True))
    steps = {}
    for i in idx:
        if isinstance(fd_step, Mapping) and state.paths[i] in fd_step:
            steps[i] = float(fd_step[state.paths[i]])
        elif fd_step is not None and not isinstance(fd_step, Mapping):
            steps[i] = float(fd_step)
        else:
            steps[i] = float(fd.base_step(scales[i], ref.eval_dtype))
    kind, index, start, stop, row, step, owner, elem = [], [], [], [], [], [], [], []
    projected = []  # the leaf of each projection row, in order
    for i in idx:
        off = layout.offsets[i]
        for c in plan.coordinates[i]:
            kind.append(0), index.append(off + int(c)), start.append(off + int(c))
            stop.append(off + int(c) + 1), row.append(0)
            step.append(steps[i]), owner.append(i), elem.append(int(c))
        for _ in range(plan.projections[i]):
            kind.append(1), index.append(0), start.append(off), stop.append(layout.offsets[i + 1])
            row.append(len(projected)), projected.append(i)
            step.append(steps[i]), owner.append(i), elem.append(-1)
    projections = oracles.projection_rows(rng, layout, projected, np.float64)
    meta = {
        "budget": plan.budget,
        "flops_per_evaluation": flops,
        "steps": {state.paths[i]: steps[i] for i in idx},
        "coordinates": {state.paths[i]: int(len(plan.coordinates[i])) for i in idx},
        "complete": {state.paths[i]: bool(plan.complete[i]) for i in idx},
        "projections": {state.paths[i]: int(plan.projections[i]) for i in idx},
    }
    if not kind:
        return [], meta
    dirs = oracles.Directions(*(np.asarray(a) for a in (kind, index, start, stop, row, step)))
    fwd_ok, fwd_note = "fwd" in modes, None

    def run(fwd):
        return oracles.directional(ref.loss, layout, ref.theta, ref.fixed, ref.args,
                                   ref.hand_flat, dirs, projections, ref.value, fwd=fwd,
                                   kinks=kinks)  # fmt: skip

    try:
        vals = run(fwd_ok)
    except TypeError as e:
        if not fwd_ok or "custom_vjp" not in str(e):
            raise
        fwd_ok, fwd_note = (
            False,
            "not applicable (custom_vjp): forward mode of a custom_vjp function",
        )
        vals = run(False)
    rounding_dir = _rounding_per_direction(state, layout, owner, elem, kind, row, projections)
    fd_source = fd.describe(ref.eval_dtype, step="h = 2·step_factor·scale of the leaf")
    steps_arr = np.where(vals.steps > 0, vals.steps, 1.0)
    verdict = fd.verdict(vals.j0, vals.j_plus, vals.j_minus, vals.hand_diff, steps_arr, ref.eval_eps,
                         blocked=vals.blocked | (vals.steps[:, 0] <= 0))  # fmt: skip
    owner, elem, kind_arr = np.asarray(owner), np.asarray(elem), np.asarray(kind)
    meta["non_smooth"] = {state.paths[i]: int(np.sum(~verdict.smooth[owner == i])) for i in idx}
    rows: list[Row] = []
    for oracle in ("fwd", "fd"):
        if oracle not in modes:
            continue
        for i in idx:
            shape = tuple(np.shape(leaves[i]))
            scale_max = float(np.max(np.abs(g_rev[layout.segment(i)]), initial=0.0))
            scale_norm = float(np.linalg.norm(g_rev[layout.segment(i)]))
            for k in (0, 1):  # coordinates, projections
                sel = (owner == i) & (kind_arr == k)
                if not sel.any() and not (k == 0 and sizes[i] == 0):
                    continue
                if k == 0:
                    method = (
                        "elementwise"
                        if plan.complete[i]
                        else f"{int(sel.sum())} of {sizes[i]} coordinates"
                    )
                else:
                    method = f"{int(sel.sum())} projection" + ("s" if sel.sum() != 1 else "")
                scale = scale_max if k == 0 else scale_norm
                if oracle == "fwd" and not fwd_ok:
                    rows.append(Row("fwd", state.paths[i], shape, state.dtypes[i], method,
                                    int(sel.sum()), math.nan, math.nan, math.nan, None, math.nan,
                                    math.nan, math.nan, math.nan, True, note=fwd_note, order=i,
                                    status="not applicable"))  # fmt: skip
                    continue
                rows += _judged(state, oracle, i, sel, k, method, shape, scale, vals, verdict,
                                elem, rounding_dir, fd_source)  # fmt: skip
    return rows, meta


def _rounding_per_direction(state, layout, owner, elem, kind, row, projections) -> np.ndarray:
    """The ``rounding`` allowance of each direction of a 16-bit leaf judged against the oracles
    directly (no clean float32 run): Z·s at a coordinate, Σ|v|·Z·s along a projection."""
    out = np.zeros(len(owner))
    for d, i in enumerate(owner):
        if i not in state.allowance:
            continue
        values = np.asarray(state.allowance[i][0], np.float64).ravel()
        if kind[d] == 0:
            out[d] = values[elem[d]]
        else:
            out[d] = float(np.abs(projections[row[d], layout.segment(i)]) @ values)
    return out


def _judged(state, oracle, i, sel, kind, method, shape, scale, vals, verdict, elem, rounding_dir,
            fd_source) -> list[Row]:  # fmt: skip
    """The row of one leaf's coordinates or projections for one oracle (+ a non-smooth row)."""
    rtol = state.rtol_for(oracle, i)
    atol = rtol * scale
    hand_v = vals.hand[sel]
    out = []
    given = state.atol_of(oracle, state.paths[i]) is not None
    names, sources, allowance = [], [], np.zeros(int(sel.sum()))
    if oracle == "fwd":
        ref, keep = vals.tangent[sel], np.ones(int(sel.sum()), bool)
    else:
        keep = verdict.smooth[sel]
        ref = hand_v + verdict.error[sel]
        names.append("fd")
        sources.append(fd_source)
        allowance = allowance + verdict.allowance[sel]
    if state.oracle_allowance and i in state.allowance:
        names.append("rounding")
        sources.append(state.allowance[i][1])
        allowance = allowance + rounding_dir[sel]
    # the measured allowances belong to the default tolerance; a given atol is taken as it is
    kw = {}
    if names and not given:
        kw = dict(allowance=allowance[keep], allowance_name=" + ".join(names),
                  bound_source="; ".join(sources))  # fmt: skip
    elements = elem[sel]
    row = state.row(hand_v[keep], ref[keep], oracle, i, method=method, shape=shape, atol=atol,
                    **kw)  # fmt: skip
    row = _named(row, elements[keep], shape, kind)
    out.append(row)
    if oracle == "fd" and (~keep).any():
        out.append(
            _non_smooth_row(state, i, shape, hand_v[~keep], verdict, sel, keep, elements, kind)
        )
    return out


def _named(row: Row, elements: np.ndarray, shape, kind) -> Row:
    """Replaces the row's direction number by the element it is (coordinates) or None."""
    if row.worst_index is None or not len(elements):
        return row
    k = row.worst_index[0]
    if kind == 0:
        index = tuple(int(j) for j in np.unravel_index(int(elements[k]), shape)) if shape else ()
        return dataclasses.replace(row, worst_index=index)
    note = f"worst: projection #{k}" + (f"; {row.note}" if row.note else "")
    return dataclasses.replace(row, worst_index=None, note=note)


def _non_smooth_row(state, i, shape, hand_v, verdict, sel, keep, elements, kind) -> Row:
    fm, fp = verdict.f_minus[sel][~keep], verdict.f_plus[sel][~keep]
    trunc = verdict.one_sided_error[sel][~keep]
    els = elements[~keep]
    parts = []
    for k in range(min(3, len(fm))):
        where = (f"element {tuple(int(j) for j in np.unravel_index(int(els[k]), shape))}"
                 if kind == 0 and shape else "element ()" if kind == 0 else "a projection")  # fmt: skip
        lo, hi = min(fm[k], fp[k]), max(fm[k], fp[k])
        slack = state.rtol_for("fd", i) * max(abs(lo), abs(hi)) + 2 * trunc[k]
        inside = "between them" if lo - slack <= hand_v[k] <= hi + slack else "outside them"
        parts.append(f"{where}: one-sided F₋ = {fm[k]:.6e}, F₊ = {fp[k]:.6e}, hand {hand_v[k]:.6e} "
                     f"({inside})")  # fmt: skip
    more = f" (+{len(fm) - 3} more)" if len(fm) > 3 else ""
    # shown: how far the hand value lies outside the one-sided slopes, against their truncation
    lo, hi = np.minimum(fm, fp), np.maximum(fm, fp)
    row = compare(hand_v, np.clip(hand_v, lo, hi), oracle="fd", path=state.paths[i],
                  rtol=state.rtol_for("fd", i), atol=0.0, allowance=2 * trunc,
                  allowance_name="one-sided truncation",
                  bound_source="non-smooth: the hand value against the interval of the one-sided "
                  "slopes F₋, F₊ at the finer step; never fails (rev and fwd judge it)",
                  method=f"{len(fm)} non-smooth", shape=shape, order=i, dtype=state.dtypes[i])  # fmt: skip
    row = _named(row, els, shape, kind)
    return dataclasses.replace(row, ok=True, status="non-smooth", margin=0.0,
                               note="non-smooth at this point — " + "; ".join(parts) + more)  # fmt: skip
