"""What the verifier returns: one :class:`Row` per leaf per oracle, gathered in a :class:`Report`.

A row compares a *hand* array (the gradient, δ or VJP under test) with a *reference* array (an
oracle's answer) elementwise, with the criterion of ``numpy.allclose`` (docs/derivation.md, V1)::

    |hand_i − ref_i| ≤ atol + rtol · |ref_i| (+ noise_i, finite differences only)

where, unless the caller gives ``atol``, the absolute floor scales with the leaf itself,
``atol = rtol · max_i |ref_i|`` — a leaf whose gradient is 1e-9 everywhere is judged on its own
scale, not on the scale of the largest leaf in the tree (the axis ``check_grads`` gets wrong).
Any NaN or Inf, on either side, fails the row and is named with its index.

The rows are never cut short: every leaf of every oracle is compared, and :attr:`Report.failed`
lists every failing path in tree order.
"""

from __future__ import annotations

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


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison: one leaf (or δ, or quantity) against one oracle.

    Attributes:
      oracle: who produced the reference (``rev``, ``fwd``, ``fd``, ``fd-kink``, ``probe``, …).
      path: the leaf's ``jax.tree_util.keystr`` path (``[0].W``), or a quantity's name (``δ[1]``).
      shape: the compared shape (for projections: the leaf's shape).
      dtype: the hand array's dtype.
      method: ``elementwise``, ``N projections``, …
      n: number of compared numbers.
      max_abs: max |hand − ref|.
      max_rel: max |hand − ref| / |ref| (0/0 = 0, x/0 = inf).
      norm_rel: ‖hand − ref‖₂ / ‖ref‖₂.
      worst_index: index of the element nearest to (or furthest past) its tolerance.
      value: hand at ``worst_index``.
      reference: ref at ``worst_index``.
      rtol: the relative tolerance.
      atol: the absolute floor actually used (leaf-scaled unless given).
      ok: whether every element passed and everything was finite.
      problem: why it failed beyond the numbers (NaN/Inf, shape), else ``None``.
      note: extra information (one-sided derivatives at a kink, counts), else ``None``.
      order: position of the leaf in tree order, for :attr:`Report.failed`.
      margin: max over elements of |hand − ref| / tolerance (≤ 1 passes; inf with NaN/Inf).
      transform: how the hand function was run: ``eager``, ``jit``, ``vmap`` (each member of a
        batch of parameter copies against its own eager result), …
      status: ``pass`` / ``FAIL`` from ``ok``, unless set: ``non-smooth`` (finite differences
        found a kink and both one-sided values are in the note; never fails) or
        ``not applicable`` (the oracle cannot run on this function, e.g. forward mode of a
        ``custom_vjp``; the note says why; never fails).
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

    def __post_init__(self):
        if self.status is None:
            object.__setattr__(self, "status", "pass" if self.ok else "FAIL")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        return d


def _nonfinite(values: np.ndarray, who: str) -> str | None:
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    flat = np.flatnonzero(bad.ravel())
    idx = tuple(int(i) for i in np.unravel_index(int(flat[0]), values.shape))
    kind = "NaN" if np.isnan(values.ravel()[flat[0]]) else "Inf"
    return f"{kind} in {who} at {idx} ({flat.size} non-finite of {values.size})"


def compare(
    hand,
    ref,
    *,
    oracle: str,
    path: str,
    rtol: float,
    atol: float | None = None,
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
      method: how ``ref`` was obtained, shown in the table.
      noise: optional per-element extra allowance (finite-difference round-off), same shape.
      shape: the shape to report (defaults to ``hand``'s).
      order: tree-order position.
      note: free text for the table.
      ref_name: how to call the reference side in a NaN/Inf message (default: the oracle).
      dtype: the dtype to report (defaults to ``hand``'s).
    """
    dtype = str(jnp.result_type(hand) if dtype is None else jnp.dtype(dtype))
    h = np.asarray(hand, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    shape = tuple(np.shape(hand)) if shape is None else tuple(shape)
    if h.shape != r.shape:
        return Row(
            oracle, path, shape, dtype, method, int(h.size), math.inf, math.inf, math.inf, None,
            math.nan, math.nan, rtol, math.nan if atol is None else atol, False,
            problem=f"shape {h.shape} differs from the oracle's {r.shape}", note=note, order=order,
            margin=math.inf,
        )  # fmt: skip
    problems = [
        p
        for p in (
            _nonfinite(h, "the hand result"),
            _nonfinite(r, ref_name or f"the {oracle} oracle"),
        )
        if p
    ]
    finite = np.isfinite(h) & np.isfinite(r)
    hf, rf = np.where(finite, h, 0.0), np.where(finite, r, 0.0)
    diff = np.abs(hf - rf)
    scale = float(np.max(np.abs(rf), initial=0.0))
    atol_eff = rtol * scale if atol is None else float(atol)
    tol = atol_eff + rtol * np.abs(rf)
    if noise is not None:
        tol = tol + np.where(finite, np.asarray(noise, np.float64), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(diff == 0, 0.0, diff / tol)
        rel = np.where(diff == 0, 0.0, diff / np.abs(rf))
    if problems:
        worst = int(np.flatnonzero(~finite.ravel())[0])
    elif h.size:
        worst = int(np.argmax(excess.ravel()))
    else:
        worst = None
    norm_r = float(np.linalg.norm(rf))
    norm_d = float(np.linalg.norm(diff))
    norm_rel = 0.0 if norm_d == 0 else (math.inf if norm_r == 0 else norm_d / norm_r)
    ok = not problems and bool(np.all(diff <= tol))
    if worst is None:
        index, value, reference = None, math.nan, math.nan
    else:
        index = tuple(int(i) for i in np.unravel_index(worst, h.shape))
        value, reference = float(h.ravel()[worst]), float(r.ravel()[worst])
    return Row(
        oracle=oracle,
        path=path,
        shape=shape,
        dtype=dtype,
        method=method,
        n=int(h.size),
        max_abs=float(np.max(diff, initial=0.0)) if not problems else math.inf,
        max_rel=float(np.max(rel, initial=0.0)) if not problems else math.inf,
        norm_rel=norm_rel if not problems else math.inf,
        worst_index=index,
        value=value,
        reference=reference,
        rtol=float(rtol),
        atol=float(atol_eff),
        ok=ok,
        problem="; ".join(problems) or None,
        note=note,
        order=order,
        margin=math.inf if problems else float(np.max(excess, initial=0.0)),
    )


def _fmt(x: float) -> str:
    return f"{x:.2e}" if isinstance(x, float) and math.isfinite(x) else str(x)


def _jsonable(obj: Any) -> Any:
    """Non-finite floats become strings ("nan", "inf", "-inf"), tuples lists: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
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
    ("max abs", "max_abs"),
    ("max rel", "max_rel"),
    ("norm rel", "norm_rel"),
    ("worst idx", "worst_index"),
    ("hand", "value"),
    ("oracle value", "reference"),
    ("rtol", "rtol"),
    ("atol", "atol"),
    ("result", "ok"),
)


def _cell(row: Row, attr: str) -> str:
    v = getattr(row, attr)
    if attr == "ok":
        return row.status
    if attr == "shape":
        return "x".join(map(str, v)) or "()"
    if attr == "worst_index":
        return "-" if v is None else ",".join(map(str, v)) or "()"
    if attr in ("value", "reference"):
        return f"{v:.6e}" if math.isfinite(v) else str(v)
    return _fmt(v) if isinstance(v, float) else str(v)


def format_rows(rows: Sequence[Row]) -> str:
    """A plain-text table, one line per row, then one line per problem or note."""
    header = [title for title, _ in COLUMNS]
    body = [[_cell(r, attr) for _, attr in COLUMNS] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    for r in rows:
        for label, text in (("problem", r.problem), ("note", r.note)):
            if text:
                lines.append(f"  {label}: {r.oracle} {r.path}: {text}")
    return "\n".join(lines)


class Failure(NamedTuple):
    """One failing row, as plain fields (:attr:`Report.failures`).

    Attributes:
      check: the report's title.
      oracle: who produced the reference (``rev``, ``fwd``, ``fd``, ``vjp``, …).
      transform: how the hand function ran (``eager``, ``jit``, ``vmap``, …).
      path: the leaf's path.
      index: the worst element's index in the leaf (for a projection: None), or None.
      error: max |hand − ref| over the row.
      tolerance: the tolerance at the worst element.
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


@dataclasses.dataclass(frozen=True)
class Report:
    """The result of a verification: every row, never stopped at the first failure.

    Attributes:
      title: what was verified.
      rows: every comparison, grouped by oracle, leaves in tree order within each oracle.
      meta: the reproducible record: seed/key, steps, tolerances, dtypes, device, versions.
      warnings: what the verdicts do not show, one sentence each, printed under the title — e.g.
        that ``rev`` ran a custom rule inside ``loss_fn`` and so compared the rule with itself
        (:mod:`jaxbp.verify.custom_rules`). They never fail the report.
    """

    title: str
    rows: tuple[Row, ...]
    meta: dict = dataclasses.field(default_factory=dict)
    warnings: tuple[str, ...] = ()

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
                error=r.max_abs,
                tolerance=r.atol + r.rtol * abs(r.reference)
                if math.isfinite(r.reference)
                else math.nan,
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

    def raise_if_failed(self) -> None:
        """Raises ``AssertionError`` naming every failing leaf and why."""
        if self.ok:
            return
        details = []
        table = format_rows([r for r in self.rows if not r.ok])
        for path in self.failed:
            rows = [r for r in self.rows if r.path == path and not r.ok]
            why = "; ".join(
                f"{r.oracle}: " + (r.problem or f"max abs {r.max_abs:.3e} at {r.worst_index}")
                for r in rows
            )
            details.append(f"{path} ({why})")
        if not self.rows:
            details.append("nothing was compared")
        raise AssertionError(
            f"{self.title} failed at {len(details)} leaf(s): " + "; ".join(details) + "\n" + table
        )


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
