"""``jaxbp.verify.check_grads``: a drop-in for ``jax.test_util.check_grads``, leaf by leaf, never
less strict than it.

Same signature and meaning as JAX's::

    check_grads(f, args, order=1, modes=("fwd", "rev"), atol=None, rtol=None, eps=None)

so a suite can swap one import and keep passing; each check is also made **per input leaf** (the
tangent supported on that leaf only) and a failure names the leaf by its path in ``args``
(``args[0]['b']``, ``args[1]``) with its worst row. :func:`check_grads_report` takes the same
arguments and returns the :class:`~jaxbp.verify.report.Report` instead of raising.

What is compared, at each level of JAX's recursion (the level's name is the oracle column):

- ``fwd`` (and ``lin``, as JAX's): for every inexact leaf k and every inexact output leaf, the
  JVP ``J t_k`` (``jax.jvp``, resp. ``jax.linearize``, in the arguments' own precision) against
  the finite difference along the same tangent, elementwise; and, where there is more than one
  inexact leaf, JAX's own comparison — the JVP along the whole tangent ``t`` — as the row
  ``(all leaves)``.
- ``rev``: the VJP by the dot-product identity ``⟨t_k, Jᵀc⟩ = ⟨fd(t_k), c⟩`` per leaf (one
  ``jax.vjp`` gives ``Jᵀc`` for every leaf), and JAX's own ``⟨t, Jᵀc⟩ = ⟨fd(t), c⟩`` as
  ``(all leaves)``.
- ``primal``: the primal output of ``jax.jvp`` / ``jax.vjp`` against ``f(*args)``, per output leaf.
- ``order ≥ 2``: JAX's recursion, unchanged: the forward branch checks
  ``(primals, tangents) ↦ jax.jvp(f, primals, tangents)`` at ``(args, args)`` (its tangent leaves
  are named ``tangent(args[0]['b'])``), the reverse branch ``args ↦ vjp_f(f(*args))``; the oracle
  column reads ``fwd of jvp``, ``rev of vjp of jvp``, …

**The reference.** As in JAX the tangents and cotangents are ``rand_like`` draws from
``np.random.RandomState(0)`` and the step is ``eps · t`` (``eps`` defaults to JAX's ``1e-4``).
Unlike JAX, f is evaluated in the **reference precision** (float32 arguments in float64, 16-bit
in float32; :func:`~jaxbp.verify.tolerance.reference_precision`), at the steps ``eps`` and
``eps/2``, and Richardson-extrapolated by :func:`jaxbp.verify.fd.central`, whose measured
truncation and round-off — the latter with the epsilon of the dtype the differences were
actually computed in — are the row's ``fd`` allowance. Where f cannot run on upcast arguments (a
closed-over constant of the original dtype, an explicit ``out_dtype``) or the backend has no
float64, the difference is taken in the arguments' own precision, as JAX's, and the bound source
says so.

**The bound, never looser than JAX's.** Each element must satisfy
``|hand − ref| ≤ min(atol + rtol·|ref| + fd, size · (atol + rtol·|ref|))``: ``atol`` and
``rtol`` are JAX's (a float, or a ``{dtype: tol}`` dict merged into JAX's defaults — float32 2e-3,
float64 1e-5, bfloat16 1e-1, float16 1e-2, complex64 1e-3, complex128 1e-5, restated in
:mod:`jaxbp.verify.tolerance`), the dtype the compared output's; ``size`` is the number of
elements of the compared output, the factor JAX applies (``_assert_numpy_close``). The cap is
JAX's own criterion, so a row is never looser than ``check_grads`` at the same ``eps``, and the
``(all leaves)`` rows are JAX's comparisons themselves with a reference at least as accurate:
whenever JAX's check fails on a real error, ours fails. Per leaf and per element ours is stricter:
a 1 % error in a small leaf, or in one element of a large output, fails here and can pass JAX's.

**Undefined points and non-finite values.** Where ``f(*args)`` itself is NaN or infinite at an
output element, that element is undefined at this point and not compared (JAX's
``assert_allclose`` passes NaN against NaN there); a row with nothing left to compare is
``undefined`` and never fails. The ``rev`` inner products leave such outputs out (the cotangent
is zeroed there); where the VJP is still not finite — its zero cotangent times an undefined local
derivative — the row is ``undefined`` too. NaN in a derivative where f and the reference are
finite fails, naming the element. Equal infinities agree.

**custom_vjp**: forward mode of a ``jax.custom_vjp`` function does not exist; instead of crashing,
its ``fwd`` / ``lin`` rows are ``not applicable`` (they never fail; the note says why), and its
``rev`` rows are checked against the finite difference as always. For ``order ≥ 2`` the forward
branch of such a level cannot be formed, so it is skipped; the reverse branch
``args ↦ vjp_f(f(*args))`` is an ordinary function of the rule's fwd and bwd and is checked in
every requested mode, as deep as ``order``.

**Evaluation**: per level, one program computes every leaf's JVP (a loop over leaves; the other
leaves held fixed, so their tangents are symbolic zeros; where one of JAX's rules cannot take a
symbolic zero — ``lax.reduce`` of a tuple in jax 0.10.2 — every leaf gets an explicit zero
tangent, as in JAX's check), one the VJP, and one every leaf's finite-difference stencil
(``jax.vmap`` over the four points of :data:`jaxbp.verify.fd.OFFSETS`). At or above
:data:`JIT_MIN_SIZE` numbers the programs are jitted; below it they run eagerly, op by op, like
JAX's own check (JAX caches each primitive's executable per shape, which for the small arrays of
a unit test is several times faster than compiling three programs per level). A function that
cannot be traced under ``jit`` or batched falls back to the eager path.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import fd, tolerance
from jaxbp.verify.report import Report, compare, environment, fail, status_row

EPS = 1e-4
"""JAX's default finite-difference step, along a standard-normal tangent."""

