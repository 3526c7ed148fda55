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
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import fd, oracles, select, tolerance
from jaxbp.verify import transforms as tf
from jaxbp.verify.report import Report, Row, compare, environment

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


def parse_gradient(out, treedef, name: str = "grad_fn", value_ndim: int = 0):
    """``(value or None, grads leaves)`` from what a gradient function returned.

    Accepted: the grads tree (the structure of the parameters; a leaf may be anything, it is
    judged in its own row), or ``(value, grads)`` with a scalar value.

    Raises:
      TypeError: any other structure, naming both; ValueError: a value that is not a scalar.
    """
    if jax.tree.structure(out) == treedef:
        return None, treedef.flatten_up_to(out)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        try:
            leaves = treedef.flatten_up_to(out[1])
        except (ValueError, TypeError):
            leaves = None
        if leaves is not None:
            if np.ndim(out[0]) != value_ndim:
                raise ValueError(
                    f"{name}: returned (value, grads) with a value of shape {np.shape(out[0])}; "
                    "the value must be a scalar (for shape (1,), index it or use jnp.squeeze)"
                )
            return out[0], leaves
    try:
        return None, treedef.flatten_up_to(out)
    except (ValueError, TypeError):
        pass
    raise TypeError(
        f"{name}: returned a tree of structure {jax.tree.structure(out)}; expected the structure "
        f"of the parameters, {treedef}, or a pair (value, grads)"
    )


def hand_gradient(grad_fn: Callable, params, args: tuple):
    """Calls ``grad_fn(params, *args)`` → ``(value or None, grads tree)`` (see :func:`parse_gradient`)."""
    treedef = jax.tree.structure(params)
    value, leaves = parse_gradient(grad_fn(params, *args), treedef)
    return value, jax.tree_util.tree_unflatten(treedef, leaves)


def _leaf_problem(raw, param) -> tuple[np.ndarray | None, str | None]:
    """The hand leaf as float64 of the parameter's shape, and what is wrong with it (or None)."""
    p_shape, p_dtype = tuple(np.shape(param)), jnp.result_type(param)
    if raw is None:
        return None, f"grad_fn returned None; expected a {p_dtype} array of shape {p_shape}"
    if isinstance(raw, (bool, int, float, complex)):
        return None, (
            f"grad_fn returned a Python {type(raw).__name__} ({raw!r}); expected a {p_dtype} array "
            f"of shape {p_shape}"
        )
    try:
        dtype = jnp.result_type(raw)
        shape = tuple(np.shape(raw))
    except TypeError:
        return None, f"grad_fn returned {type(raw).__name__}; expected a {p_dtype} array"
    if not jnp.issubdtype(dtype, jnp.floating):
        return None, f"grad_fn returned dtype {dtype} (shape {shape}); expected {p_dtype} {p_shape}"
    if shape != p_shape:
        return None, f"grad_fn returned shape {shape}, the parameter has shape {p_shape}"
    values = np.asarray(raw, np.float64)
    if dtype != p_dtype:
        return values, f"grad_fn returned dtype {dtype}, the parameter has dtype {p_dtype}"
    return values, None


