"""``jaxbp.verify.check``: any hand-written gradient against reverse mode, forward mode and finite
differences, leaf by leaf, never stopping at the first failure.

Example:
  >>> import jax, jax.numpy as jnp, jaxbp
  >>> from jaxbp import verify
  >>> params = jaxbp.init_params(jax.random.key(0), [4, 5, 3], dtype=jnp.float64)
  >>> x, y = jnp.ones((8, 4)), jnp.zeros(8, jnp.int32)
  >>> report = verify.check(jaxbp.value_and_grad, jaxbp.cost, params, x, y)
  >>> report.ok, report.failed
  (True, [])
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import kinks as kinks_mod
from jaxbp.verify import oracles
from jaxbp.verify.report import Report, Row, compare, default_rtol, environment

MODES = ("rev", "fwd", "fd")
"""The oracles: reverse mode, forward mode, central finite differences."""

_KIND = {"rev": "analytic", "fwd": "analytic", "fd": "fd"}


def _check_modes(modes) -> tuple[str, ...]:
    if isinstance(modes, str):
        modes = tuple(m.strip() for m in modes.split(","))
    modes = tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(
            f"modes: unknown mode(s) {bad or modes!r}; valid modes are {', '.join(MODES)}"
        )
    return tuple(dict.fromkeys(modes))


def _per_mode(value, name: str, modes) -> dict:
    """A float for every mode, a {mode: float} mapping, or None (dtype defaults)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        bad = [m for m in value if m not in (*MODES, "value")]
        if bad:
            raise ValueError(
                f"{name}: unknown mode(s) {bad!r} in the mapping; valid keys are "
                f"{', '.join((*MODES, 'value'))}"
            )
        out = dict(value)
    else:
        out = {m: value for m in (*modes, "value")}
    for m, v in out.items():
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name}: expected a number ≥ 0 for {m!r}, got {v!r}")
    return {m: None if v is None else float(v) for m, v in out.items()}


def hand_gradient(grad_fn: Callable, params, args: tuple):
    """Calls ``grad_fn`` and returns ``(value or None, grads)``.

    ``grad_fn`` may return the grads tree (same structure as ``params``) or ``(value, grads)``.

    Raises:
      TypeError: the result is neither, naming both structures.
    """
    out = grad_fn(params, *args)
    treedef = jax.tree.structure(params)
    if jax.tree.structure(out) == treedef:
        return None, out
    if (
        isinstance(out, (tuple, list))
        and len(out) == 2
        and jax.tree.structure(out[1]) == treedef
        and jnp.ndim(out[0]) == 0
    ):
        return out[0], out[1]
    raise TypeError(
        f"grad_fn: returned a tree of structure {jax.tree.structure(out)}; expected the structure "
        f"of params, {treedef}, or a pair (value, grads)"
    )


def _rtol(rtols: dict, mode: str, dtype) -> float:
    given = rtols.get(mode)
    return default_rtol(dtype, _KIND.get(mode, "analytic")) if given is None else given