MODES = ("fwd", "rev", "lin")
"""The modes JAX's ``check_grads`` knows."""

ALL_LEAVES = "(all leaves)"
"""The path of the rows that compare along the whole tangent, as JAX's check does."""

CUSTOM_VJP_NOTE = "not applicable (custom_vjp): forward mode of a custom_vjp function"

_CUSTOM_VJP_MESSAGE = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"

JIT_MIN_SIZE = 4096
"""Below this many numbers (inexact argument and output elements together) a level of the check
runs eagerly, op by op, as JAX's does: compiling its three programs would cost more than running
them. At and above it, the programs are jitted."""

_NUMPY_DEFAULT_RTOL = 1e-7
"""What ``np.testing.assert_allclose`` uses when JAX's check passes it ``rtol=0`` (it drops it)."""

_PYTHON_SCALAR_DTYPES = {
    bool: np.dtype(bool),
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
}


def check_grads(f, args, order=1, modes=("fwd", "rev"), atol=None, rtol=None, eps=None) -> None:
    """Checks the derivatives of ``f`` at ``args`` leaf by leaf; a drop-in for JAX's.

    Args:
      f: the function, ``f(*args)`` returning any pytree.
      args: tuple of arguments (pytrees); inexact leaves are checked, the others held fixed.
      order: derivatives up to this order are checked (JAX's recursion).
      modes: any of ``"fwd"``, ``"rev"``, ``"lin"``.
      atol: absolute tolerance: a float, or a ``{dtype: tol}`` dict merged into JAX's defaults.
      rtol: relative tolerance, likewise.
      eps: the finite-difference step (along a standard-normal tangent); default ``1e-4``.

    Returns:
      None.

    Raises:
      AssertionError: naming every failing leaf once with its worst row, then a short table.
      TypeError / ValueError: a bad argument, named.
    """
    check_grads_report(f, args, order, modes, atol, rtol, eps).raise_if_failed()


def _tolerance_arg(value, name: str):
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float or a {{dtype: tol}} dict, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite tolerance ≥ 0, got {value!r}")
    return float(value)


def _arguments(f, args, order, modes, atol, rtol, eps):
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__} {f!r}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"args: expected a tuple of arguments, got {type(args).__name__}; "
            "write check_grads(f, (x,), ...) for one argument"
        )
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order: expected an integer ≥ 1, got {order!r}")
    if isinstance(modes, str):
        modes = (modes,)
    modes = tuple(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes: unknown mode(s) {bad or modes!r}; valid modes are "
                         f"{', '.join(MODES)}")  # fmt: skip
    if eps is not None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
            raise TypeError(f"eps: expected a step > 0, got {eps!r}")
        if not eps > 0 or not np.isfinite(eps):
            raise ValueError(f"eps: expected a finite step > 0, got {eps!r}")
    return (tuple(args), int(order), modes, _tolerance_arg(atol, "atol"),
            _tolerance_arg(rtol, "rtol"), float(eps) if eps else EPS)  # fmt: skip


