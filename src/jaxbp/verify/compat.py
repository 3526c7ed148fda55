"""``jaxbp.verify.check_grads``: a drop-in for ``jax.test_util.check_grads``, leaf by leaf.

Same signature and meaning as JAX's (``jax._src.public_test_util.check_grads``)::

    check_grads(f, args, order, modes=("fwd", "rev"), atol=None, rtol=None, eps=None)

so a suite can swap one import and keep passing, but each check is made **per input leaf** (the
tangent is supported on that leaf only) and the failure names the leaf by its path in ``args``
(``args[0]['b']``, ``args[1]``), with the table of the failing rows in the ``AssertionError``.
:func:`check_grads_report` takes the same arguments and returns the :class:`~jaxbp.verify.report.
Report` instead of raising.

What is compared, at each level of the recursion (the level's name is the oracle column):

- ``fwd`` (and ``lin``, as JAX's): for every inexact leaf ``k`` and every inexact output leaf, the
  JVP ``J t_k`` (computed by ``jax.jvp``, resp. ``jax.linearize``, in the arguments' own
  precision) against a central finite difference along the same tangent. As in JAX the tangents
  (and cotangents) are ``jax.test_util.rand_like`` draws from ``np.random.RandomState(0)``, and the
  step is ``eps · t`` (``eps`` defaults to JAX's ``1e-4``). Unlike JAX, the difference is evaluated
  in the **reference precision** (:func:`~jaxbp.verify.tolerance.reference_precision`,
  :func:`~jaxbp.verify.tolerance.upcast`: float32 → float64, 16-bit → float32), at the steps
  ``eps`` and ``eps/2`` and Richardson-extrapolated; the difference between the two steps and
  the round-off of the evaluations are added to the row's tolerance as the measured uncertainty
  of the oracle (``noise``). Where ``f`` cannot run on upcast arguments (a closed-over constant of
  the original dtype, an explicit ``out_dtype``) the difference is taken in the arguments' own
  precision, as JAX's, and the note says so.
- ``rev``: the VJP by the dot-product identity ``⟨t_k, Jᵀc⟩ = ⟨J t_k, c⟩`` for every leaf ``k``
  (one ``jax.vjp`` gives ``Jᵀc`` for all leaves). The right-hand side is the checked JVP when
  ``"fwd"`` is among the modes (so the chain vjp = jvp = finite differences is closed); otherwise,
  and for leaves with no forward mode (``custom_vjp``), it is the finite difference, as in JAX.
- ``primal``: the primal output of ``jax.jvp`` / ``jax.vjp`` against ``f(*args)``, per output leaf.
- ``order ≥ 2``: JAX's recursion, unchanged: the forward branch checks
  ``(primals, tangents) ↦ jax.jvp(f, primals, tangents)`` at ``(args, args)`` (its tangent leaves
  are named ``tangent(args[0]['b'])``), the reverse branch checks
  ``args ↦ vjp_f(f(*args))``; the oracle column reads ``fwd of jvp``, ``rev of vjp of jvp``, …

**Tolerances** are JAX's: ``atol`` and ``rtol`` default per dtype to
``jax._src.public_test_util.default_gradient_tolerance`` (float32 2e-3, float64 1e-5, bfloat16
1e-1, float16 1e-2, complex64 1e-3, complex128 1e-5); a float or a ``{dtype: tol}`` dict overrides
them exactly as in JAX (``public_test_util.tolerance``, the dict merged into the defaults), and the
dtype is the compared output's (rev rows: the largest of the leaf's and the outputs'). Each element
must satisfy ``|hand − ref| ≤ atol + rtol·|ref| + noise``. JAX multiplies ``atol`` and ``rtol`` by
the number of elements of the compared output; we do not, and we compare per leaf instead of along
one random direction through every leaf, so where JAX's reference is noisy we are more lenient
(ours is accurate) and where JAX's tolerance is diluted we are stricter: a 1 % error in a small
leaf, or in one element of a large output, fails here and passes JAX's.

**Non-finite values**: any NaN or Inf in a derivative, hand or oracle, fails the row, and so does
any NaN in a primal value: NaN never equals NaN. JAX's check, built on
``np.testing.assert_allclose``, passes identical NaNs (a function that is NaN on part of its
sample, with NaN derivatives there, passes JAX's); we fail them, naming the element. Infinity is a
value, not a failure, only where JAX's arithmetic makes it one: equal infinite *primal* values
agree (a max over an empty window is −inf), and the finite difference of two equal infinities is 0
(JAX's ``safe_sub``).

**custom_vjp**: forward mode of a ``jax.custom_vjp`` function does not exist; instead of crashing,
its ``fwd`` / ``lin`` rows are ``not applicable`` (they never fail; the note says why), detected per
leaf from JAX's ``TypeError`` ("can't apply forward-mode autodiff (jvp) to a custom_vjp
function"), and its ``rev`` rows are checked against the finite difference. For ``order ≥ 2`` the
forward branch of such a level cannot be formed (``jax.jvp(f)`` raises), so it is skipped (the
not-applicable rows say so); the reverse branch ``args ↦ vjp_f(f(*args))`` is an ordinary function
of the rule's fwd and bwd and is checked in every requested mode, as deep as ``order``.

**Evaluation**: per level, one program computes every leaf's JVP (a loop over leaves; the other
leaves are held fixed, so their tangents are symbolic zeros; where one of JAX's rules cannot take a
symbolic zero — ``lax.reduce`` of a tuple in jax 0.10.2 — every leaf gets an explicit zero tangent,
as in JAX's check), one the VJP, and one every leaf's finite-difference stencil (``jax.vmap``
over the four steps, in the reference precision). At or above :data:`JIT_MIN_SIZE` numbers the
programs are jitted; below it they run eagerly, op by op, with the stencil looped, like JAX's own
check: JAX caches each primitive's executable per shape, so for the small arrays of a unit test
that is several times faster than compiling three programs per level. A function that cannot be
traced under ``jit`` (Python control flow on values, NumPy on arrays) or batched falls back to the
eager path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import public_test_util as _jtu

from jaxbp.verify import tolerance
from jaxbp.verify.report import Report, Row, compare, environment

EPS = _jtu.EPS
"""JAX's default finite-difference step (``1e-4``), along a standard-normal tangent."""

