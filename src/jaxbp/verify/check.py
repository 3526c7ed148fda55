"""``jaxbp.verify.check``: any hand-written gradient against reverse mode, forward mode and finite
differences, and under ``jit`` and ``vmap``, leaf by leaf, never stopping at the first failure.

Example:
  >>> import jax, jax.numpy as jnp, jaxbp
  >>> from jaxbp import verify
  >>> params = jaxbp.init_params(jax.random.key(0), [4, 5, 3], dtype=jnp.float64)
  >>> x, y = jnp.ones((8, 4)), jnp.zeros(8, jnp.int32)
  >>> report = verify.check(jaxbp.value_and_grad, jaxbp.cost, params, x, y)
  >>> report.ok, report.failed
  (True, [])

**Budget.** Every directional oracle (fwd, fd) runs in one compiled program whose cost is known
before it runs: XLA's cost analysis of one loss evaluation times the evaluations per direction.
With ``fd_budget="auto"`` every coordinate is checked while that stays under
:data:`~jaxbp.verify.oracles.FD_FLOP_BUDGET`; above it, each leaf gets the coordinates of its
largest hand value and of its largest disagreement with rev, random coordinates up to its share
of the budget (rows name the element), and :data:`~jaxbp.verify.oracles.DEFAULT_PROJECTIONS`
random unit directions over the whole leaf.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import oracles, rounding, rules_in_loss, select, tolerance
from jaxbp.verify import transforms as tf
from jaxbp.verify.directions import FDOptions, Reference, directional_rows
from jaxbp.verify.hand import State, leaf_problem, parse_gradient
from jaxbp.verify.report import Report, Row, compare, environment, fail

MODES = ("rev", "fwd", "fd")
"""The oracles: reverse mode, forward mode, finite differences."""

_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


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


def _closed(fn: Callable, args: tuple):
    """``(fn', dynamic)`` with ``fn'(tree, *dynamic) == fn(tree, *args)``: the arguments that are
    not arrays (an activation's name, an int, a callable, None, a dataclass) closed over, as
    ``jax.grad`` passes them through; only array leaves are traced."""
    dynamic, spec = oracles.split_args(args)

    def closed(tree, *dyn):
        return fn(tree, *oracles.join_args(dyn, spec))

    closed.__name__ = getattr(fn, "__name__", "fn")
    return closed, dynamic


def _check_loss(loss_fn, tree, args):
    """The loss's output as a ShapeDtypeStruct and its jaxpr (one trace); errors that name
    ``loss_fn`` otherwise."""
    fn, dynamic = _closed(loss_fn, args)
    try:
        jaxpr, out = jax.make_jaxpr(fn, return_shape=True)(tree, *dynamic)
    except _TRACE_ERRORS as e:
        raise TypeError(
            f"loss_fn: cannot be traced by JAX ({tf.first_line(e)}); check differentiates it with "
            "jax.grad and jax.jvp, so it must be written in jax.numpy (no float(), np.asarray or "
            "Python branches on array values)"
        ) from None
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"loss_fn: returned {jax.tree.structure(out)}; it must return one scalar")
    if out.shape != ():
        raise ValueError(
            f"loss_fn: returned shape {out.shape} (dtype {out.dtype}); it must return a scalar "
            "(per-example losses? take their mean)"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"loss_fn: returned dtype {out.dtype}; it must return a floating scalar")
    return out, jaxpr


def _options(fd_budget, n_projections, fd_step, kinks, grad_fn, loss_fn):
    if not callable(grad_fn):
        raise TypeError(f"grad_fn: expected a callable grad_fn(params, *args), got {grad_fn!r}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable loss_fn(params, *args), got {loss_fn!r}")
    if kinks is not None and not callable(kinks):
        raise TypeError(
            "kinks: expected a callable kinks(params, *args) -> pytree of the pre-activations of "
            f"kinked units, got {type(kinks).__name__} {kinks!r}"
        )
    if fd_budget != "auto" and fd_budget is not None:
        if isinstance(fd_budget, bool) or not isinstance(fd_budget, int) or fd_budget < 0:
            raise ValueError(
                f"fd_budget: expected 'auto', an integer ≥ 0 or None, got {fd_budget!r}"
            )
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: expected an integer ≥ 1, got {n_projections!r}")
    if fd_step is not None and not isinstance(fd_step, Mapping):
        if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float)) or not fd_step > 0:
            raise ValueError(f"fd_step: expected a step > 0 or {{path: step}}, got {fd_step!r}")


def _kinks_output_checked(kinks, tree, args):
    fn, dynamic = _closed(kinks, args)
    try:
        out = jax.eval_shape(fn, tree, *dynamic)
    except _TRACE_ERRORS as e:
        raise TypeError(f"kinks: cannot be traced by JAX ({tf.first_line(e)})") from None
    for leaf in jax.tree.leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"kinks: returned a leaf of dtype {leaf.dtype}; expected float arrays")
    if not jax.tree.leaves(out):
        raise TypeError("kinks: returned no arrays; expected the pre-activations of kinked units")


def _custom_rule_notes(rows, rules, modes) -> tuple[list[Row], tuple[str, ...]]:
    """``rows`` with a note on each rev / fwd row whose oracle ran one of ``rules`` (the custom
    rules inside loss_fn, :mod:`jaxbp.verify.rules_in_loss`), and the report's warning if any did.
    Verdicts are left as they are."""
    if not any(rules_in_loss.affected(rules, m) for m in modes):
        return rows, ()
    out = []
    for r in rows:
        note = rules_in_loss.row_note(rules, r.oracle)
        if note and r.status != "not applicable":
            r = dataclasses.replace(r, note=f"{r.note}; {note}" if r.note else note)
        out.append(r)
    return out, (rules_in_loss.report_warning(rules, modes),)


def _up(tree, spread):
    """``tree`` as the oracles see it: one precision up from the dtype the hand is judged in (a
    16-bit leaf judged in float32 goes to float64 through float32)."""
    if spread is not None and spread.up is not None:
        tree = rounding.upcast_half(tree)
    return tolerance.upcast(tree)


def _low_precision(state, half, grad_c, loss_c, tree, rest, treedef, leaves, checked, idx, rng):
    """The 16-bit leaves' error model (:mod:`jaxbp.verify.rounding`): measures their rounding
    spread and, where grad_fn runs cleanly one precision up, makes that float32 result what the
    oracle rows judge; sets the leaves' allowances and notes on ``state``."""
    layout = oracles.make_layout(
        treedef, leaves, checked,
        [tolerance.reference_dtype(jnp.result_type(leaves[i])) if c else
         (jnp.result_type(leaves[i]) if hasattr(leaves[i], "dtype") else "float32")
         for i, c in enumerate(checked)],
    )  # fmt: skip

    def oracle(t, *args):  # rev one precision up from 16 bits (float32): traced inside lax.map
        flat = [tolerance.upcast(leaf) for leaf in jax.tree.leaves(t)]
        theta = jnp.concatenate([flat[i].ravel() for i in idx])
        fixed = tuple(flat[i] for i, c in enumerate(checked) if not c)
        g = jax.grad(lambda th: loss_c(layout.unflatten(th, fixed), *tolerance.upcast(args)))(theta)
        return [g[layout.segment(i)].reshape(np.shape(leaves[i])) for i in idx]

    spread = rounding.measure(grad_c, tree, rest, treedef, idx, rng=rng, oracle=oracle)
    position = {i: k for k, i in enumerate(idx)}
    for i in half:
        k = position[i]
        source = rounding.describe(spread, state.dtypes[i], np.size(leaves[i]))
        state.allowance[i] = (rounding.allowance(spread.spread[k], spread.n), source)
        if spread.up is not None:
            state.hand[i] = spread.up[k]
            state.oracle_note[i] = (f"hand evaluated in float32 (its {state.dtypes[i]} rounding "
                                    "is judged in the rounding row)")  # fmt: skip
        else:
            state.oracle_note[i] = f"{state.dtypes[i]} hand against the oracle: {spread.reason}"
    state.oracle_allowance = spread.up is None
    return spread


def _rounding_rows(state, spread, half, idx, leaves, rtol_of) -> list[Row]:
    """One ``rounding`` row per 16-bit leaf: the systematic part of its error against the
    reference, and that part's standard error (:mod:`jaxbp.verify.rounding`)."""
    position = {i: k for k, i in enumerate(idx)}
    against = "float32" if spread.up is not None else "the oracle"
    rows = []
    for i in half:
        k = position[i]
        path = state.paths[i]
        given = rtol_of("rounding", path)
        rtol = tolerance.default_rtol(state.dtypes[i], "rounding") if given is None else given
        atol = state.atol_of("rounding", path)
        allowance = None
        if atol is None:
            allowance = rounding.systematic_allowance(spread.standard_error[k], spread.n)
        ref = spread.ref[k]
        hand = np.where(np.isfinite(spread.low[k]), ref + spread.systematic[k], spread.low[k])
        row = compare(hand, ref, oracle="rounding", path=path, rtol=rtol, atol=atol,
                      allowance=allowance, allowance_name="rounding",
                      bound_source=rounding.describe(spread, state.dtypes[i], np.size(leaves[i]),
                                                     systematic=True),
                      method=f"{state.dtypes[i]} − {against}: systematic part, {spread.n} points",
                      shape=np.shape(leaves[i]), order=i, dtype=state.dtypes[i],
                      ref_name=f"the {against} evaluation")  # fmt: skip
        if not state.usable[i]:
            row = fail(row, "no usable hand values (see the grad_fn row)")
        rows.append(row)
    return rows


def check(
    grad_fn: Callable,
    loss_fn: Callable,
    params,
    *args,
    modes: Sequence[str] = MODES,
    transforms: Sequence[str] = tf.TRANSFORMS,
    wrt=None,
    rtol: float | Mapping | None = None,
    atol: float | Mapping | None = None,
    key=None,
    raise_on_fail: bool = False,
    fd_budget: int | str | None = oracles.DEFAULT_FD_BUDGET,
    fd_step: float | Mapping | None = None,
    n_projections: int = oracles.DEFAULT_PROJECTIONS,
    kinks: Callable | None = None,
    title: str = "gradient check",
) -> Report:
    """Checks ``grad_fn`` against autodiff and finite differences of ``loss_fn``, leaf by leaf.

    Args:
      grad_fn: ``grad_fn(params, *args)`` → grads (structure of ``params``) or ``(value, grads)``.
      loss_fn: ``loss_fn(params, *args)`` → the scalar whose gradient ``grad_fn`` claims to be.
      params: any pytree; floating leaves are checked, integer / bool / key leaves held fixed.
      *args: passed to both functions (arrays are traced, other values static).
      modes: any of ``"rev"`` (``jax.grad``, V2), ``"fwd"`` (``jax.jvp``, V3), ``"fd"`` (the
        finite-difference ladder of :mod:`jaxbp.verify.fd`, V4). All run in the reference
        precision (one precision above each leaf, :mod:`jaxbp.verify.tolerance`).
      transforms: also run ``grad_fn`` under ``"jit"`` and ``"vmap"`` (a batch of distinct
        parameter copies), each compared with its eager result (:mod:`jaxbp.verify.transforms`);
        ``()`` for none.
      wrt: which leaves are checked (:mod:`jaxbp.verify.select`): argnums, a predicate on paths,
        a mask, or both.
      rtol, atol: a number, ``{oracle: number}`` (oracles ``rev fwd fd value jit vmap``),
        ``{path: number}`` or ``{oracle: {path: number}}``; ``None``: the parameter dtype's
        default, ``atol = rtol · max |reference|`` per leaf (docs/verify.md, "Error model").
      key: PRNG key or int seed for the directions and copies (default seed 0).
      raise_on_fail: raise ``AssertionError`` with the failing rows' table instead of returning.
      fd_budget: ``"auto"`` (module docstring, "Budget"), the number of coordinates checked in
        total, or ``None`` for every coordinate.
      fd_step: the ladder's base step h — one number, or ``{path: step}``; default relative to
        each leaf's scale.
      n_projections: random unit directions per leaf not covered coordinate by coordinate.
      kinks: optional ``kinks(params, *args)`` → pytree of pre-activations of kinked units; the
        step is kept short of them (V9). Kinks are also found without it (:mod:`jaxbp.verify.fd`).
      title: the report's title.

    Returns:
      A :class:`~jaxbp.verify.Report`: one row per checked leaf per oracle and transformation
      (plus ``(value)`` rows when ``grad_fn`` returns a value); ``meta["seconds"]`` has the cost.
      When ``loss_fn`` carries a custom_vjp / custom_jvp rule defined outside JAX (``jaxbp.loss``),
      the rev (and for a custom_jvp the fwd) rows say so in their note and ``warnings`` names the
      rule: those oracles ran it; only fd is independent of it (:mod:`jaxbp.verify.rules_in_loss`).

    Warns:
      CustomRuleWarning: such a rule was found and ``modes`` has no ``"fd"``, so nothing independent
      of the rule checked the gradient (verdicts are unchanged).

    Raises:
      ValueError / TypeError: a bad argument, named — a non-scalar or untraceable ``loss_fn``, a
      ``grad_fn`` result of the wrong structure, a bad option.
      AssertionError: with ``raise_on_fail=True``, when any row fails.
    """
    started = time.perf_counter()
    _options(fd_budget, n_projections, fd_step, kinks, grad_fn, loss_fn)
    modes = _check_modes(modes)
    transforms = tf.check_transforms_arg(transforms)
    key, key_record = oracles.resolve_key(key)
    rng = oracles.host_rng(key)

    argnums, selector = select.split_wrt(wrt)
    tree, rest, loss_c, grad_c, *nums = select.combine(loss_fn, grad_fn, params, args, argnums)
    nums = nums[0] if nums else None
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not with_path:
        raise ValueError("params: the tree has no leaves to check")
    leaves = [leaf for _, leaf in with_path]
    paths = select.display_paths([kp for kp, _ in with_path], nums)
    for p, leaf in zip(paths, leaves, strict=True):
        if isinstance(leaf, (jax.Array, np.ndarray)) and jnp.iscomplexobj(leaf):
            raise TypeError(
                f"params: leaf {p} is complex ({leaf.dtype}); check compares real gradients — use "
                "jaxbp.verify.check_grads or check_vjp for complex functions"
            )
    checked, skipped = select.resolve(selector, tree, [kp for kp, _ in with_path], paths)
    if not any(checked):
        raise ValueError(
            "params: no floating-point leaf to check"
            + (
                f" (left out: {', '.join(f'{p} ({w})' for p, w in skipped.items())})"
                if skipped
                else ""
            )
        )
    idx = [i for i, c in enumerate(checked) if c]
    dtypes = {i: str(jnp.result_type(leaves[i])) for i in idx}
    rtol_of = select.tolerance_for(rtol, "rtol", paths, checked)
    atol_of = select.tolerance_for(atol, "atol", paths, checked)
    if isinstance(fd_step, Mapping):
        bad = [p for p in fd_step if p not in {paths[i] for i in idx}]
        if bad:
            raise ValueError(f"fd_step: unknown leaf path(s) {bad!r}")
    _, loss_jaxpr = _check_loss(loss_c, tree, rest)
    if kinks is not None:
        _kinks_output_checked(kinks, *((tree, rest) if argnums is None else (params, args)))
    judged = dict(dtypes)  # the dtype each leaf's oracle rows judge in (float32 for a 16-bit one)

    def rtol_for(oracle, i):
        given = rtol_of(oracle, paths[i])
        if given is not None:
            return given
        return tolerance.default_rtol(judged[i] if oracle in State.ORACLES else dtypes[i])

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    value, raw = parse_gradient(grad_c(tree, *rest), treedef)
    seconds["grad_fn"] = time.perf_counter() - t0
    hand, problems = {}, {}
    for i in idx:
        hand[i], problems[i] = leaf_problem(raw[i], leaves[i])
    usable = {i: hand[i] is not None for i in idx}
    for i in idx:
        if hand[i] is None:
            hand[i] = np.zeros(np.shape(leaves[i]))
    value_dtype = str(jnp.result_type(*[dtypes[i] for i in idx]))

    state = State(paths=paths, dtypes=dtypes, idx=idx, hand=dict(hand), usable=usable,
                  rtol_for=rtol_for, atol_of=atol_of, low=hand)  # fmt: skip
    rows: list[Row] = [
        Row("grad_fn", paths[i], tuple(np.shape(leaves[i])), dtypes[i], "dtype and shape", 0,
            math.inf, math.inf, math.inf, None, math.nan, math.nan, math.nan, math.nan, False,
            problem=problems[i], order=i, error=math.inf)
        for i in idx if problems[i]
    ]  # fmt: skip

    half = [i for i in idx if rounding.is_half(dtypes[i])]
    spread = None
    if half:
        t0 = time.perf_counter()
        spread = _low_precision(state, half, grad_c, loss_c, tree, rest, treedef, leaves, checked,
                                idx, oracles.host_rng(key, stream=2))  # fmt: skip
        seconds["rounding"] = time.perf_counter() - t0
        for i in half:
            judged[i] = "float32" if spread.up is not None else dtypes[i]

    # The transformations need nothing from the oracles, so they run in a second thread: their
    # compilations (XLA compiles on one core) overlap the oracles'. JAX's configuration is
    # thread-local, so grad_fn runs there under the caller's settings, never the reference's.
    transform_copies_rng = oracles.host_rng(key, stream=1)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    pending = transforms and pool.submit(
        tf.transform_rows, state, grad_c, tree, rest, treedef, value, leaves, checked, transforms,
        transform_copies_rng,
    )  # fmt: skip

    ref_dtypes = [judged[i] for i in idx]
    meta_fd: dict = {}
    with tolerance.reference_precision(ref_dtypes):
        eval_dtypes = [
            tolerance.reference_dtype(judged[i]) if c else None for i, c in enumerate(checked)
        ]
        layout = oracles.make_layout(
            treedef, leaves, checked,
            [d if d is not None else jnp.result_type(leaf) if hasattr(leaf, "dtype") else "float32"
             for d, leaf in zip(eval_dtypes, leaves, strict=True)],
        )  # fmt: skip
        # built on the host and placed with device_put (no conversion kernel compiled per shape)
        theta = jax.device_put(
            np.concatenate([np.asarray(leaves[i]).astype(layout.flat_dtype).ravel() for i in idx])
        )
        fixed = tuple(_up(leaves[i], spread) for i, c in enumerate(checked) if not c)
        rest_ref = _up(rest, spread)
        ref_tree = jax.tree_util.tree_unflatten(treedef, [_up(x, spread) for x in leaves])
        eval_dtype = _check_loss(loss_c, ref_tree, rest_ref)[0].dtype
        eval_eps = tolerance.eps(eval_dtype)
        hand_flat = np.concatenate([state.hand[i].ravel() for i in idx])

        directional = "fwd" in modes or "fd" in modes
        flops, compiling = None, None
        if directional:
            # the directional program's shape is known before rev runs (how many directions, not
            # which): it compiles in the other thread while rev compiles and runs here
            flops = oracles.flops_per_evaluation(loss_c, layout, theta, fixed, rest_ref)
            sizes = {i: int(np.size(leaves[i])) for i in idx}
            count = oracles.direction_count(sizes, fd_budget, flops, n_projections)
            compiling = pool.submit(
                oracles.precompile, ref_dtypes, loss_c, layout, theta, fixed, rest_ref, count,
                fwd="fwd" in modes, kinks=kinks if argnums is None else None,
            )  # fmt: skip

        g_rev, j_ref = None, None
        if "rev" in modes or value is not None or directional:
            t0 = time.perf_counter()
            j_ref, g_rev = oracles.rev(loss_c, layout, theta, fixed, rest_ref)
            seconds["rev"] = time.perf_counter() - t0
        state.defined = j_ref is None or bool(np.isfinite(j_ref))
        if "rev" in modes:
            for i in idx:
                ref = g_rev[layout.segment(i)].reshape(np.shape(leaves[i]))
                rows.append(state.row(state.hand[i], ref, "rev", i, shape=np.shape(leaves[i]),
                                      ref_name="jax.grad"))  # fmt: skip
        if value is not None:
            given = rtol_of("value", "(value)")
            vt = tolerance.default_rtol(value_dtype) if given is None else given
            rows.insert(0, compare(value, j_ref, oracle="loss_fn", path="(value)",
                                   method="scalar", rtol=vt, atol=atol_of("value", "(value)"),
                                   order=-1, dtype=jnp.result_type(value),
                                   defined=np.asarray(state.defined)))  # fmt: skip

        if directional:
            t0 = time.perf_counter()
            compiling.result()  # never compile the same program twice at once
            ref = Reference(loss_c, layout, theta, fixed, rest_ref, hand_flat, g_rev, j_ref,
                             eval_dtype, eval_eps)  # fmt: skip
            opts = FDOptions(modes, fd_budget, fd_step, n_projections,
                              kinks if argnums is None else None, rng, flops)  # fmt: skip
            dir_rows, meta_fd = directional_rows(state, ref, opts, leaves)
            rows += dir_rows
            seconds["directions"] = time.perf_counter() - t0

    if half:
        rows += _rounding_rows(state, spread, half, idx, leaves, rtol_of)
    if pending:
        t_rows, t_seconds = pending.result()
        rows += t_rows
        seconds.update(t_seconds)
    pool.shutdown()
    seconds["total"] = time.perf_counter() - started

    meta = {
        **key_record,
        "modes": list(modes),
        "transforms": list(transforms),
        "checked": [paths[i] for i in idx],
        "skipped": skipped,
        "dtypes": {paths[i]: dtypes[i] for i in idx},
        "judged_in": {paths[i]: judged[i] for i in idx},
        "reference_dtypes": {paths[i]: str(eval_dtypes[i]) for i in idx},
        "loss_evaluated_in": str(eval_dtype),
        "tolerances": {
            "rtol": "given"
            if rtol is not None
            else {d: tolerance.default_rtol(d) for d in sorted(set(judged.values()))},
            "atol": "given" if atol is not None else "rtol * max|reference| per leaf",
            "fd": "rtol + measured truncation and round-off per direction (jaxbp.verify.fd)",
            "rounding": None
            if spread is None
            else "jaxbp.verify.rounding: Z standard errors "
            "of the fitted systematic part (rounding row), √2·Z residual spreads (others)",
        },  # fmt: skip
        "low_precision": None
        if spread is None
        else {
            "leaves": [paths[i] for i in half],
            "reference": spread.reference,
            "reason": spread.reason,
            "samples": rounding.SAMPLES,
            "perturbation": rounding.PERTURBATION,
            "false_alarm": rounding.FALSE_ALARM,
        },
        "fd": meta_fd or None,
        "n_projections": n_projections,
        "kinks_watched": kinks is not None,
        "seconds": seconds,
        **environment(),
    }
    rows, report_warnings = _custom_rule_notes(rows, rules_in_loss.custom_rules(loss_jaxpr), modes)
    if not state.defined:
        report_warnings += (f"loss_fn is not finite at the point ({j_ref}): f is undefined there, "
                            "so the oracle rows compared nothing",)  # fmt: skip
    if report_warnings and "fd" not in modes:
        warnings.warn(rules_in_loss.CustomRuleWarning(report_warnings[0]), stacklevel=2)
    report = Report(title, tuple(rows), meta, warnings=report_warnings)
    if raise_on_fail:
        report.raise_if_failed()
    return report