def check_grads_report(
    f, args, order=1, modes=("fwd", "rev"), atol=None, rtol=None, eps=None
) -> Report:
    """:func:`check_grads`, returning the :class:`Report` (one row per leaf per check) instead of
    raising."""
    args, order, modes, atol_, rtol_, eps = _arguments(f, args, order, modes, atol, rtol, eps)
    ctx = _Context(
        modes=modes,
        atol=tolerance.jax_tolerance_table(atol_),
        rtol=tolerance.jax_tolerance_table(rtol_),
        eps=eps,
    )
    paths, _ = jax.tree_util.tree_flatten_with_path(args)
    names = [f"args[{p[0].idx}]" + jax.tree_util.keystr(tuple(p[1:])) for p, _ in paths]
    _check_level(f, args, names, order, "", ctx)
    name = getattr(f, "__name__", type(f).__name__)
    meta = {
        "order": order,
        "modes": list(modes),
        "eps": eps,
        "atol": repr(atol),
        "rtol": repr(rtol),
        "tangents": "rand_like draws from np.random.RandomState(0), as JAX's",
        "fd": "central differences at eps and eps/2, Richardson-extrapolated (jaxbp.verify.fd)",
        "bound": "min(atol + rtol·|ref| + fd, size·(atol + rtol·|ref|)): never looser than JAX's",
        "reference": ctx.references,
        **environment(),
    }
    return Report(f"check_grads({name}, order={order})", tuple(ctx.rows), meta)


class _Context:
    def __init__(self, modes, atol, rtol, eps):
        self.modes = modes
        self.atol = atol
        self.rtol = rtol
        self.eps = eps
        self.rows: list = []
        self.references: dict[str, str] = {}

    def tols(self, *dtypes) -> tuple[float, float]:
        """JAX's ``(atol, rtol)`` for a comparison of arrays of ``dtypes`` (the largest)."""
        atol = max(tolerance.jax_tolerance(d, self.atol) for d in dtypes)
        rtol = max(tolerance.jax_tolerance(d, self.rtol) for d in dtypes)
        return atol, rtol or _NUMPY_DEFAULT_RTOL


# ------------------------------------------------------------------------------------------------
# Leaves


def _dtype(x) -> np.dtype:
    """JAX's dtype of a leaf (a Python scalar's default dtype), canonicalized."""
    if hasattr(x, "dtype"):
        dtype = np.dtype(x.dtype)
    elif type(x) in _PYTHON_SCALAR_DTYPES:
        dtype = _PYTHON_SCALAR_DTYPES[type(x)]
    else:
        dtype = np.asarray(x).dtype
    return jax.dtypes.canonicalize_dtype(dtype)


def _is_inexact(x) -> bool:
    try:
        return jnp.issubdtype(_dtype(x), jnp.inexact)
    except TypeError:
        return False


def _is_scalar(x) -> bool:
    return not isinstance(x, np.generic) and isinstance(x, (bool, int, float, complex))


def _rand_like(rng: np.random.RandomState, x):
    """JAX's ``rand_like``: standard normal draws of ``x``'s shape and dtype (complex: re + i·im);
    a Python scalar stays one."""
    shape, dtype = np.shape(x), _dtype(x)

    def randn():
        return np.asarray(rng.randn(*shape), dtype=dtype)

    if jnp.issubdtype(dtype, jnp.complexfloating):
        result = randn() + dtype.type(1.0j) * randn()
    else:
        result = randn()
    return result.item() if _is_scalar(x) else result


def _draw(rng, x):
    """JAX's ``rand_like`` for an inexact leaf; for any other leaf the same draws are consumed
    (so the inexact leaves get JAX's values) and a float0 zero is returned."""
    if _is_inexact(x):
        return _rand_like(rng, x)
    rng.randn(*np.shape(x))
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _with(leaves, k, value):
    new = list(leaves)
    new[k] = value
    return new


def _with_all(leaves, ks, xs):
    new = list(leaves)
    for k, x in zip(ks, xs, strict=True):
        new[k] = x
    return new