def check(
    grad_fn: Callable,
    loss_fn: Callable,
    params,
    *args,
    modes: Sequence[str] = MODES,
    rtol: float | Mapping | None = None,
    atol: float | Mapping | None = None,
    key=None,
    raise_on_fail: bool = False,
    fd_budget: int | None = oracles.DEFAULT_FD_BUDGET,
    n_projections: int = oracles.DEFAULT_PROJECTIONS,
    kinks: Callable | None = None,
    title: str = "gradient check",
) -> Report:
    """Checks ``grad_fn`` against autodiff and finite differences of ``loss_fn``, leaf by leaf.

    Args:
      grad_fn: ``grad_fn(params, *args)`` → grads (structure of ``params``) or ``(value, grads)``.
      loss_fn: ``loss_fn(params, *args)`` → the scalar whose gradient ``grad_fn`` claims to be.
      params: any pytree of floating-point arrays.
      *args: passed to both functions (arrays are traced, other values static).
      modes: any of ``"rev"`` (``jax.grad``, V2), ``"fwd"`` (``jax.jvp`` along basis / random
        directions, V3), ``"fd"`` (central differences, V4).
      rtol: one relative tolerance, or ``{mode: rtol}`` (also key ``"value"``); ``None`` uses the
        dtype's default (docs/derivation.md, tolerance table).
      atol: one absolute tolerance, or a mapping; ``None`` scales it with each leaf:
        ``rtol · max |reference|`` (plus the round-off allowance for fd, V5).
      key: PRNG key or int seed for the projection directions (default seed 0).
      raise_on_fail: raise ``AssertionError`` naming every failing leaf instead of returning a
        failing report.
      fd_budget: parameters checked elementwise by fwd and fd; above it the largest leaves are
        checked along ``n_projections`` random unit directions each. ``None``: no limit.
      n_projections: random directions per projected leaf.
      kinks: optional ``kinks(params, *args)`` → pytree of pre-activations of kinked units
        (relu, leaky_relu); fd directions that move one of them across zero are reported apart
        (``fd-kink`` rows, V9).
      title: the report's title.

    Returns:
      A :class:`~jaxbp.verify.Report` with one row per leaf per oracle (plus a ``(value)`` row
      when ``grad_fn`` returns a value).

    Raises:
      ValueError / TypeError: bad modes, tolerances, key, params or ``grad_fn`` result.
      AssertionError: with ``raise_on_fail=True``, when any row fails.
    """
    modes = _check_modes(modes)
    rtols, atols = _per_mode(rtol, "rtol", modes), _per_mode(atol, "atol", modes)
    if fd_budget is not None and (not isinstance(fd_budget, int) or fd_budget < 0):
        raise ValueError(f"fd_budget: expected an integer ≥ 0 or None, got {fd_budget!r}")
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: expected an integer ≥ 1, got {n_projections!r}")
    key, key_record = oracles.resolve_key(key)
    rng = oracles.host_rng(key)
    layout, paths, theta_host = oracles.layout_of(params)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    value, grads = hand_gradient(grad_fn, params, args)
    hand = [np.asarray(g) for g in jax.tree.leaves(grads)]
    # A leaf of the wrong shape fails every oracle's row (below); zeros stand in meanwhile.
    misshapen = {i: h.shape for i, h in enumerate(hand) if h.shape != layout.shapes[i]}
    for i in misshapen:
        hand[i] = np.zeros(layout.shapes[i], hand[i].dtype)
    hand64 = [np.asarray(g, np.float64) for g in hand]
    seconds["grad_fn"] = time.perf_counter() - t0

    rows: list[Row] = []
    ref_value = None
    if "rev" in modes:
        t0 = time.perf_counter()
        ref_value, ref = oracles.rev(loss_fn, params, args)
        for i, (path, g, r) in enumerate(zip(paths, hand, jax.tree.leaves(ref), strict=True)):
            rows.append(
                compare(g, r, oracle="rev", path=path, rtol=_rtol(rtols, "rev", g.dtype),
                        atol=atols.get("rev"), order=i)
            )  # fmt: skip
        seconds["rev"] = time.perf_counter() - t0
    if value is not None:
        if ref_value is None:
            ref_value = loss_fn(params, *args)
        dtype = jnp.result_type(value)
        rows.insert(
            0,
            compare(value, ref_value, oracle="loss_fn", path="(value)", method="scalar",
                    rtol=_rtol(rtols, "value", dtype), atol=atols.get("value"), order=-1),
        )  # fmt: skip

    elementwise = oracles.plan([int(h.size) for h in hand], fd_budget)
    theta = jnp.asarray(theta_host, layout.flat_dtype)
    meta_fd: dict = {"elementwise": [], "projected": [], "steps": {}}
    for i, path in enumerate(paths):
        meta_fd["elementwise" if elementwise[i] else "projected"].append(path)
    directions = {
        i: oracles.projections(rng, int(hand[i].size), n_projections)
        for i in range(len(paths))
        if not elementwise[i]
    }
    if "fwd" in modes:
        t0 = time.perf_counter()
        rows += _fwd_rows(loss_fn, layout, paths, theta, args, hand, hand64, elementwise,
                          directions, rtols, atols)  # fmt: skip
        seconds["fwd"] = time.perf_counter() - t0
    if "fd" in modes:
        t0 = time.perf_counter()
        rows += _fd_rows(loss_fn, layout, paths, theta_host, theta, args, hand, hand64,
                         elementwise, directions, rtols, atols, kinks, meta_fd, n_projections)  # fmt: skip
        seconds["fd"] = time.perf_counter() - t0

    for k, row in enumerate(rows):
        if row.order in misshapen and row.path == paths[row.order]:
            rows[k] = dataclasses.replace(
                row, ok=False, margin=math.inf, max_abs=math.inf, max_rel=math.inf,
                norm_rel=math.inf, worst_index=None, value=math.nan,
                problem=f"grad_fn returned shape {misshapen[row.order]}, the parameter has "
                f"shape {layout.shapes[row.order]}",
            )  # fmt: skip
    meta = {
        **key_record,
        "modes": list(modes),
        "fd_budget": fd_budget,
        "n_projections": n_projections,
        "dtypes": dict(zip(paths, layout.dtypes, strict=True)),
        "tolerances": {
            m: {
                "rtol": rtols[m]
                if rtols.get(m) is not None
                else {d: default_rtol(d, _KIND[m]) for d in sorted(set(layout.dtypes))},
                "atol": atols[m]
                if atols.get(m) is not None
                else "rtol * max|reference| per leaf"
                + (" + fd round-off allowance" if m == "fd" else ""),
            }
            for m in modes
        },
        "fd": meta_fd if "fd" in modes else None,
        "kinks_watched": kinks is not None,
        "seconds": seconds,
        **environment(),
    }
    report = Report(title, tuple(rows), meta)
    if raise_on_fail:
        report.raise_if_failed()
    return report


