"""What the verifier returns: one :class:`Row` per leaf per oracle, gathered in a :class:`Report`,
and :func:`compare`, the one comparison every row of every check comes from.

A row compares a *hand* array (the gradient, δ, JVP or VJP under test) with a *reference* array
(an oracle's answer) elementwise (docs/verify.md, "Error model"; eq. V1)::

    |hand_i − ref_i| ≤ bound_i = atol + rtol · |ref_i| + allowance_i      (capped, for check_grads)

The **allowance** is what the reference itself may be off by — the measured truncation and
round-off of a finite difference (:mod:`jaxbp.verify.fd`), or the measured rounding spread of a
low-precision result (:mod:`jaxbp.verify.rounding`) — and is zero against an exact derivative.
Unless the caller gives ``atol``, the absolute floor scales with the leaf itself,
``atol = rtol · max_i |ref_i|``: a leaf whose gradient is 1e-9 everywhere is judged on its own
scale, not on the scale of the largest leaf in the tree.

**What decided.** Each row shows, at its deciding element (the one with the largest
error / bound), the ``error`` |hand − ref|, the ``bound`` it was judged against and the bound's
``parts`` (``rtol·|ref|``, ``atol``, the allowance, a cap), and the verdict is exactly
``error > bound`` — :class:`Row` refuses to be built otherwise, so a "pass" never sits beside an
error above its shown bound. Elements where the reference is undefined are left out and counted
in the note: where f itself is not finite at the point (``defined=False``: "undefined at this
point"), or where the oracle is not finite although f is (autodiff's NaN through ``where``, a
difference whose step leaves f's domain). NaN in the hand result where the reference is finite
fails, naming the element; equal infinities agree; NaN never equals NaN.

The rows are never cut short: every leaf of every oracle is compared, and :attr:`Report.failed`
lists every failing path in tree order.
"""

from __future__ import annotations

import cmath
import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxbp.verify.tolerance import (  # noqa: F401  (re-exported: the policy lives there)
    ANALYTIC_RTOL_F64,
    ANALYTIC_ULPS,
    ANALYTIC_ULPS_HALF,
    FD_NOISE_FACTOR,
    FD_RTOL_FACTOR,
    default_rtol,
    eps,
    fd_step_factor,
    tolerance_table,
)

JUDGED = ("pass", "FAIL")
"""Statuses of rows that compared numbers; every other status never fails."""

INFORMATIONAL = ("non-smooth", "not applicable", "undefined", "skipped")
"""Statuses that carry a note instead of a verdict: ``non-smooth`` (finite differences found a
kink), ``not applicable`` (the oracle cannot run on this function), ``undefined`` (f, or the
oracle, is not finite at every compared element of the point), ``skipped``."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison: one leaf (or δ, or quantity) against one oracle.

    Attributes:
      oracle: who produced the reference (``rev``, ``fwd``, ``fd``, ``probe``, …).
      path: the leaf's ``jax.tree_util.keystr`` path (``[0].W``), or a quantity's name (``δ[1]``).
      shape: the compared shape (for projections: the leaf's shape).
      dtype: the hand array's dtype.
      method: ``elementwise``, ``N projections``, …
      n: number of compared numbers.
      max_abs: max |hand − ref| over the compared elements.
      max_rel: max |hand − ref| / |ref| (0/0 = 0, x/0 = inf).
      norm_rel: ‖hand − ref‖₂ / ‖ref‖₂.
      worst_index: index of the deciding element: the largest error / bound.
      value: hand at ``worst_index``.
      reference: ref at ``worst_index``.
      rtol: the relative tolerance.
      atol: the absolute floor actually used (leaf-scaled unless given).
      ok: whether every element passed and everything was finite.
      problem: why it failed beyond the numbers (NaN/Inf, shape), else ``None``.
      note: extra information (one-sided derivatives at a kink, excluded elements), else ``None``.
      order: position of the leaf in tree order, for :attr:`Report.failed`.
      margin: error / bound at the deciding element (≤ 1 passes; inf with a problem).
      transform: how the hand function was run: ``eager``, ``jit``, ``vmap`` (each member of a
        batch of parameter copies against its own eager result), …
      status: ``pass`` / ``FAIL`` from ``ok``, unless one of :data:`INFORMATIONAL` (never fails).
      error: |hand − ref| at the deciding element.
      bound: the bound that element was judged against (the verdict is ``error > bound``).
      parts: the bound's parts at that element, ``((name, value), ...)``: ``rtol·|ref|``,
        ``atol``, an allowance (``fd``, ``rounding``), and ``cap`` where a cap decided.
      bound_source: where the allowance (and any cap) came from, in words.
    """

    oracle: str
    path: str
    shape: tuple
    dtype: str
    method: str
    n: int
    max_abs: float
    max_rel: float
    norm_rel: float
    worst_index: tuple | None
    value: float
    reference: float
    rtol: float
    atol: float
    ok: bool
    problem: str | None = None
    note: str | None = None
    order: int = 0
    margin: float = 0.0
    transform: str = "eager"
    status: str | None = None
    error: float = math.nan
    bound: float = math.nan
    parts: tuple = ()
    bound_source: str | None = None

    def __post_init__(self):
        if self.status is None or self.status in JUDGED:
            object.__setattr__(self, "status", "pass" if self.ok else "FAIL")
        elif self.status not in INFORMATIONAL:
            raise ValueError(f"Row.status: unknown {self.status!r}")
        # The invariant: the verdict of a judged row is exactly error > bound (or a problem).
        if self.status == "pass" and (self.problem is not None or not self.error <= self.bound):
            raise ValueError(
                f"Row {self.oracle} {self.path}: 'pass' with error {self.error} and bound "
                f"{self.bound}" + (f" and problem {self.problem!r}" if self.problem else "")
            )
        if self.status == "FAIL" and self.problem is None and not self.error > self.bound:
            raise ValueError(
                f"Row {self.oracle} {self.path}: 'FAIL' with error {self.error} ≤ bound "
                f"{self.bound} and no problem"
            )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        d["parts"] = {name: value for name, value in self.parts}
        return d