def _np(x) -> np.ndarray:
    """A host copy in float64 / complex128."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _is_custom_vjp_error(e: BaseException) -> bool:
    return isinstance(e, TypeError) and _CUSTOM_VJP_MESSAGE in str(e)


def _split_fixed(leaves, var) -> tuple[tuple, tuple]:
    """``(spec, arrays)``: the leaves outside ``var`` as a hashable spec — arrays by position in
    ``arrays`` (traced), other values (ints, strings, None) as they are (static)."""
    spec, arrays = [], []
    for k, x in enumerate(leaves):
        if k in var:
            spec.append(None)
        elif isinstance(x, (jax.Array, np.ndarray)):
            spec.append(("array", len(arrays)))
            arrays.append(x)
        else:
            spec.append(("static", x))
    return tuple(spec), tuple(arrays)


def _rebuild(spec, arrays) -> list:
    return [None if s is None else arrays[s[1]] if s[0] == "array" else s[1] for s in spec]


@functools.lru_cache(maxsize=64)
def _jitted(body, f, treedef, spec, static):
    """``body`` jitted for one function, tree, fixed-leaf spec and static options: a repeated
    check of the same ``f`` at points of the same structure compiles nothing (the cache holds
    the last 64 programs)."""

    def run(arrays, *dynamic):
        return body(f, treedef, _rebuild(spec, arrays), True, *static, *dynamic)

    return jax.jit(run)


def _call(body, lv: _Level, leaves, static: tuple, *dynamic, how: list):
    """Runs ``body(f, treedef, leaves, vectorize, *static, *dynamic)``: jitted and vectorised
    when the level is large (:data:`JIT_MIN_SIZE`; the program cached per ``f``, tree and
    options); where that fails (a function that only runs eagerly, or cannot be batched) or for a
    small level, eagerly and looped, like JAX's check. Appends ``"jit"`` or ``"eager"`` to
    ``how``."""
    if lv.jit:
        spec, arrays = _split_fixed(leaves, lv.var)
        try:
            try:
                program = _jitted(body, lv.f, lv.treedef, spec, static)
            except TypeError:  # an unhashable f or leaf: a program for this call only
                program = jax.jit(
                    lambda a, *d: body(lv.f, lv.treedef, _rebuild(spec, a), True, *static, *d)
                )
            out = program(arrays, *dynamic)
        except Exception as e:
            if _is_custom_vjp_error(e):
                raise
        else:
            how.append("jit")
            return out
    out = body(lv.f, lv.treedef, leaves, False, *static, *dynamic)
    how.append("eager")
    return out


# ------------------------------------------------------------------------------------------------
# One level of the recursion


class _Level:
    """What one level compares: the point, its draws, f's output there and the fd references."""

    def __init__(self, f, args, names, suffix, ctx: _Context):
        self.f, self.names, self.suffix, self.ctx = f, names, suffix, ctx
        self.leaves, self.treedef = jax.tree_util.tree_flatten(args)
        self.var = [k for k, x in enumerate(self.leaves) if _is_inexact(x)]
        rng = np.random.RandomState(0)
        self.tangents = [_draw(rng, x) for x in self.leaves]
        out = f(*args)
        out_paths, self.out_tree = jax.tree_util.tree_flatten_with_path(out)
        self.outs = [leaf for _, leaf in out_paths]
        self.out_names = ["out" + jax.tree_util.keystr(p) for p, _ in out_paths]
        self.cots = [_draw(rng, y) for y in self.outs]
        self.out_var = [j for j, y in enumerate(self.outs) if _is_inexact(y)]
        # f is defined at an output element where it is finite there
        self.defined = {j: np.isfinite(_np(self.outs[j])) for j in self.out_var}
        size = sum(np.size(self.leaves[k]) for k in self.var)
        size += sum(np.size(self.outs[j]) for j in self.out_var)
        self.jit = size >= JIT_MIN_SIZE

    def label(self, mode: str) -> str:
        return mode + self.suffix


def _check_level(f, args, names, order, suffix, ctx: _Context):
    lv = _Level(f, args, names, suffix, ctx)
    fwd_modes = [m for m in ("fwd", "lin") if m in ctx.modes]
    how: dict[str, list] = {m: [] for m in ctx.modes}
    jvps: dict[str, dict] = {}
    not_applicable: set[int] = set()
    for mode in fwd_modes:
        jvps[mode] = _hand_jvps(lv, mode, how[mode])
        not_applicable |= {k for k in lv.var if k not in jvps[mode]}
    refs, fd_note = _reference(lv)
    ctx.references["f" + suffix] = fd_note
    for mode in fwd_modes:
        start = len(ctx.rows)
        _fwd_rows(lv, mode, jvps[mode], refs, fd_note, order)
        _set_transform(ctx, start, "eager" if "eager" in how[mode] else "jit")
    if "rev" in ctx.modes and lv.var:
        start = len(ctx.rows)
        _rev_rows(lv, refs, fd_note, not_applicable, how["rev"])
        _set_transform(ctx, start, "eager" if "eager" in how["rev"] else "jit")
    if order > 1:
        for mode in fwd_modes:
            if not_applicable:
                continue
            g = functools.partial(_jvp_of, f, mode)
            tangent_names = [f"tangent({n})" for n in names]
            _check_level(g, (args, args), names + tangent_names, order - 1,
                         f" of {'jvp' if mode == 'fwd' else 'lin'}{suffix}", ctx)  # fmt: skip
        if "rev" in ctx.modes:
            _check_level(functools.partial(_vjp_of, f), args, names, order - 1,
                         f" of vjp{suffix}", ctx)  # fmt: skip


