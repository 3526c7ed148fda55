"""The rows of the rule checks: their names (the oracles), the rows that compare no numbers,
the ``shape/dtype`` rows, one row per input leaf from one per output leaf, and the report."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxbp.verify.report import Report, Row, environment

VJP = "vjp"
DOT = "⟨Jt,c⟩ = ⟨t,Jᵀc⟩"
DOT_FD = "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd"
ZERO_COTANGENT = "zero cotangent"
ZERO_TANGENT = "zero tangent"
LINEARITY = "linearity"
JVP = "jvp"
FD = "fd"
PRIMAL = "primal"
VJP_PRIMAL = "vjp primal"
GRAD_OF_VJP = "grad of vjp"
SIGNATURE = "shape/dtype"
SKIPPED = "skipped"

VJP_ORACLES = (VJP, DOT, DOT_FD, ZERO_COTANGENT, LINEARITY)
JVP_ORACLES = (PRIMAL, JVP, FD, LINEARITY, ZERO_TANGENT)
CUSTOM_ORACLES = (PRIMAL, VJP_PRIMAL, VJP, JVP, DOT, DOT_FD, ZERO_COTANGENT, LINEARITY,
                  GRAD_OF_VJP)  # fmt: skip
TRANSFORMS = ("eager", "jit", "vmap")


def _err(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _name(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _status_row(oracle, path, note, *, order=0, transform="eager", status="not applicable",
                shape=(), dtype="-", problem=None) -> Row:  # fmt: skip
    """A row that compares no numbers: ``not applicable`` (never fails) or a failing problem."""
    ok = status != "FAIL"
    nan = math.nan
    return Row(oracle, path, tuple(shape), dtype, "-", 0, nan, nan, nan, None, nan, nan, nan, nan,
               ok, problem=problem, note=note, order=order, margin=0.0 if ok else math.inf,
               transform=transform, status=status)  # fmt: skip


def _fail_row(oracle, path, problem, **kw) -> Row:
    return _status_row(oracle, path, None, status="FAIL", problem=problem, **kw)


def _check_leaf(got, shape, dtype, what: str):
    """('ok' | 'none' | 'dtype' | 'bad', problem): a rule's leaf against what JAX gives."""
    if got is None:
        return "none", None
    if not hasattr(got, "dtype"):
        return "bad", f"{what} is a {type(got).__name__}, not an array"
    g_shape, g_dtype = tuple(getattr(got, "shape", ())), jnp.dtype(got.dtype)
    if g_shape != tuple(shape):
        return "bad", f"{what} has shape {g_shape}; JAX gives {tuple(shape)}"
    if not jnp.issubdtype(g_dtype, jnp.floating):
        return "bad", f"{what} has dtype {g_dtype}; JAX gives {jnp.dtype(dtype)}"
    if g_dtype != jnp.dtype(dtype):
        return "dtype", f"{what} has dtype {g_dtype}; JAX gives {jnp.dtype(dtype)}"
    return "ok", None


def _fix(leaves, is_float, shapes, dtypes, labels, orders, what, transform):
    """Per float leaf of a rule's result, its state (see :func:`_check_leaf`); a failing
    ``shape/dtype`` row for each leaf that is not what JAX gives."""
    fix, rows = [], []
    k = 0
    for leaf, fl, shape, dtype in zip(leaves, is_float, shapes, dtypes, strict=True):
        if not fl:
            continue
        state, problem = _check_leaf(leaf, shape, dtype, f"{what} of {labels[k]}")
        fix.append(state)
        if problem:
            rows.append(_fail_row(SIGNATURE, labels[k], problem, order=orders[k], shape=shape,
                                  dtype=str(getattr(leaf, "dtype", "-")),
                                  transform=transform))  # fmt: skip
        k += 1
    return tuple(fix), rows


def _combine(rows: list[Row], path: str, order: int, out_labels: list[str],
             what: str = "output") -> Row:  # fmt: skip
    """One row per input leaf from one row per output leaf: the worst output leaf's numbers,
    the note naming it (and every failing output leaf)."""
    worst = max(range(len(rows)), key=lambda j: (not rows[j].ok, rows[j].margin))
    w = rows[worst]
    bad = [out_labels[j] for j, r in enumerate(rows) if not r.ok]
    ok = not bad
    if bad:
        note = f"{what} {out_labels[worst]}; failing {what} leaves: {', '.join(bad)}"
    elif len(rows) > 1:
        note = f"{what} {out_labels[worst]} (the worst of {len(rows)} {what} leaves)"
    else:
        note = None
    problem = f"{what} {out_labels[worst]}: {w.problem}" if w.problem else None
    return dataclasses.replace(w, path=path, order=order, ok=ok, note=note, problem=problem,
                               status=None)  # fmt: skip


def _finish(title, rows, meta, raise_on_fail) -> Report:
    report = Report(title, tuple(rows), {**meta, **environment()})
    if raise_on_fail:
        report.raise_if_failed()
    return report