def _check_loss(loss_fn, tree, args):
    """The loss's output as a ShapeDtypeStruct; errors that name ``loss_fn`` otherwise."""
    try:
        out = jax.eval_shape(loss_fn, tree, *args)
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
    return out


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
    try:
        out = jax.eval_shape(kinks, tree, *args)
    except _TRACE_ERRORS as e:
        raise TypeError(f"kinks: cannot be traced by JAX ({tf.first_line(e)})") from None
    for leaf in jax.tree.leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"kinks: returned a leaf of dtype {leaf.dtype}; expected float arrays")
    if not jax.tree.leaves(out):
        raise TypeError("kinks: returned no arrays; expected the pre-activations of kinked units")


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
    _check_loss(loss_c, tree, rest)
    if kinks is not None:
        _kinks_output_checked(kinks, *((tree, rest) if argnums is None else (params, args)))

    def rtol_for(oracle, i):
        given = rtol_of(oracle, paths[i])
        return tolerance.default_rtol(dtypes[i]) if given is None else given

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    value, raw = parse_gradient(grad_c(tree, *rest), treedef)
    seconds["grad_fn"] = time.perf_counter() - t0
    hand, problems = {}, {}
    for i in idx:
        hand[i], problems[i] = _leaf_problem(raw[i], leaves[i])
    usable = {i: hand[i] is not None for i in idx}
    for i in idx:
        if hand[i] is None:
            hand[i] = np.zeros(np.shape(leaves[i]))
    value_dtype = str(jnp.result_type(*[dtypes[i] for i in idx]))

    state = _State(paths=paths, dtypes=dtypes, idx=idx, hand=hand, usable=usable,
                   rtol_for=rtol_for, atol_of=atol_of)  # fmt: skip
    rows: list[Row] = [
        Row("grad_fn", paths[i], tuple(np.shape(leaves[i])), dtypes[i], "dtype and shape", 0,
            math.inf, math.inf, math.inf, None, math.nan, math.nan, math.nan, math.nan, False,
            problem=problems[i], order=i)
        for i in idx if problems[i]
    ]  # fmt: skip

    # The transformations need nothing from the oracles, so they run in a second thread: their
    # compilations (XLA compiles on one core) overlap the oracles'. JAX's configuration is
    # thread-local, so grad_fn runs there under the caller's settings, never the reference's.
    transform_copies_rng = oracles.host_rng(key, stream=1)
    pool = concurrent.futures.ThreadPoolExecutor(1) if transforms else None
    pending = pool and pool.submit(
        _transform_rows, state, grad_c, tree, rest, treedef, value, leaves, checked, transforms,
        transform_copies_rng,
    )  # fmt: skip

    ref_dtypes = [dtypes[i] for i in idx]
    meta_fd: dict = {}
    with tolerance.reference_precision(ref_dtypes):
        eval_dtypes = [
            tolerance.reference_dtype(jnp.result_type(leaf)) if c else None
            for leaf, c in zip(leaves, checked, strict=True)
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
        fixed = tuple(tolerance.upcast(leaves[i]) for i, c in enumerate(checked) if not c)
        rest_ref = tolerance.upcast(rest)
        ref_tree = jax.tree_util.tree_unflatten(treedef, [tolerance.upcast(x) for x in leaves])
        eval_dtype = _check_loss(loss_c, ref_tree, rest_ref).dtype
        eval_eps = tolerance.eps(eval_dtype)
        hand_flat = np.concatenate([hand[i].ravel() for i in idx])

        g_rev, j_ref = None, None
        if "rev" in modes or value is not None or "fd" in modes or "fwd" in modes:
            t0 = time.perf_counter()
            j_ref, g_rev = oracles.rev(loss_c, layout, theta, fixed, rest_ref)
            seconds["rev"] = time.perf_counter() - t0
        if "rev" in modes:
            for i in idx:
                ref = g_rev[layout.segment(i)].reshape(np.shape(leaves[i]))
                rows.append(state.row(hand[i], ref, "rev", i, shape=np.shape(leaves[i])))
        if value is not None:
            given = rtol_of("value", "(value)")
            vt = tolerance.default_rtol(value_dtype) if given is None else given
            rows.insert(0, compare(value, j_ref, oracle="loss_fn", path="(value)",
                                   method="scalar", rtol=vt, atol=atol_of("value", "(value)"),
                                   order=-1, dtype=jnp.result_type(value)))  # fmt: skip

        if "fwd" in modes or "fd" in modes:
            t0 = time.perf_counter()
            ref = _Reference(loss_c, layout, theta, fixed, rest_ref, hand_flat, g_rev, j_ref,
                             eval_dtype, eval_eps)  # fmt: skip
            opts = _FDOptions(modes, fd_budget, fd_step, n_projections,
                              kinks if argnums is None else None, rng)  # fmt: skip
            dir_rows, meta_fd = _directional_rows(state, ref, opts, leaves)
            rows += dir_rows
            seconds["directions"] = time.perf_counter() - t0

    if pending is not None:
        t_rows, t_seconds = pending.result()
        pool.shutdown()
        rows += t_rows
        seconds.update(t_seconds)
    seconds["total"] = time.perf_counter() - started

    meta = {
        **key_record,
        "modes": list(modes),
        "transforms": list(transforms),
        "checked": [paths[i] for i in idx],
        "skipped": skipped,
        "dtypes": {paths[i]: dtypes[i] for i in idx},
        "reference_dtypes": {paths[i]: str(eval_dtypes[i]) for i in idx},
        "loss_evaluated_in": str(eval_dtype),
        "tolerances": {
            "rtol": "given"
            if rtol is not None
            else {d: tolerance.default_rtol(d) for d in sorted(set(ref_dtypes))},
            "atol": "given" if atol is not None else "rtol * max|reference| per leaf",
            "fd": "rtol + measured truncation and round-off per direction (jaxbp.verify.fd)",
        },  # fmt: skip
        "fd": meta_fd or None,
        "n_projections": n_projections,
        "kinks_watched": kinks is not None,
        "seconds": seconds,
        **environment(),
    }
    report = Report(title, tuple(rows), meta)
    if raise_on_fail:
        report.raise_if_failed()
    return report


@dataclasses.dataclass
class _State:
    """What every row of one check needs: the leaves' names, dtypes, hand values, tolerances."""

    paths: tuple
    dtypes: dict
    idx: list
    hand: dict
    usable: dict
    rtol_for: Callable
    atol_of: Callable

    def row(self, hand, ref, oracle, i, *, transform="eager", tol_key=None, atol=None,
            **kw) -> Row:  # fmt: skip
        """compare() with this leaf's tolerances; ``atol`` is the default floor (None: leaf-scaled)."""
        key = tol_key or oracle
        given = self.atol_of(key, self.paths[i])
        row = compare(
            hand,
            ref,
            oracle=oracle,
            path=self.paths[i],
            rtol=self.rtol_for(key, i),
            atol=atol if given is None else given,
            order=i,
            dtype=self.dtypes[i],
            **kw,
        )
        row = dataclasses.replace(row, transform=transform)
        if not self.usable[i]:
            row = dataclasses.replace(
                row, ok=False, status="FAIL", margin=math.inf,
                problem="no usable hand values (see the grad_fn row)",
            )  # fmt: skip
        return row


def _leaf_scales(leaves, checked) -> list[float]:
    rms = np.array([
        float(np.sqrt(np.mean(np.asarray(leaf, np.float64) ** 2))) if c and np.size(leaf) else 0.0
        for leaf, c in zip(leaves, checked, strict=True)
    ])  # fmt: skip
    return list(fd.scales(rms))


class _Reference(NamedTuple):
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


class _FDOptions(NamedTuple):
    modes: tuple
    budget: object
    step: object
    n_projections: int
    kinks: Callable | None
    rng: np.random.Generator


def _directional_rows(state: _State, ref: _Reference, opts: _FDOptions, leaves) -> tuple:
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
    flops = oracles.flops_per_evaluation(ref.loss, layout, ref.theta, ref.fixed, ref.args)
    plan = oracles.plan(sizes, opts.budget, flops=flops, n_projections=opts.n_projections,
                        rng=rng, priority=priority)  # fmt: skip
    scales = dict(zip(range(len(leaves)), _leaf_scales(leaves, layout.checked), strict=True))
    steps = {}
    for i in idx:
        if isinstance(fd_step, Mapping) and state.paths[i] in fd_step:
            steps[i] = float(fd_step[state.paths[i]])
        elif fd_step is not None and not isinstance(fd_step, Mapping):
            steps[i] = float(fd_step)
        else:
            steps[i] = float(fd.base_step(scales[i], ref.eval_dtype))
    key_shape = oracles.key_data_shape()
    kind, index, start, stop, keys, step, owner, elem = [], [], [], [], [], [], [], []
    for i in idx:
        off = layout.offsets[i]
        for c in plan.coordinates[i]:
            kind.append(0), index.append(off + int(c)), start.append(off + int(c))
            stop.append(off + int(c) + 1), keys.append(np.zeros(key_shape, np.uint32))
            step.append(steps[i]), owner.append(i), elem.append(int(c))
        for _ in range(plan.projections[i]):
            kind.append(1), index.append(0), start.append(off), stop.append(layout.offsets[i + 1])
            keys.append(rng.integers(0, 2**32, size=key_shape, dtype=np.uint32))
            step.append(steps[i]), owner.append(i), elem.append(-1)
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
    dirs = oracles.Directions(*(np.asarray(a) for a in (kind, index, start, stop, keys, step)))
    fwd_ok, fwd_note = "fwd" in modes, None

    def run(fwd):
        return oracles.directional(ref.loss, layout, ref.theta, ref.fixed, ref.args,
                                   ref.hand_flat, dirs, ref.value, fwd=fwd, kinks=kinks)  # fmt: skip

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
                rows += _judged(state, oracle, i, sel, k, method, shape, scale, vals, verdict, elem)
    return rows, meta


def _judged(state, oracle, i, sel, kind, method, shape, scale, vals, verdict, elem) -> list[Row]:
    """The row of one leaf's coordinates or projections for one oracle (+ a non-smooth row)."""
    rtol = state.rtol_for(oracle, i)
    atol = rtol * scale
    hand_v = vals.hand[sel]
    out = []
    if oracle == "fwd":
        ref, noise, keep = vals.tangent[sel], None, np.ones(int(sel.sum()), bool)
    else:
        keep = verdict.smooth[sel]
        ref = hand_v + verdict.error[sel]
        # the measured truncation and round-off belong to the default tolerance; a given atol
        # is taken as it is
        given = state.atol_of("fd", state.paths[i]) is not None
        noise = np.zeros(int(sel.sum())) if given else verdict.allowance[sel]
    elements = elem[sel]
    row = state.row(hand_v[keep], ref[keep], oracle, i, method=method, shape=shape, atol=atol,
                    noise=None if noise is None else noise[keep])  # fmt: skip
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
    central = verdict.central[sel][~keep]
    row = compare(hand_v, central, oracle="fd", path=state.paths[i], rtol=state.rtol_for("fd", i),
                  method=f"{len(fm)} non-smooth", shape=shape, order=i, dtype=state.dtypes[i])  # fmt: skip
    row = _named(row, els, shape, kind)
    return dataclasses.replace(row, ok=True, status="non-smooth", margin=0.0,
                               note="non-smooth at this point — " + "; ".join(parts) + more)  # fmt: skip


def _transform_rows(state, grad_c, tree, rest, treedef, value, leaves, checked, transforms,
                    rng) -> tuple[list[Row], dict]:  # fmt: skip
    rows, seconds = [], {}
    if "jit" in transforms:
        t0 = time.perf_counter()
        rows += _jit_rows(state, grad_c, tree, rest, treedef, value)
        seconds["jit"] = time.perf_counter() - t0
    if "vmap" in transforms:
        t0 = time.perf_counter()
        scales = _leaf_scales(leaves, checked)
        rows += _vmap_rows(state, grad_c, leaves, checked, scales, treedef, rest, rng)
        seconds["vmap"] = time.perf_counter() - t0
    return rows, seconds


def _jit_rows(state, grad_c, tree, rest, treedef, value) -> list[Row]:
    try:
        out = tf.run_jit(grad_c, tree, rest)
        v_jit, raw = parse_gradient(out, treedef, "grad_fn under jit")
    except Exception as e:  # noqa: BLE001 — the user's grad_fn failing under jit is a verdict
        return [_broken("jit", e)]
    rows = []
    if value is not None and v_jit is not None:
        given = state.rtol_for("jit", state.idx[0])
        rows.append(dataclasses.replace(
            compare(v_jit, value, oracle="eager", path="(value)", method="scalar", rtol=given,
                    order=-1), transform="jit"))  # fmt: skip
    for i in state.idx:
        if not state.usable[i]:
            continue
        got, problem = _leaf_problem(raw[i], np.zeros(state.hand[i].shape, state.dtypes[i]))
        ref = state.hand[i]
        row = state.row(got if got is not None else np.full(ref.shape, np.nan), ref, "eager", i,
                        transform="jit", tol_key="jit")  # fmt: skip
        if problem:
            row = dataclasses.replace(row, ok=False, status="FAIL", problem=f"under jit: {problem}")
        rows.append(row)
    return rows


def _vmap_rows(state, grad_c, leaves, checked, scales, treedef, rest, rng) -> list[Row]:
    copies = tf.copies(rng, leaves, checked, scales, tf.VMAP_SIZE)
    eager = []
    for c in copies:
        _, raw = parse_gradient(grad_c(jax.tree_util.tree_unflatten(treedef, c), *rest), treedef)
        eager.append(raw)
    try:
        _, batched = parse_gradient(tf.run_vmap(grad_c, treedef, copies, rest), treedef,
                                    "grad_fn under vmap", value_ndim=1)  # fmt: skip
    except Exception as e:  # noqa: BLE001 — the user's grad_fn failing under vmap is a verdict
        return [_broken("vmap", e)]
    rows = []
    for i in state.idx:
        if not state.usable[i]:
            continue
        ref = np.stack([np.asarray(e[i], np.float64) for e in eager])
        got = batched[i]
        if got is None or tuple(np.shape(got)) != ref.shape:
            row = state.row(np.full(ref.shape, np.nan), ref, "eager", i, transform="vmap",
                            tol_key="vmap", method=f"{tf.VMAP_SIZE} copies")  # fmt: skip
            rows.append(dataclasses.replace(row, problem=f"under vmap: grad_fn returned shape "
                                            f"{np.shape(got)}, expected {ref.shape}"))  # fmt: skip
            continue
        rows.append(state.row(np.asarray(got, np.float64), ref, "eager", i, transform="vmap",
                              tol_key="vmap", method=f"{tf.VMAP_SIZE} copies"))  # fmt: skip
    return rows


def _broken(transform: str, e: BaseException) -> Row:
    return Row("eager", "(grad_fn)", (), "-", "call", 0, math.inf, math.inf, math.inf, None,
               math.nan, math.nan, math.nan, math.nan, False, transform=transform,
               problem=f"grad_fn failed under {transform}: {tf.first_line(e)}")  # fmt: skip