def _jvp_of(f, mode, primals, tangents):
    """JAX's ``partial(jax.jvp, f)`` (``"lin"``: through ``jax.linearize``); the tangents of
    non-inexact primals are replaced by float0 zeros."""
    tangents = jax.tree.map(
        lambda p, t: t if _is_inexact(p) else np.zeros(np.shape(p), jax.dtypes.float0),
        primals,
        tangents,
    )
    if mode == "fwd":
        return jax.jvp(f, primals, tangents)
    primal_out, f_lin = jax.linearize(f, *primals)
    return primal_out, f_lin(*tangents)


def _vjp_of(f, *args):
    """JAX's reverse-branch function: the VJP of ``f`` at its own output."""
    out, pullback = jax.vjp(f, *args)
    return pullback(out)


# --- the hand side ------------------------------------------------------------------------------
def _zeros_like(x):
    return 0.0 * x if _is_scalar(x) else jnp.zeros_like(x)


def _jvp(fun, xs, ts, mode):
    if mode == "fwd":
        return jax.jvp(fun, tuple(xs), tuple(ts))
    p, f_lin = jax.linearize(fun, *xs)
    return p, f_lin(*ts)


def _f_of(f, treedef, leaves, ks):
    """``(*xs) ↦ f(*args)`` with the leaves ``ks`` replaced by ``xs``."""
    return lambda *xs: f(*jax.tree_util.tree_unflatten(treedef, _with_all(leaves, ks, xs)))


def _jvps_body(f, treedef, leaves, _vectorize, ks, mode, dense, xs, ts):
    """Every leaf's JVP (tangent t_k on leaf k alone) and, with several leaves, the JVP along the
    whole tangent."""
    f_all = _f_of(f, treedef, leaves, ks)
    if dense:  # every leaf varies; the tangent is t_k on leaf k and an explicit zero elsewhere
        zeros = [_zeros_like(x) for x in xs]
        res = [_jvp(f_all, xs, _with(zeros, i, t), mode) for i, t in enumerate(ts)]
    else:  # the other leaves held fixed: their tangents are symbolic zeros
        base = _with_all(leaves, ks, xs)
        res = [_jvp(_f_of(f, treedef, base, [k]), [x], [t], mode)
               for k, x, t in zip(ks, xs, ts, strict=True)]  # fmt: skip
    if len(ks) > 1:
        res.append(_jvp(f_all, xs, ts, mode))
    return res


def _hand_jvps(lv: _Level, mode: str, how: list) -> dict:
    """``{k: (primal_out, J t_k)}`` for every leaf with a forward mode (custom_vjp ones are left
    out), and ``{ALL_LEAVES: (primal_out, J t)}`` along the whole tangent where there is more than
    one leaf: one program for all, or, where one leaf has no forward mode, one per leaf."""
    leaves, tangents = lv.leaves, lv.tangents

    def attempt(ks):
        xs, ts = [leaves[k] for k in ks], [tangents[k] for k in ks]
        try:
            res = _call(_jvps_body, lv, leaves, (tuple(ks), mode, False), xs, ts, how=how)
        except Exception as e:
            # Some of JAX's JVP rules fail on a symbolic-zero tangent (lax.reduce of a tuple in
            # jax 0.10.2): then every leaf gets an explicit zero tangent, as in JAX's check.
            if _is_custom_vjp_error(e):
                raise
            res = _call(_jvps_body, lv, leaves, (tuple(ks), mode, True), xs, ts, how=how)
        keys = list(ks) + ([ALL_LEAVES] if len(ks) > 1 else [])
        return dict(zip(keys, res, strict=True))

    try:
        return attempt(lv.var)
    except TypeError as e:
        if not _is_custom_vjp_error(e):
            raise
    found = {}
    for k in lv.var:
        try:
            found.update(attempt([k]))
        except TypeError as e:
            if not _is_custom_vjp_error(e):
                raise
    return found


def _vjp_body(f, treedef, leaves, _vectorize, var, xs, ct):
    out, pullback = jax.vjp(_f_of(f, treedef, leaves, var), *xs)
    return out, pullback(ct)