MODES = ("fwd", "rev", "lin")
"""The modes JAX's ``check_grads`` knows."""

CUSTOM_VJP_NOTE = "not applicable (custom_vjp): forward mode of a custom_vjp function"

_CUSTOM_VJP_MESSAGE = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"

JIT_MIN_SIZE = 4096
"""Below this many numbers (inexact argument and output elements together) a level of the check
runs eagerly, op by op, as JAX's does: compiling its three programs would cost more than running
them. At and above it, the programs are jitted."""

_NUMPY_DEFAULT_RTOL = 1e-7
"""What ``np.testing.assert_allclose`` uses when JAX's check passes it ``rtol=0`` (it drops it)."""


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
      AssertionError: naming every failing leaf, with the table of the failing rows.
    """
    check_grads_report(f, args, order, modes, atol, rtol, eps).raise_if_failed()


def check_grads_report(
    f, args, order=1, modes=("fwd", "rev"), atol=None, rtol=None, eps=None
) -> Report:
    """:func:`check_grads`, returning the :class:`Report` (one row per leaf per check) instead of
    raising."""
    args = tuple(args)
    eps = eps or EPS
    if isinstance(modes, str):
        modes = (modes,)
    modes = tuple(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"modes: unknown mode(s) {bad!r}; valid modes are {', '.join(MODES)}")
    ctx = _Context(
        modes=modes,
        atol=_jtu._merge_tolerance(atol, _jtu.default_gradient_tolerance),
        rtol=_jtu._merge_tolerance(rtol, _jtu.default_gradient_tolerance),
        eps=float(eps),
    )
    paths, _ = jax.tree_util.tree_flatten_with_path(args)
    names = [f"args[{p[0].idx}]" + jax.tree_util.keystr(tuple(p[1:])) for p, _ in paths]
    _check_level(f, args, names, order, "", ctx)
    name = getattr(f, "__name__", type(f).__name__)
    meta = {
        "order": order,
        "modes": list(modes),
        "eps": float(eps),
        "atol": repr(atol),
        "rtol": repr(rtol),
        "tangents": "jax.test_util.rand_like draws from np.random.RandomState(0), as JAX's",
        "fd": "central differences at eps and eps/2, Richardson-extrapolated",
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
        self.rows: list[Row] = []
        self.references: dict[str, str] = {}

    def tols(self, *dtypes) -> tuple[float, float]:
        atol = max(float(_jtu.tolerance(d, self.atol)) for d in dtypes)
        rtol = max(float(_jtu.tolerance(d, self.rtol)) for d in dtypes)
        return atol, rtol or _NUMPY_DEFAULT_RTOL


# ------------------------------------------------------------------------------------------------
# Leaves


def _dtype(x) -> np.dtype:
    return jax.dtypes.canonicalize_dtype(_jtu._dtype(x))


def _is_inexact(x) -> bool:
    try:
        return jnp.issubdtype(_dtype(x), jnp.inexact)
    except TypeError:
        return False


def _is_scalar(x) -> bool:
    return _jtu.is_python_scalar(x)


def _draw(rng, x):
    """JAX's ``rand_like`` for an inexact leaf; for any other leaf the same draws are consumed
    (so the inexact leaves get JAX's values) and a float0 zero is returned."""
    if _is_inexact(x):
        return _jtu.rand_like(rng, x)
    rng.randn(*np.shape(x))
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _with(leaves, k, value):
    new = list(leaves)
    new[k] = value
    return new


def _np(x) -> np.ndarray:
    """A host copy in float64 / complex128."""
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _views(hand: np.ndarray, ref: np.ndarray, noise=None):
    """Real arrays for :func:`compare`: where either side is complex, both as (re, im) pairs on a
    trailing axis (the noise repeated on both)."""
    if not (np.iscomplexobj(hand) or np.iscomplexobj(ref)):
        return (hand, ref) if noise is None else (hand, ref, noise)

    def view(x):
        x = np.asarray(x, np.complex128)
        return np.stack([x.real, x.imag], axis=-1)

    if noise is None:
        return view(hand), view(ref)
    return view(hand), view(ref), np.stack([noise, noise], axis=-1)


def _is_custom_vjp_error(e: BaseException) -> bool:
    return isinstance(e, TypeError) and _CUSTOM_VJP_MESSAGE in str(e)


def _call(build: Callable[[bool], Callable], *args, how: list, jit: bool):
    """Runs ``build(jit)(*args)``: jitted and vectorised when ``jit`` (``build(True)`` vmaps where
    ``build(False)`` loops), where that fails (a function that only runs eagerly, or cannot be
    batched) or when not ``jit``, eagerly and looped, like JAX's check (op by op, each primitive
    compiled once per shape and cached: for small arrays that is faster than compiling programs,
    and batching would only add shapes to compile). Appends ``"jit"`` or ``"eager"`` to ``how``."""
    if jit:
        try:
            out = jax.jit(build(True))(*args)
        except Exception as e:
            if _is_custom_vjp_error(e):
                raise
        else:
            how.append("jit")
            return out
    out = build(False)(*args)
    how.append("eager")
    return out


# ------------------------------------------------------------------------------------------------
# One level of the recursion


def _check_level(f, args, names, order, suffix, ctx: _Context):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    var = [k for k, x in enumerate(leaves) if _is_inexact(x)]
    rng = np.random.RandomState(0)
    tangents = [_draw(rng, x) for x in leaves]
    out = f(*args)
    out_paths, out_tree = jax.tree_util.tree_flatten_with_path(out)
    outs = [leaf for _, leaf in out_paths]
    out_names = ["out" + jax.tree_util.keystr(p) for p, _ in out_paths]
    cots = [_draw(rng, y) for y in outs]
    out_var = [j for j, y in enumerate(outs) if _is_inexact(y)]

    def fun_of(base, k):
        return lambda xk: f(*jax.tree_util.tree_unflatten(treedef, _with(base, k, xk)))

    # Small problems run op by op (JAX's per-primitive compile cache makes that faster than
    # compiling whole programs); larger ones in jitted programs.
    size = sum(np.size(leaves[k]) for k in var) + sum(np.size(outs[j]) for j in out_var)
    jit = size >= JIT_MIN_SIZE

    # The hand side: every leaf's JVP (fwd / lin), and the VJP.
    fwd_modes = [m for m in ("fwd", "lin") if m in ctx.modes]
    jvps: dict[str, dict[int, tuple]] = {}
    how: dict[str, list] = {m: [] for m in ctx.modes}
    not_applicable: set[int] = set()
    for mode in fwd_modes:
        jvps[mode] = _hand_jvps(fun_of, leaves, var, tangents, mode, how[mode], jit)
        not_applicable |= {k for k in var if k not in jvps[mode]}
    vjp = None
    if "rev" in ctx.modes and var:
        vjp = _hand_vjp(f, leaves, treedef, var, out_tree, cots, how["rev"], jit)

    # The reference: every leaf's finite-difference stencil.
    fd_ref, fd_note = _reference(fun_of, leaves, var, tangents, out_var, ctx, jit)
    ctx.references[("f" + suffix)] = fd_note

    def label(mode):
        return mode + suffix

    def transform(mode):
        return "eager" if "eager" in how[mode] else "jit"

    multi = len(outs) != 1
    for mode in fwd_modes:
        start = len(ctx.rows)
        primal_done = False
        for k in var:
            if k not in jvps[mode]:
                ctx.rows.append(_na_row(label(mode), names[k], leaves[k], k, order, ctx))
                continue
            primal, tan = jvps[mode][k]
            p_leaves, t_leaves = out_tree.flatten_up_to(primal), out_tree.flatten_up_to(tan)
            if not primal_done:
                _primal_rows(label("primal"), mode, p_leaves, outs, out_var, out_names, ctx)
                primal_done = True
            for j in out_var:
                ref, noise = fd_ref[k][j]
                dt = _dtype(outs[j])
                atol, rtol = ctx.tols(_dtype(t_leaves[j]), dt)
                hand = _np(t_leaves[j])
                complex_ = np.iscomplexobj(ref) or np.iscomplexobj(hand)
                hand, ref, noise = _views(hand, ref, noise)
                row = compare(
                    hand,
                    ref,
                    oracle=label(mode),
                    path=names[k],
                    rtol=rtol,
                    atol=atol,
                    noise=noise,
                    method=("jvp" if mode == "fwd" else "linearize")
                    + (f" → {out_names[j]}" if multi else "")
                    + f" vs fd ({fd_note})"
                    + (" (re, im)" if complex_ else ""),
                    shape=np.shape(t_leaves[j]),
                    order=k,
                    dtype=dt,
                )
                if _dtype(t_leaves[j]) != _dtype(p_leaves[j]):
                    row = _fail(
                        row,
                        f"tangent dtype {_dtype(t_leaves[j])} differs from the primal's "
                        f"{_dtype(p_leaves[j])}",
                    )
                ctx.rows.append(row)
        _set_transform(ctx, start, transform(mode))

    if vjp is not None:
        start = len(ctx.rows)
        primal, cts = vjp
        _primal_rows(
            label("primal"), "rev", out_tree.flatten_up_to(primal), outs, out_var, out_names, ctx
        )
        out_dtypes = [_dtype(outs[j]) for j in out_var]
        for i, k in enumerate(var):
            t = _np(tangents[k])
            hand = np.real(np.sum(t * _np(cts[i])))
            src = next((m for m in fwd_modes if k in jvps[m]), None)
            if src is not None:
                tan = out_tree.flatten_up_to(jvps[src][k][1])
                ref = sum(
                    (np.real(np.sum(np.conj(_np(tan[j])) * _np(cots[j]))) for j in out_var), 0.0
                )
                noise = None
                method = f"⟨t, vjp(c)⟩ vs ⟨{'jvp' if src == 'fwd' else 'linearize'}(t), c⟩"
            else:
                ref = sum(
                    (np.real(np.sum(np.conj(fd_ref[k][j][0]) * _np(cots[j]))) for j in out_var),
                    0.0,
                )
                noise = sum((np.sum(np.abs(_np(cots[j])) * fd_ref[k][j][1]) for j in out_var), 0.0)
                noise = np.asarray(noise)
                method = f"⟨t, vjp(c)⟩ vs ⟨fd(t), c⟩ ({fd_note})"
            atol, rtol = ctx.tols(_dtype(leaves[k]), *out_dtypes)
            ctx.rows.append(
                compare(
                    np.asarray(hand),
                    np.asarray(ref),
                    oracle=label("rev"),
                    path=names[k],
                    rtol=rtol,
                    atol=atol,
                    noise=noise,
                    method=method,
                    shape=np.shape(leaves[k]),
                    order=k,
                    dtype=_dtype(leaves[k]),
                    note="custom_vjp: checked against finite differences"
                    if k in not_applicable
                    else None,
                )
            )
        _set_transform(ctx, start, transform("rev"))

    if order > 1:
        _recurse(f, args, names, order, suffix, ctx, fwd_modes, not_applicable)


def _recurse(f, args, names, order, suffix, ctx, fwd_modes, not_applicable):
    for mode in fwd_modes:
        if not_applicable:
            continue
        g = functools.partial(_jvp_of, f, mode)
        tangent_names = [f"tangent({n})" for n in names]
        _check_level(g, (args, args), names + tangent_names, order - 1,
                     f" of {'jvp' if mode == 'fwd' else 'lin'}{suffix}", ctx)  # fmt: skip
    if "rev" in ctx.modes:
        _check_level(functools.partial(_vjp_of, f), args, names, order - 1, f" of vjp{suffix}", ctx)


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


def _hand_jvps(fun_of, leaves, var, tangents, mode, how, jit) -> dict[int, tuple]:
    """``{k: (primal_out, J t_k)}`` for every leaf with a forward mode (custom_vjp ones are left
    out): one jitted program for all leaves, or, where one of them has no forward mode, one per
    leaf."""

    def jvp(fk, x, t):
        if mode == "fwd":
            return jax.jvp(fk, (x,), (t,))
        p, f_lin = jax.linearize(fk, x)
        return p, f_lin(t)

    def build(ks, dense):
        def run(xs, ts):
            base = _with_all(leaves, ks, xs)
            if not dense:  # the other leaves held fixed: their tangents are symbolic zeros
                return [jvp(fun_of(base, k), x, t) for k, x, t in zip(ks, xs, ts, strict=True)]

            # Every leaf varies; the tangent is t_k on leaf k and an explicit zero elsewhere.
            def f_all(*xs):
                return fun_of(_with_all(leaves, ks, xs), ks[0])(xs[0])

            zeros = [_zeros_like(x) for x in xs]
            return [_jvp_dense(f_all, xs, _with(zeros, i, t), mode) for i, t in enumerate(ts)]

        return lambda _vectorize: run

    def attempt(ks):
        args = ([leaves[k] for k in ks], [tangents[k] for k in ks])
        try:
            res = _call(build(ks, False), *args, how=how, jit=jit)
        except Exception as e:
            # Some of JAX's JVP rules fail on a symbolic-zero tangent (lax.reduce of a tuple in
            # jax 0.10.2): then every leaf gets an explicit zero tangent, as in JAX's check.
            if _is_custom_vjp_error(e):
                raise
            res = _call(build(ks, True), *args, how=how, jit=jit)
        return dict(zip(ks, res, strict=True))

    try:
        return attempt(var)
    except TypeError as e:
        if not _is_custom_vjp_error(e):
            raise
    found = {}
    for k in var:
        try:
            found.update(attempt([k]))
        except TypeError as e:
            if not _is_custom_vjp_error(e):
                raise
    return found


def _zeros_like(x):
    return 0.0 * x if _is_scalar(x) else jnp.zeros_like(x)


def _jvp_dense(f_all, xs, ts, mode):
    """JVP of ``f_all(*xs)`` along the explicit tangents ``ts``."""
    if mode == "fwd":
        return jax.jvp(f_all, tuple(xs), tuple(ts))
    p, f_lin = jax.linearize(f_all, *xs)
    return p, f_lin(*ts)


def _with_all(leaves, ks, xs):
    new = list(leaves)
    for k, x in zip(ks, xs, strict=True):
        new[k] = x
    return new


def _hand_vjp(f, leaves, treedef, var, out_tree, cots, how, jit):
    """``(primal_out, [Jᵀc restricted to leaf k for k in var])`` from one ``jax.vjp``, with JAX's
    conjugation: the pullback of ``conj(c)``."""
    ct = jax.tree_util.tree_unflatten(out_tree, [np.conj(c) if _is_inexact(c) else c for c in cots])

    def run(xs, ct):
        def fv(*xs):
            return f(*jax.tree_util.tree_unflatten(treedef, _with_all(leaves, var, xs)))

        out, pullback = jax.vjp(fv, *xs)
        return out, pullback(ct)

    return _call(lambda _vectorize: run, [leaves[k] for k in var], ct, how=how, jit=jit)


# ------------------------------------------------------------------------------------------------
# The finite-difference reference


def _stencil(fun_of, leaves, var, h, vectorize):
    """``{k: output pytree stacked over the steps (h, −h, h/2, −h/2) along t_k}``."""
    steps = (h, -h, h / 2, -h / 2)

    def run(xs, ts):
        base = _with_all(leaves, var, xs)
        result = []
        for k, x, t in zip(var, xs, ts, strict=True):
            fk = fun_of(base, k)
            if vectorize and not (_is_scalar(leaves[k]) or _is_scalar(t)):
                s = jnp.asarray(steps, dtype=jnp.result_type(x))
                result.append(jax.vmap(lambda s, fk=fk, x=x, t=t: fk(x + s * t))(s))
            elif isinstance(x, jax.core.Tracer) or isinstance(t, jax.core.Tracer):
                vals = [fk(x + s * t) for s in steps]
                result.append(
                    jax.tree.map(lambda *v: jnp.stack([jnp.asarray(u) for u in v]), *vals)
                )
            else:  # eager: the points and the stack on the host, as JAX's numerical_jvp
                x, t = (x, t) if _is_scalar(x) and _is_scalar(t) else (np.asarray(x), np.asarray(t))
                vals = [fk(x + s * t) for s in steps]
                result.append(jax.tree.map(lambda *v: np.stack([np.asarray(u) for u in v]), *vals))
        return result

    return run


def _reference(fun_of, leaves, var, tangents, out_var, ctx, jit):
    """``({k: {j: (reference, noise)}}, description)``: every leaf's Richardson-extrapolated central
    difference per output leaf, in the reference precision where ``f`` runs there, else in the
    arguments' own precision (the description says which)."""
    if not var:
        return {}, "-"
    dtypes = [_dtype(leaves[k]) for k in var]
    h = ctx.eps
    how: list = []
    stacked = None
    with tolerance.reference_precision(dtypes):
        up = [tolerance.upcast(_as_array(x)) if _is_inexact(x) else x for x in leaves]
        ts = [tolerance.upcast(_as_array(tangents[k])) for k in var]
        try:
            stacked = _call(
                lambda v: _stencil(fun_of, up, var, h, v),
                [up[k] for k in var],
                ts,
                how=how,
                jit=jit,
            )
            note = "in " + ", ".join(sorted({str(tolerance.reference_dtype(d)) for d in dtypes}))
        except Exception as e:  # f cannot run on upcast arguments: JAX's own precision
            error = type(e).__name__
    if stacked is None:
        stacked = _call(
            lambda v: _stencil(fun_of, leaves, var, h, v),
            [leaves[k] for k in var],
            [tangents[k] for k in var],
            how=how,
            jit=jit,
        )
        note = "in " + ", ".join(sorted({str(d) for d in dtypes}))
        note += f"; f failed on upcast arguments ({error})"
    result = {}
    for k, st in zip(var, stacked, strict=True):
        out_leaves = jax.tree_util.tree_leaves(st)
        per_out = {}
        for j in out_var:
            y = out_leaves[j]
            e = tolerance.eps(jnp.result_type(y))
            v = _np(y)
            d1 = _safe_sub(v[0], v[1]) / (2 * h)
            d2 = _safe_sub(v[2], v[3]) / h
            ref = (4 * d2 - d1) / 3
            with np.errstate(invalid="ignore"):
                scale = np.max(np.abs(np.where(np.isfinite(v), v, 0)), axis=0)
                noise = 2 * np.abs(d1 - d2) + tolerance.FD_NOISE_FACTOR * e * scale / h
            noise = np.where(np.isfinite(noise), noise, 0.0)
            per_out[j] = (ref, noise)
        result[k] = per_out
    return result, note


def _as_array(x):
    return x if _is_scalar(x) else jnp.asarray(x)


def _safe_sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` with JAX's ``safe_sub`` semantics: equal infinities differ by 0."""
    with np.errstate(invalid="ignore"):
        return np.where(a == b, 0, a - b)


# ------------------------------------------------------------------------------------------------
# Rows


def _primal_rows(oracle, mode, primal_leaves, outs, out_var, out_names, ctx):
    method = {"fwd": "jvp", "lin": "linearize", "rev": "vjp"}[mode]
    for j in out_var:
        dt = _dtype(outs[j])
        atol, rtol = ctx.tols(dt, _dtype(primal_leaves[j]))
        hand, ref = _views(_np(primal_leaves[j]), _np(outs[j]))
        note = None
        if hand.shape == ref.shape:
            # A value may be infinite (a max over an empty window is -inf): equal infinities agree.
            # NaN never does.
            same_inf = np.isinf(hand) & (hand == ref)
            if same_inf.any():
                hand, ref = np.where(same_inf, 0.0, hand), np.where(same_inf, 0.0, ref)
                note = f"{int(same_inf.sum())} equal infinite value(s) compared equal"
        ctx.rows.append(
            compare(
                hand,
                ref,
                note=note,
                oracle=oracle,
                path=out_names[j],
                rtol=rtol,
                atol=atol,
                method=f"{method}'s primal vs f(*args)",
                shape=np.shape(primal_leaves[j]),
                order=-1,
                dtype=_dtype(primal_leaves[j]),
                ref_name="f(*args)",
            )
        )


def _na_row(oracle, path, leaf, k, order, ctx) -> Row:
    note = CUSTOM_VJP_NOTE
    if order > 1:
        note += f"; the order-{order} forward branch (jax.jvp of f) cannot be formed, skipped"
    atol, rtol = ctx.tols(_dtype(leaf))
    return Row(
        oracle=oracle,
        path=path,
        shape=tuple(np.shape(leaf)),
        dtype=str(_dtype(leaf)),
        method="jvp",
        n=0,
        max_abs=math.nan,
        max_rel=math.nan,
        norm_rel=math.nan,
        worst_index=None,
        value=math.nan,
        reference=math.nan,
        rtol=rtol,
        atol=atol,
        ok=True,
        status="not applicable",
        note=note,
        order=k,
    )


def _set_transform(ctx, start: int, transform: str) -> None:
    ctx.rows[start:] = [
        r if r.status == "not applicable" else dataclasses.replace(r, transform=transform)
        for r in ctx.rows[start:]
    ]


def _fail(row: Row, problem: str) -> Row:
    problem = f"{row.problem}; {problem}" if row.problem else problem
    return dataclasses.replace(row, ok=False, status=None, problem=problem, margin=math.inf)


__all__: Sequence[str] = ["CUSTOM_VJP_NOTE", "EPS", "MODES", "check_grads", "check_grads_report"]