def _fwd_rows(loss_fn, layout, paths, theta, args, hand, hand64, elementwise, directions, rtols,
              atols) -> list[Row]:  # fmt: skip
    """fwd (V3): elementwise jvps for the leaves under budget, projections for the rest."""
    rows: list[Row | None] = [None] * len(paths)
    idx = np.concatenate(
        [
            np.arange(layout.offsets[i], layout.offsets[i + 1])
            for i, e in enumerate(elementwise)
            if e
        ]
        or [np.zeros(0, np.int64)]
    )
    basis = oracles.fwd_basis(loss_fn, layout, theta, args, idx) if idx.size else np.zeros(0)
    cursor = 0
    for i, path in enumerate(paths):
        dtype = hand[i].dtype
        rtol = _rtol(rtols, "fwd", dtype)
        if elementwise[i]:
            n = hand[i].size
            ref = basis[cursor : cursor + n].reshape(hand[i].shape)
            cursor += n
            rows[i] = compare(hand[i], ref, oracle="fwd", path=path, rtol=rtol,
                              atol=atols.get("fwd"), order=i)  # fmt: skip
        else:
            tangents = oracles.rounded(directions[i], layout.flat_dtype)
            ref = oracles.fwd_segment(loss_fn, layout, theta, args, layout.offsets[i], tangents)
            rows[i] = compare(tangents @ hand64[i].ravel(), ref, oracle="fwd", path=path,
                              rtol=rtol, atol=atols.get("fwd"), method=f"{len(ref)} projections",
                              shape=hand[i].shape, order=i, dtype=dtype)  # fmt: skip
    return rows  # type: ignore[return-value]