def _hand_vjp(lv: _Level, cots: list, how: list):
    """``(primal_out, [Jᵀc restricted to leaf k for k in var])`` from one ``jax.vjp``, with JAX's
    conjugation: the pullback of ``conj(c)``."""
    ct = jax.tree_util.tree_unflatten(
        lv.out_tree, [np.conj(c) if _is_inexact(c) else c for c in cots]
    )
    xs = [lv.leaves[k] for k in lv.var]
    return _call(_vjp_body, lv, lv.leaves, (tuple(lv.var),), xs, ct, how=how)


# --- the reference -------------------------------------------------------------------------------
def _stencil_body(f, treedef, leaves, vectorize, var, h, xs, ts):
    """``[output pytree stacked over the points OFFSETS·h along t_k for k in var]``."""
    steps = tuple(o * h for o in fd.OFFSETS)
    base = _with_all(leaves, var, xs)
    result = []
    for k, x, t in zip(var, xs, ts, strict=True):
        fk = _f_of(f, treedef, base, [k])
        if vectorize and not (_is_scalar(leaves[k]) or _is_scalar(t)):
            s = jnp.asarray(steps, dtype=jnp.result_type(x))
            result.append(jax.vmap(lambda s, fk=fk, x=x, t=t: fk(x + s * t))(s))
        elif isinstance(x, jax.core.Tracer) or isinstance(t, jax.core.Tracer):
            vals = [fk(x + s * t) for s in steps]
            result.append(jax.tree.map(lambda *v: jnp.stack([jnp.asarray(u) for u in v]), *vals))
        else:  # eager: the points and the stack on the host, as JAX's numerical_jvp
            x, t = (x, t) if _is_scalar(x) and _is_scalar(t) else (np.asarray(x), np.asarray(t))
            vals = [fk(x + s * t) for s in steps]
            result.append(jax.tree.map(lambda *v: np.stack([np.asarray(u) for u in v]), *vals))
    return result


def _as_array(x):
    return x if _is_scalar(x) else jnp.asarray(x)


def _reference(lv: _Level):
    """``({k: {j: fd.Estimate}}, description)``: every leaf's Richardson-extrapolated difference
    per output leaf, in the reference precision where ``f`` runs there, else in the arguments' own
    precision (the description says which)."""
    if not lv.var:
        return {}, "-"
    dtypes = [_dtype(lv.leaves[k]) for k in lv.var]
    h = lv.ctx.eps
    how: list = []
    stacked, error = None, None
    if any(tolerance.reference_dtype(d) != d for d in dtypes):
        with tolerance.reference_precision(dtypes):
            up = [tolerance.upcast(_as_array(x)) if _is_inexact(x) else x for x in lv.leaves]
            ts = [tolerance.upcast(_as_array(lv.tangents[k])) for k in lv.var]
            try:
                stacked = _call(_stencil_body, lv, up, (tuple(lv.var), h),
                                [up[k] for k in lv.var], ts, how=how)  # fmt: skip
            except Exception as e:  # noqa: BLE001 — f refuses upcast arguments: JAX's precision
                error = f"f failed on upcast arguments ({type(e).__name__})"
        if stacked is not None:
            error = _not_the_same_function(lv, stacked)
            if error:
                stacked = None
    if stacked is None:
        stacked = _call(_stencil_body, lv, lv.leaves, (tuple(lv.var), h),
                        [lv.leaves[k] for k in lv.var], [lv.tangents[k] for k in lv.var],
                        how=how)  # fmt: skip
    result, computed = {}, set()
    for k, st in zip(lv.var, stacked, strict=True):
        out_leaves = jax.tree_util.tree_leaves(st)
        per_out = {}
        for j in lv.out_var:
            y = out_leaves[j]
            computed.add(str(np.asarray(y).dtype))
            per_out[j] = fd.at_offsets(_np(y), h, eval_eps=fd.eps_of(y))
        result[k] = per_out
    note = "differences in " + ", ".join(sorted(computed))
    if error:
        note += f"; {error}, so in the arguments' own precision as JAX's"
    elif not any(tolerance.reference_dtype(d) != d for d in dtypes):
        note += " (no higher precision: the arguments' own, as JAX's)"
    return result, note