def status_row(oracle, path, note, *, status="not applicable", order=0, transform="eager",
               shape=(), dtype="-", method="-", problem=None) -> Row:  # fmt: skip
    """A row that compares no numbers: an informational status (never fails), or ``FAIL`` with a
    ``problem`` (the function could not run, a result of the wrong shape)."""
    ok = status != "FAIL"
    if not ok and problem is None:
        raise ValueError("status_row: a failing row needs a problem")
    nan = math.nan
    return Row(oracle, path, tuple(shape), dtype, method, 0, nan, nan, nan, None, nan, nan, nan,
               nan, ok, problem=problem, note=note, order=order, margin=0.0 if ok else math.inf,
               transform=transform, status=None if status == "FAIL" else status,
               error=math.inf if not ok else nan)  # fmt: skip


def fail(row: Row, problem: str) -> Row:
    """``row`` failed for ``problem`` as well as (or instead of) its numbers."""
    problem = f"{row.problem}; {problem}" if row.problem else problem
    return dataclasses.replace(row, ok=False, status=None, problem=problem, margin=math.inf)


def _first(mask: np.ndarray) -> tuple:
    flat = int(np.flatnonzero(mask.ravel())[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def _count(mask: np.ndarray, what: str, n: int) -> str:
    k = int(mask.sum())
    return f"{what} at {_first(mask)}" + (f" ({k} of {n} elements)" if n > 1 else "")


def compare(
    hand,
    ref,
    *,
    oracle: str,
    path: str,
    rtol: float,
    atol: float | None = None,
    allowance=None,
    allowance_name: str = "fd",
    bound_source: str | None = None,
    cap=None,
    cap_name: str | None = None,
    defined=None,
    method: str = "elementwise",
    noise=None,
    shape: tuple | None = None,
    order: int = 0,
    note: str | None = None,
    ref_name: str | None = None,
    dtype=None,
) -> Row:
    """Compares ``hand`` with ``ref`` elementwise (eq. V1) and returns the :class:`Row`.

    Args:
      hand: the array under test.
      ref: the oracle's array (same shape).
      oracle: the oracle's name.
      path: the leaf's keystr path.
      rtol: relative tolerance.
      atol: absolute tolerance; ``None`` scales it with the leaf: ``rtol · max |ref|``.
      allowance: optional per-element allowance of the reference (same shape, or a scalar): the
        measured error of a finite difference, the rounding spread of a low-precision result.
      allowance_name: how the allowance is named in the row's parts (``fd``, ``rounding``).
      bound_source: where the allowance (and cap) came from, in words, for the row.
      cap: optional per-element upper limit of the bound (``check_grads``: JAX's own criterion,
        so that the row is never looser than it).
      cap_name: what the cap is, in words (added to ``bound_source``).
      defined: optional bool mask (broadcast to the shape): False where f itself is not finite at
        the point; those elements are left out ("undefined at this point").
      method: how ``ref`` was obtained, shown in the table.
      noise: the former name of ``allowance`` (kept for callers of earlier versions).
      shape: the shape to report (defaults to ``hand``'s).
      order: tree-order position.
      note: free text for the table.
      ref_name: how to call the reference side in a message (default: "the <oracle> oracle").
      dtype: the dtype to report (defaults to ``hand``'s).
    """
    if allowance is None:
        allowance = noise
    dtype = str(jnp.result_type(hand) if dtype is None else jnp.dtype(dtype))
    complex_ = np.iscomplexobj(hand) or np.iscomplexobj(ref)
    wide = np.complex128 if complex_ else np.float64  # complex: |·| is the modulus
    h = np.asarray(hand).astype(wide)
    r = np.asarray(ref).astype(wide)
    shape = tuple(np.shape(hand)) if shape is None else tuple(shape)
    source = "; ".join(s for s in (bound_source, cap_name and f"at most {cap_name}") if s)
    if h.shape != r.shape:
        return Row(
            oracle, path, shape, dtype, method, int(h.size), math.inf, math.inf, math.inf, None,
            math.nan, math.nan, rtol, math.nan if atol is None else atol, False,
            problem=f"shape {h.shape} differs from the oracle's {r.shape}", note=note, order=order,
            margin=math.inf, error=math.inf,
        )  # fmt: skip
    n = int(h.size)
    defined_ = np.ones(h.shape, bool) if defined is None else np.broadcast_to(defined, h.shape)
    same_inf = np.isinf(h) & (h == r)  # equal infinities agree (a max over nothing is −inf)
    h_ok = np.isfinite(h) | same_inf
    r_ok = np.isfinite(r) | same_inf
    undefined = ~defined_
    no_ref = defined_ & ~r_ok
    bad_hand = defined_ & r_ok & ~h_ok
    compared = defined_ & r_ok & h_ok
    notes = [note] if note else []
    if undefined.any():
        notes.append(_count(undefined, "undefined at this point (f is not finite)", n)
                     + ": not compared there")  # fmt: skip
    if no_ref.any():
        notes.append(_count(no_ref, f"{ref_name or f'the {oracle} oracle'} is not finite", n)
                     + " where f is: not compared there")  # fmt: skip
    problem = None
    if bad_hand.any():
        kind = "NaN" if np.isnan(h[bad_hand]).any() else "Inf"
        problem = (
            _count(bad_hand, f"{kind} in the hand result", n) + " where the reference is finite"
        )

    hf = np.where(compared & ~same_inf, h, 0.0)
    rf = np.where(compared & ~same_inf, r, 0.0)
    diff = np.abs(hf - rf)
    scale = float(np.max(np.abs(rf), initial=0.0))
    atol_eff = rtol * scale if atol is None else float(atol)
    rel_part = rtol * np.abs(rf)
    allow = np.zeros(h.shape) if allowance is None else np.broadcast_to(
        np.where(np.isfinite(allowance), allowance, 0.0), h.shape).astype(np.float64)  # fmt: skip
    bound = atol_eff + rel_part + allow
    capped = np.zeros(h.shape, bool)
    if cap is not None:
        cap_ = np.broadcast_to(np.asarray(cap, np.float64), h.shape)
        capped = cap_ < bound
        bound = np.where(capped, cap_, bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
        rel = np.where(diff == 0, 0.0, diff / np.abs(rf))
    ratio = np.where(compared, ratio, -1.0)
    norm_r = float(np.linalg.norm(rf))
    norm_d = float(np.linalg.norm(diff))
    norm_rel = 0.0 if norm_d == 0 else (math.inf if norm_r == 0 else norm_d / norm_r)

    if problem is not None:
        worst = int(np.flatnonzero(bad_hand.ravel())[0])
    elif compared.any():
        worst = int(np.argmax(ratio.ravel()))
    else:
        worst = None
    ok = problem is None and bool(np.all(diff[compared] <= bound[compared]))
    status = None
    if problem is None and n and not compared.any():
        status = "undefined"
    if worst is None or status == "undefined":
        index = None if worst is None else tuple(int(i) for i in np.unravel_index(worst, h.shape))
        value = reference = error = bound_w = math.nan
        parts: tuple = ()
        if n == 0:
            error = bound_w = 0.0
    else:
        index = tuple(int(i) for i in np.unravel_index(worst, h.shape))
        value, reference = (
            (complex if complex_ else float)(h.ravel()[worst]),
            (complex if complex_ else float)(r.ravel()[worst]),
        )
        error = float(diff.ravel()[worst]) if problem is None else math.inf
        bound_w = float(bound.ravel()[worst])
        parts = (("rtol·|ref|", float(rel_part.ravel()[worst])), ("atol", atol_eff))
        if allowance is not None:
            parts += ((allowance_name, float(allow.ravel()[worst])),)
        if capped.ravel()[worst]:
            parts += (("cap", bound_w),)
    return Row(
        oracle=oracle,
        path=path,
        shape=shape,
        dtype=dtype,
        method=method,
        n=int(compared.sum()),
        max_abs=float(np.max(diff, initial=0.0)) if problem is None else math.inf,
        max_rel=float(np.max(rel[compared], initial=0.0)) if problem is None else math.inf,
        norm_rel=norm_rel if problem is None else math.inf,
        worst_index=index,
        value=value,
        reference=reference,
        rtol=float(rtol),
        atol=float(atol_eff),
        ok=ok,
        problem=problem,
        note="; ".join(notes) or None,
        order=order,
        margin=math.inf if problem else (float(np.max(ratio, initial=0.0)) if n else 0.0),
        status=status,
        error=error,
        bound=bound_w,
        parts=parts,
        bound_source=source or None,
    )


def _fmt(x: float) -> str:
    return f"{x:.2e}" if isinstance(x, float) and math.isfinite(x) else str(x)


def format_parts(row: Row) -> str:
    """The bound's parts as one string: ``rtol·|ref| 3.0e-05 + atol 1.0e-05 + fd 2.0e-09``."""
    if not row.parts:
        return "-"
    terms = [f"{name} {value:.1e}" for name, value in row.parts if name != "cap"]
    text = " + ".join(terms)
    if any(name == "cap" for name, _ in row.parts):
        text += f", capped at {row.bound:.1e}"
    return text


def _jsonable(obj: Any) -> Any:
    """Non-finite floats become strings ("nan", "inf", "-inf"), tuples lists: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, complex):
        return [_jsonable(obj.real), _jsonable(obj.imag)]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _jsonable(obj.item())
    return obj


COLUMNS = (
    ("oracle", "oracle"),
    ("transform", "transform"),
    ("path", "path"),
    ("shape", "shape"),
    ("dtype", "dtype"),
    ("method", "method"),
    ("max rel", "max_rel"),
    ("worst idx", "worst_index"),
    ("hand", "value"),
    ("oracle value", "reference"),
    ("error", "error"),
    ("bound", "bound"),
    ("bound = …", "parts"),
    ("result", "ok"),
)


def _cell(row: Row, attr: str) -> str:
    v = getattr(row, attr)
    if attr == "ok":
        return row.status
    if attr == "parts":
        return format_parts(row)
    if attr == "shape":
        return "x".join(map(str, v)) or "()"
    if attr == "worst_index":
        return "-" if v is None else ",".join(map(str, v)) or "()"
    if attr in ("value", "reference"):
        return f"{v:.6e}" if cmath.isfinite(v) else str(v)
    return _fmt(v) if isinstance(v, float) else str(v)


def format_rows(rows: Sequence[Row], *, notes: bool = True) -> str:
    """A plain-text table, one line per row; then (``notes``) one line per problem or note and
    one line per distinct bound source."""
    header = [title for title, _ in COLUMNS]
    body = [[_cell(r, attr) for _, attr in COLUMNS] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    if notes:
        for r in rows:
            for label, text in (("problem", r.problem), ("note", r.note)):
                if text:
                    lines.append(f"  {label}: {r.oracle} {r.path}: {text}")
        sources = dict.fromkeys((r.oracle, r.bound_source) for r in rows if r.bound_source)
        for oracle, source in sources:
            lines.append(f"  bound of {oracle}: {source}")
    return "\n".join(lines)


class Failure(NamedTuple):
    """One failing row, as plain fields (:attr:`Report.failures`).

    Attributes:
      check: the report's title.
      oracle: who produced the reference (``rev``, ``fwd``, ``fd``, ``vjp``, …).
      transform: how the hand function ran (``eager``, ``jit``, ``vmap``, …).
      path: the leaf's path.
      index: the deciding element's index in the leaf (for a projection: None), or None.
      error: |hand − ref| at that element (inf for a problem).
      tolerance: the bound it was judged against (``error > tolerance``, or a problem).
      problem: NaN/Inf, shape or dtype mismatch, else None.
    """

    check: str
    oracle: str
    transform: str
    path: str
    index: tuple | None
    error: float
    tolerance: float
    problem: str | None

    @property
    def transformation(self) -> str:
        """The same as :attr:`transform` (the issue's name for the field)."""
        return self.transform


MESSAGE_ROWS = 12
"""Failing rows shown in the table of an AssertionError's message (the report holds them all)."""


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of a verification: every row, never stopped at the first failure.

    Attributes:
      title: what was verified.
      rows: every comparison, grouped by oracle, leaves in tree order within each oracle.
      meta: the reproducible record: seed/key, steps, tolerances, dtypes, device, versions.
      warnings: what the verdicts do not show, one sentence each, printed under the title — e.g.
        that ``rev`` ran a custom rule inside ``loss_fn`` and so compared the rule with itself
        (:mod:`jaxbp.verify.rules_in_loss`). They never fail the report.
    """

    title: str
    rows: tuple[Row, ...]
    meta: dict = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        for row in self.rows:
            if not isinstance(row, Row):
                raise TypeError(f"Report.rows: expected Row records, got {type(row).__name__}")

    @property
    def ok(self) -> bool:
        """True when every row passed (and there was at least one)."""
        return bool(self.rows) and all(r.ok for r in self.rows)

    @property
    def failed(self) -> list[str]:
        """The failing paths, each once, in tree order (whatever oracle caught them)."""
        bad = sorted((r.order, r.path) for r in self.rows if not r.ok)
        seen: list[str] = []
        for _, path in bad:
            if path not in seen:
                seen.append(path)
        return seen

    @property
    def failures(self) -> list[Failure]:
        """Every failing row as a :class:`Failure` record, in row order — for tests to assert on."""
        return [
            Failure(
                check=self.title,
                oracle=r.oracle,
                transform=r.transform,
                path=r.path,
                index=r.worst_index,
                error=r.error,
                tolerance=r.bound,
                problem=r.problem,
            )
            for r in self.rows
            if not r.ok
        ]

    def worst(self, oracle: str | None = None) -> Row | None:
        """The row with the largest norm-relative error (for ``oracle``, or over all rows)."""
        rows = [r for r in self.rows if oracle is None or r.oracle == oracle]
        return max(rows, key=lambda r: (not r.ok, r.norm_rel), default=None)

    def __str__(self) -> str:
        status = "PASS" if self.ok else f"FAIL ({', '.join(self.failed)})"
        lines = [f"{self.title}: {status}", *(f"warning: {w}" for w in self.warnings)]
        lines.append(format_rows(self.rows))
        if self.meta.get("first_divergent"):
            lines.append(f"first divergent layer (from the output): {self.meta['first_divergent']}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready record: ``ok``, ``failed``, the warnings, every row and the metadata."""
        return _jsonable(
            {
                "title": self.title,
                "ok": self.ok,
                "failed": self.failed,
                "warnings": list(self.warnings),
                "rows": [r.to_dict() for r in self.rows],
                "meta": self.meta,
            }
        )

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as strict JSON (non-finite numbers as strings)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def message(self) -> str:
        """The failure message: each failing leaf once with its worst row (error against bound at
        the deciding element, or the problem), then the table of at most :data:`MESSAGE_ROWS`
        failing rows, worst first."""
        if not self.rows:
            return f"{self.title} failed: nothing was compared"
        bad = [r for r in self.rows if not r.ok]
        lines = [f"{self.title} failed at {len(self.failed)} leaf(s): {', '.join(self.failed)}"]
        for path in self.failed:
            rows = sorted((r for r in bad if r.path == path), key=lambda r: -r.margin)
            w = rows[0]
            if w.problem:
                why = w.problem
            else:
                at = "" if w.worst_index is None else f" at {w.worst_index}"
                why = f"error {w.error:.3e} > bound {w.bound:.3e}{at} ({format_parts(w)})"
            also = sorted({r.oracle for r in rows[1:]} - {w.oracle})
            lines.append(f"  {path}: {w.oracle} ({w.transform}): {why}"
                         + (f"; also {', '.join(also)}" if also else ""))  # fmt: skip
        shown = sorted(bad, key=lambda r: -r.margin)[:MESSAGE_ROWS]
        lines.append(format_rows(shown, notes=False))
        if len(bad) > len(shown):
            lines.append(f"(+{len(bad) - len(shown)} more failing rows in the report)")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raises ``AssertionError`` naming every failing leaf once, with its worst row."""
        if self.ok:
            return
        raise AssertionError(self.message())


def environment() -> dict:
    """Device and versions for the reproducible record."""
    import jax

    import jaxbp

    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "jaxbp_version": jaxbp.__version__,
        "x64": bool(jax.config.jax_enable_x64),
    }