def _fd_rows(loss_fn, layout, paths, theta_host, theta, args, hand, hand64, elementwise,
             directions, rtols, atols, kinks, meta_fd, n_projections) -> list[Row]:  # fmt: skip
    """fd (V4, V5, V9): central differences, kink directions reported apart."""
    steps = {
        i: oracles.step_size(
            theta_host[layout.offsets[i] : layout.offsets[i + 1]], layout.dtypes[i]
        )
        for i in range(len(paths))
    }
    meta_fd["steps"] = {paths[i]: h for i, h in steps.items()}
    idx_parts, plus_parts, minus_parts = [], [], []
    for i, e in enumerate(elementwise):
        if e:
            seg = theta_host[layout.offsets[i] : layout.offsets[i + 1]]
            idx_parts.append(np.arange(layout.offsets[i], layout.offsets[i + 1]))
            plus_parts.append(oracles.rounded(seg + steps[i], layout.dtypes[i]))
            minus_parts.append(oracles.rounded(seg - steps[i], layout.dtypes[i]))
    basis = None
    if idx_parts:
        basis = oracles.fd_basis(
            loss_fn, layout, theta, args, np.concatenate(idx_parts),
            np.concatenate(plus_parts), np.concatenate(minus_parts), kinks,
        )  # fmt: skip
        plus_all, minus_all = np.concatenate(plus_parts), np.concatenate(minus_parts)
    rows: list[Row] = []
    kink_rows: list[Row] = []
    cursor = 0
    for i, path in enumerate(paths):
        dtype = hand[i].dtype
        rtol, atol = _rtol(rtols, "fd", dtype), atols.get("fd")
        n = hand[i].size
        if elementwise[i]:
            sl = slice(cursor, cursor + n)
            cursor += n
            values = oracles.FDValues(basis.j0, basis.j_plus[sl], basis.j_minus[sl],
                                      basis.near_kink[sl], basis.ratio[sl])  # fmt: skip
            den = plus_all[sl] - minus_all[sl]
            hand_vals = hand64[i].ravel()
            method = "elementwise"
            index_of = [tuple(int(k) for k in np.unravel_index(j, hand[i].shape)) for j in
                        np.flatnonzero(values.near_kink)]  # fmt: skip
        else:
            seg = theta_host[layout.offsets[i] : layout.offsets[i + 1]]
            h = steps[i]
            s_plus = oracles.rounded(seg + h * directions[i], layout.dtypes[i])
            s_minus = oracles.rounded(seg - h * directions[i], layout.dtypes[i])
            values = oracles.fd_segment(loss_fn, layout, theta, args, layout.offsets[i],
                                        s_plus, s_minus, kinks)  # fmt: skip
            den = np.full(n_projections, 2 * h)
            # the hand side along the perturbation as represented in the dtype
            hand_vals = (s_plus - s_minus) @ hand64[i].ravel() / den
            method = f"{n_projections} projections"
            index_of = [(int(k),) for k in np.flatnonzero(values.near_kink)]
        d = (values.j_plus - values.j_minus) / den
        # the round-off allowance belongs to the default tolerance; a given atol is taken as is
        noise = oracles.fd_noise(values, den, dtype) if atol is None else np.zeros_like(d)
        sides = values.near_kink.astype(np.int32)
        near = sides > 0
        ref = np.where(near, hand_vals, d)  # kink directions are judged in the fd-kink row
        row_atol = atol
        if atol is None and near.any():
            row_atol = rtol * float(np.max(np.abs(d[~near]), initial=0.0))
        shape = hand[i].shape
        if elementwise[i]:
            rows.append(compare(hand[i], ref.reshape(shape), oracle="fd", path=path, rtol=rtol,
                                atol=row_atol, noise=noise.reshape(shape), order=i,
                                note=f"{int(near.sum())} kink direction(s) in the fd-kink row"
                                if near.any() else None))  # fmt: skip
        else:
            rows.append(compare(hand_vals, ref, oracle="fd", path=path, rtol=rtol, atol=row_atol,
                                noise=noise, method=method, shape=shape, order=i, dtype=dtype,
                                note=f"{int(near.sum())} kink direction(s) in the fd-kink row"
                                if near.any() else None))  # fmt: skip
        if near.any():
            d_minus, d_plus = kinks_mod.one_sided(
                values.j0, values.j_plus[near], values.j_minus[near], den[near]
            )
            small = _small_steps(loss_fn, layout, theta_host, theta, args, i, elementwise[i],
                                 np.flatnonzero(near), values.ratio[near], steps[i],
                                 directions.get(i), hand64[i].ravel(), dtype)  # fmt: skip
            if atol is not None:
                small = small._replace(noise=np.zeros_like(small.noise))
            hand_near = np.where(np.isfinite(small.d), small.hand, hand_vals[near])
            kink_rows.append(
                kinks_mod.kink_row(path=path, hand=hand_near, d_minus=d_minus, d_plus=d_plus,
                                   sides=sides[near], small=small, indices=index_of,
                                   noise=noise[near], rtol=rtol, atol=row_atol, dtype=dtype,
                                   shape=shape, method=method, order=i)
            )  # fmt: skip
    return rows + kink_rows


def _small_steps(loss_fn, layout, theta_host, theta, args, i, elementwise, sel, ratio, h,
                 directions, hand_flat, dtype) -> kinks_mod.SmallStep:  # fmt: skip
    """Central differences again for the kink directions ``sel`` of leaf i, each with its step
    scaled by KINK_STEP_FRACTION · ratio so that it reaches no kink (V9); NaN where z = 0."""
    leaf_dtype = layout.dtypes[i]
    start = layout.offsets[i]
    factor = np.minimum(kinks_mod.KINK_STEP_FRACTION * ratio, 1.0)
    usable = factor > 0
    d = np.full(len(sel), np.nan)
    noise = np.full(len(sel), np.nan)
    hand = np.full(len(sel), np.nan)
    if usable.any():
        h_small = h * factor[usable]
        if elementwise:
            seg = theta_host[start + sel[usable]]
            plus, minus = (
                oracles.rounded(seg + h_small, leaf_dtype),
                oracles.rounded(seg - h_small, leaf_dtype),
            )
            values = oracles.fd_basis(loss_fn, layout, theta, args, start + sel[usable], plus,
                                      minus)  # fmt: skip
            den = plus - minus
            hand_u = hand_flat[sel[usable]]
        else:
            seg = theta_host[start : start + hand_flat.size]
            v = directions[sel[usable]] * h_small[:, None]
            plus = oracles.rounded(seg + v, leaf_dtype)
            minus = oracles.rounded(seg - v, leaf_dtype)
            values = oracles.fd_segment(loss_fn, layout, theta, args, start, plus, minus)
            den = 2 * h_small
            hand_u = (plus - minus) @ hand_flat / den
        ok = den != 0
        d_u = np.where(ok, (values.j_plus - values.j_minus) / np.where(ok, den, 1), np.nan)
        noise_u = np.where(ok, oracles.fd_noise(values, np.where(ok, den, 1), dtype), np.nan)
        d[usable], noise[usable], hand[usable] = d_u, noise_u, hand_u
    return kinks_mod.SmallStep(d=d, noise=noise, hand=hand, factor=factor)