def _not_the_same_function(lv: _Level, stacked) -> str | None:
    """Why f one precision up is not the function under test at this point, or None.

    The midpoint of each pair of points, (f(x + h t) + f(x − h t)) / 2 = f(x) + O(h²), must
    agree with f(*args) within the primal rows' tolerance. It does not where f makes a discrete
    choice differently in the higher precision — LAPACK returns a nonsymmetric matrix's
    eigenvalues in another order in float64 than in float32 — and then the differences, which
    would be of another function, are taken in the arguments' own precision, as JAX's."""
    for st in stacked:
        out_leaves = jax.tree_util.tree_leaves(st)
        for j in lv.out_var:
            v = _np(out_leaves[j])
            mid = (v[0] + v[1]) / 2
            f0 = _np(lv.outs[j])
            if mid.shape != f0.shape:
                continue
            atol, rtol = lv.ctx.tols(_dtype(lv.outs[j]))
            with np.errstate(invalid="ignore"):
                off = (
                    lv.defined[j]
                    & np.isfinite(mid)
                    & ~(np.abs(mid - f0) <= atol + rtol * np.abs(f0))
                )
            if off.any():
                at = tuple(int(i) for i in np.argwhere(off)[0])
                return (f"f one precision up is another function at this point "
                        f"({lv.out_names[j]} at {at}: {_np(f0)[at]:.6g} in the arguments' "
                        f"precision, {mid[at]:.6g} one up)")  # fmt: skip
    return None


# --- rows ---------------------------------------------------------------------------------------
def _source(ctx: _Context, note: str) -> str:
    return (f"fd at eps={ctx.eps:g} and eps/2 along t, {note}: "
            f"{fd.TRUNCATION_SAFETY:g}·|D(h) − D(h/2)|/3 + {fd.ROUNDOFF_FACTOR:g}·eps·|f|/h")  # fmt: skip


_CAP = "check_grads' own criterion size·(atol + rtol·|ref|)"


def _fwd_rows(lv: _Level, mode, jvps: dict, refs: dict, fd_note: str, order: int) -> None:
    ctx = lv.ctx
    multi = len(lv.outs) != 1
    primal_done = False
    keys = list(lv.var) + ([ALL_LEAVES] if ALL_LEAVES in jvps else [])
    for k in keys:
        if k != ALL_LEAVES and k not in jvps:
            ctx.rows.append(_na_row(lv.label(mode), lv.names[k], lv.leaves[k], k, order, ctx))
            continue
        primal, tan = jvps[k]
        p_leaves, t_leaves = lv.out_tree.flatten_up_to(primal), lv.out_tree.flatten_up_to(tan)
        if not primal_done:
            _primal_rows(lv, lv.label("primal"), mode, p_leaves)
            primal_done = True
        for j in lv.out_var:
            if k == ALL_LEAVES:
                ests = [refs[kk][j] for kk in lv.var]
                ref = sum(e.value for e in ests)
                allowance = sum(e.allowance for e in ests)
                path, order_k = ALL_LEAVES, len(lv.leaves)
            else:
                ref, allowance = refs[k][j].value, refs[k][j].allowance
                path, order_k = lv.names[k], k
            dt = _dtype(lv.outs[j])
            t_dtype = _dtype(t_leaves[j])
            atol, rtol = ctx.tols(t_dtype, dt)
            hand = _np(t_leaves[j])
            size = max(int(np.size(hand)), 1)
            cap = size * (atol + rtol * np.abs(ref))
            row = compare(
                hand, ref, oracle=lv.label(mode), path=path, rtol=rtol, atol=atol,
                allowance=allowance, bound_source=_source(ctx, fd_note), cap=cap, cap_name=_CAP,
                defined=lv.defined[j] if np.shape(hand) == np.shape(ref) else None,
                method=("jvp" if mode == "fwd" else "linearize")
                + (" along t" if k == ALL_LEAVES else "")
                + (f" → {lv.out_names[j]}" if multi else "") + " vs fd",
                shape=np.shape(t_leaves[j]), order=order_k, dtype=dt, ref_name="the fd reference",
            )  # fmt: skip
            if t_dtype != _dtype(p_leaves[j]):
                row = fail(row, f"tangent dtype {t_dtype} differs from the primal's "
                           f"{_dtype(p_leaves[j])}")  # fmt: skip
            ctx.rows.append(row)


def _rev_rows(lv: _Level, refs: dict, fd_note: str, not_applicable: set, how: list) -> None:
    ctx = lv.ctx
    # outputs usable in the inner products: f defined there and every difference finite
    usable = {j: lv.defined[j] & np.all([np.isfinite(refs[k][j].value) for k in lv.var], axis=0)
              for j in lv.out_var}  # fmt: skip
    masked = not all(u.all() for u in usable.values())
    cots = list(lv.cots)
    if masked:
        for j in lv.out_var:
            cots[j] = np.where(usable[j], _np(cots[j]), 0).astype(_dtype(cots[j]))
            if _is_scalar(lv.cots[j]):
                cots[j] = cots[j].item()
    primal, cts = _hand_vjp(lv, cots, how)
    _primal_rows(lv, lv.label("primal"), "rev", lv.out_tree.flatten_up_to(primal))
    out_dtypes = [_dtype(lv.outs[j]) for j in lv.out_var]
    hands, refs_k, allows = [], [], []
    for i, k in enumerate(lv.var):
        t = _np(lv.tangents[k])
        hands.append(np.real(np.sum(t * _np(cts[i]))))
        ref, allowance = 0.0, 0.0
        for j in lv.out_var:
            c = _np(cots[j])
            est = refs[k][j]
            value = np.where(usable[j], est.value, 0)
            ref += np.real(np.sum(np.conj(value) * c))
            allowance += np.sum(np.abs(c) * np.where(usable[j], est.allowance, 0))
        refs_k.append(ref)
        allows.append(allowance)
    keys = list(enumerate(lv.var)) + ([(None, ALL_LEAVES)] if len(lv.var) > 1 else [])
    for i, k in keys:
        if k == ALL_LEAVES:
            hand, ref, allowance = sum(hands), sum(refs_k), sum(allows)
            path, order_k, dtypes = ALL_LEAVES, len(lv.leaves), [_dtype(lv.leaves[kk])
                                                                 for kk in lv.var]  # fmt: skip
        else:
            hand, ref, allowance = hands[i], refs_k[i], allows[i]
            path, order_k, dtypes = lv.names[k], k, [_dtype(lv.leaves[k])]
        atol, rtol = ctx.tols(*dtypes, *out_dtypes)
        note = "custom_vjp: checked against finite differences" if k in not_applicable else None
        if masked:
            note = "; ".join(
                filter(
                    None,
                    [
                        note,
                        "outputs where f or its difference is not "
                        "finite left out of ⟨·, c⟩ (cotangent zeroed there)",
                    ],
                )
            )
        row = compare(
            np.asarray(hand), np.asarray(ref), oracle=lv.label("rev"), path=path, rtol=rtol,
            atol=atol, allowance=np.asarray(allowance), bound_source=_source(ctx, fd_note),
            cap=np.asarray(atol + rtol * abs(ref)), cap_name=_CAP,
            defined=np.asarray(not (masked and not np.isfinite(hand))),
            method="⟨t, vjp(c)⟩ vs ⟨fd(t), c⟩" if k != ALL_LEAVES else "⟨t, vjp(c)⟩ vs ⟨fd(t), c⟩ "
            "along t", shape=np.shape(lv.leaves[k]) if k != ALL_LEAVES else (), order=order_k,
            dtype=dtypes[0], note=note, ref_name="the fd reference",
        )  # fmt: skip
        ctx.rows.append(row)


def _primal_rows(lv: _Level, oracle, mode, primal_leaves) -> None:
    method = {"fwd": "jvp", "lin": "linearize", "rev": "vjp"}[mode]
    for j in lv.out_var:
        dt = _dtype(lv.outs[j])
        atol, rtol = lv.ctx.tols(dt, _dtype(primal_leaves[j]))
        hand, ref = _np(primal_leaves[j]), _np(lv.outs[j])
        lv.ctx.rows.append(
            compare(
                hand,
                ref,
                oracle=oracle,
                path=lv.out_names[j],
                rtol=rtol,
                atol=atol,
                cap=max(int(np.size(hand)), 1) * (atol + rtol * np.abs(ref)),
                cap_name=_CAP,
                defined=lv.defined[j] if np.shape(hand) == np.shape(ref) else None,
                method=f"{method}'s primal vs f(*args)",
                shape=np.shape(primal_leaves[j]),
                order=-1,
                dtype=_dtype(primal_leaves[j]),
                ref_name="f(*args)",
            )  # fmt: skip
        )


def _na_row(oracle, path, leaf, k, order, ctx):
    note = CUSTOM_VJP_NOTE
    if order > 1:
        note += f"; the order-{order} forward branch (jax.jvp of f) cannot be formed, skipped"
    return status_row(oracle, path, note, order=k, shape=np.shape(leaf), dtype=str(_dtype(leaf)),
                      method="jvp")  # fmt: skip


def _set_transform(ctx, start: int, transform: str) -> None:
    ctx.rows[start:] = [
        r if r.status == "not applicable" else dataclasses.replace(r, transform=transform)
        for r in ctx.rows[start:]
    ]


__all__: Sequence[str] = [
    "ALL_LEAVES",
    "CUSTOM_VJP_NOTE",
    "EPS",
    "MODES",
    "check_grads",
    "check_grads_report",
]
