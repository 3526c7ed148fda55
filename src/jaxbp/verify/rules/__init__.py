"""Users' derivative rules of non-scalar functions: :func:`check_vjp`, :func:`check_jvp` and
:func:`check_custom_vjp` (eqs. V10–V12 and their generalisations to any pytree in, pytree out).

Calling conventions (they mirror ``jax.vjp`` / ``jax.jvp``)::

    def f(x, W):                       # any pytrees in, any pytree out
        return x @ W

    def matmul_vjp(primals, c):        # a VJP rule: (primals tuple, output cotangent) ->
        x, W = primals                 #   a tuple with one cotangent pytree per primal
        return c @ W.T, x.T @ c

    def matmul_jvp(primals, tangents): # a JVP rule: like jax.jvp(f, primals, tangents)
        (x, W), (tx, tW) = primals, tangents
        return x @ W, tx @ W + x @ tW  #   -> (primal_out, tangent_out)

    check_vjp(f, matmul_vjp, x, W).raise_if_failed()
    check_jvp(f, matmul_jvp, x, W).raise_if_failed()
    check_custom_vjp(my_custom_vjp_fn, plain_reference_fn, x, W).raise_if_failed()

Every row names one primal leaf, ``primals[i]`` followed by its ``jax.tree_util.keystr`` path
(``primals[0]['W']``), or one output leaf (``out[1]``). Integer, boolean (and complex) leaves are
not differentiated: JAX gives them float0 tangents and cotangents (a rule may return ``None``,
float0 or zeros for them), and each gets one ``skipped`` row (status ``not applicable``). A float
leaf's cotangent returned as ``None`` is a zero cotangent, as in ``jax.custom_vjp``.

The oracles (row ``oracle`` names; also the keys of ``rtol`` / ``atol`` dicts):

- ``vjp`` — the rule's VJP, elementwise, against ``jax.vjp(f)`` (check_vjp) or the reference's
  ``jax.vjp`` (check_custom_vjp) for ``n_pairs`` random cotangents.
- ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩`` — the dot-product identity (V10), J t by ``jax.jvp`` (of f, or of the
  reference), for random t supported on one primal leaf at a time (so a failure names the leaf)
  and random c; round-off is bounded by rtol · (‖J t‖‖c‖ + ‖t‖‖Jᵀc‖) (Cauchy–Schwarz).
- ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd`` — the same identity with J t by central finite differences (of f, or
  of the reference): it stands even where JAX's own derivative of f is the thing in doubt.
- ``zero cotangent`` / ``zero tangent`` (V11): a zero (co)tangent maps to exact zeros.
- ``linearity`` (V12): rule(α u₁ + β u₂) = α rule(u₁) + β rule(u₂).
- ``jvp`` — a tangent output, elementwise, against ``jax.jvp`` (of f, or of the reference); rows
  name the input leaf the tangent was supported on, the note names the output leaf (the worst
  one, and every failing one).
- ``fd`` — a tangent output against central finite differences along the same tangents.
- ``primal`` — the rule's primal output against f (check_jvp) or f against the reference
  (check_custom_vjp); ``vjp primal`` — the primal output of ``jax.vjp(f)`` (a custom_vjp's fwd).
- ``grad of vjp`` — second order: ∇ₓ⟨VJP(x)(c)_i, u_i⟩ of f against the reference's, u on one
  leaf i at a time (the row names leaf i, the note the primal the derivative is taken by);
  ``not applicable`` (never a failure) where the rule's bwd cannot be differentiated.
- ``shape/dtype`` — a rule output whose shape or dtype differs from what JAX gives (the primal's
  dtype for a cotangent, the output's for a tangent): a failing row whose ``problem`` says so.

Error model (:mod:`jaxbp.verify.tolerance`): the references run one precision up
(``reference_precision`` on ``upcast`` primals), the hand rule on the original primals; ``rtol``
follows the dtypes JAX would give (the primal leaf's, and the outputs' a row passes through —
never the dtype the rule returned); ``atol`` scales with each leaf. Finite-difference rows take
the analytic rtol where the reference is one precision up (the fd floor ``default_rtol(dtype,
"fd")`` where it is not) and compare with the central difference D(h), step
``h = fd_step_factor(ref_dtype) · rms(leaf)`` (relative to the leaf's scale, no floor of 1; an
all-zero leaf takes the rms of all the float leaves, else 1), adding to the tolerance the
round-off allowance FD_NOISE_FACTOR · eps_ref · (|f₊| + |f₋|) / 2h and the truncation estimate
(4/3)·|D(h) − D(h/2)| (Richardson: exact for an h² error).

Random vectors are drawn on the host with NumPy from ``key`` (reproducible; no random kernel is
compiled per shape). The directions are evaluated inside ``jax.jit`` programs keyed on the
functions — two per check, one for the rule and one for all the references — so checking the
same problem again compiles nothing: the references vectorise them with ``jax.vmap``, a user's
rule runs under ``jax.lax.map`` so that it sees no batch axis (hence transform ``jit`` on the rows
of check_vjp / check_jvp). Only check_custom_vjp's ``eager`` rows call f's derivatives from
Python, once per random vector.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import tolerance
from jaxbp.verify.oracles import host_rng, resolve_key
from jaxbp.verify.report import Report, Row, compare, environment

Array = jax.Array

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

BATCH_PERTURBATION = 0.05
"""Relative spread of the batch members' primals under ``vmap`` (member 0 is the point itself):
x·(1 + 0.05·N(0, 1)) keeps every sign and zero, so no member crosses a kink of f at 0."""


# --- static descriptions (hashable: they key the compiled programs) ----------------------------
class _Static:
    """A static jit argument: hashed by value where it can be, by identity otherwise."""

    __slots__ = ("value", "_key")

    def __init__(self, value):
        self.value = value
        try:
            hash(value)
            self._key = (type(value), value)
        except TypeError:
            self._key = None

    def __hash__(self):
        return hash(self._key) if self._key is not None else id(self.value)

    def __eq__(self, other):
        if not isinstance(other, _Static):
            return False
        if self._key is None or other._key is None:
            return self.value is other.value
        try:
            return bool(self._key == other._key)
        except Exception:  # noqa: BLE001  (an __eq__ that returns arrays)
            return self.value is other.value


def _zeros_for(shape, dtype):
    """What JAX uses for the (co)tangent of a leaf: zeros of its dtype, float0 for int/bool."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.zeros(shape, dtype)
    return np.zeros(shape, jax.dtypes.float0)


@dataclasses.dataclass(frozen=True)
class _In:
    """The differentiated arguments: their tree, which flat leaves are floating, where they sit
    among f's positional arguments, and the nondiff arguments passed through untouched."""

    treedef: Any
    is_float: tuple
    shapes: tuple
    dtypes: tuple
    positions: tuple
    n_args: int
    nondiff: tuple = ()

    def args(self, floats, consts) -> tuple:
        """f's positional arguments with the float leaves ``floats`` and the others ``consts``."""
        it_f, it_c = iter(floats), iter(consts)
        leaves = [next(it_f) if fl else next(it_c) for fl in self.is_float]
        dargs = jax.tree.unflatten(self.treedef, leaves)
        full: list = [None] * self.n_args
        for p, a in zip(self.positions, dargs, strict=True):
            full[p] = a
        for p, s in self.nondiff:
            full[p] = s.value
        return tuple(full)

    def tangents(self, float_tangents) -> tuple:
        """A tangent for every differentiated argument: ``float_tangents`` on the float leaves,
        zeros (float0 for int/bool) elsewhere — what ``jax.jvp`` expects."""
        it = iter(float_tangents)
        leaves = [next(it) if fl else _zeros_for(s, d)
                  for fl, s, d in zip(self.is_float, self.shapes, self.dtypes, strict=True)]  # fmt: skip
        return tuple(jax.tree.unflatten(self.treedef, leaves))


@dataclasses.dataclass(frozen=True)
class _Out:
    """f's output: its tree and which leaves are floating (the differentiated ones)."""

    treedef: Any
    is_float: tuple
    shapes: tuple
    dtypes: tuple
    labels: tuple

    def floats(self, out) -> list:
        leaves = self.treedef.flatten_up_to(out)
        return [leaf for leaf, fl in zip(leaves, self.is_float, strict=True) if fl]

    def cotangent(self, float_cotangents):
        """A cotangent for the whole output: ``float_cotangents`` on the float leaves, zeros
        (float0 for int/bool) elsewhere — what a pullback of ``jax.vjp`` expects."""
        it = iter(float_cotangents)
        leaves = [next(it) if fl else _zeros_for(s, d)
                  for fl, s, d in zip(self.is_float, self.shapes, self.dtypes, strict=True)]  # fmt: skip
        return jax.tree.unflatten(self.treedef, leaves)

    @property
    def float_shapes(self) -> list:
        return [s for s, fl in zip(self.shapes, self.is_float, strict=True) if fl]

    @property
    def float_dtypes(self) -> list:
        return [d for d, fl in zip(self.dtypes, self.is_float, strict=True) if fl]

    @property
    def float_labels(self) -> list:
        return [lab for lab, fl in zip(self.labels, self.is_float, strict=True) if fl]


def _float_fn(fn, spec: _In, out: _Out, consts) -> Callable:
    """F(float leaves) → f's float output leaves (a list); the other leaves held fixed."""

    def F(floats):
        return out.floats(fn(*spec.args(floats, consts)))

    return F


def _cast_like(values, like) -> list:
    return [v.astype(w.dtype) for v, w in zip(values, like, strict=True)]


# --- compiled programs ----------------------------------------------------------------------------
# The references (plain JAX: f in check_vjp / check_jvp, the reference in check_custom_vjp) are
# vectorised over the random directions with jax.vmap. A user's rule runs under jax.lax.map, so
# that it sees unbatched values (its behaviour under vmap is check_custom_vjp's "vmap" rows).
# Each check compiles two programs, one for the rule and one for every reference; where a
# combined program fails, its parts run alone, so that the failure is charged to its part.
def _per_member(member, xs):
    """``member`` on each batch member in turn (lax.map: unbatched); a batch of one inline."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        return jax.tree.map(lambda a: a[None], member(jax.tree.map(lambda a: a[0], xs)))
    return jax.lax.map(member, xs)


def _vjp_body(fn, spec, out, consts, floats_b, cs_b):
    """Per batch member: F(x) and ``jax.vjp`` of each stacked cotangent."""
    F = _float_fn(fn, spec, out, consts)

    def member(args):
        floats, cs = args
        y, pullback = jax.vjp(F, floats)
        return y, jax.vmap(lambda c: pullback(_cast_like(c, y))[0])(cs)

    return _per_member(member, (floats_b, cs_b))


def _jvp_body(fn, spec, out, consts, floats_b, ts):
    """Per batch member: F(x) and ``jax.jvp`` along each stacked tangent."""
    F = _float_fn(fn, spec, out, consts)

    def member(floats):
        jvp = jax.vmap(lambda t: jax.jvp(F, (floats,), (_cast_like(t, floats),))[1])
        return F(floats), jvp(ts)

    return _per_member(member, floats_b)


FD_OFFSETS = (1.0, -1.0, 0.5, -0.5)
"""The central differences' points x + s·h·t: D(h) from s = ±1, D(h/2) from s = ±1/2."""


def _fd_body(fn, spec, out, consts, floats, ts, hs):
    """F(x + s h t) for s in FD_OFFSETS and each stacked tangent t and its step h: one vmap over
    the 4·K points (one copy of F in the program)."""
    F = _float_fn(fn, spec, out, consts)
    K = hs.shape[0]
    s = jnp.repeat(jnp.asarray(FD_OFFSETS, hs.dtype), K) * jnp.tile(hs, len(FD_OFFSETS))

    def point(x, t):
        shape = (len(FD_OFFSETS) * K,) + (1,) * (t.ndim - 1)
        return x[None] + (s.reshape(shape) * jnp.tile(t, (len(FD_OFFSETS),) + (1,) * (t.ndim - 1))
                          ).astype(x.dtype)  # fmt: skip

    points = [point(x, t.astype(x.dtype)) for x, t in zip(floats, ts, strict=True)]
    values = jax.vmap(F)(points)
    return tuple([v[k * K : (k + 1) * K] for v in values] for k in range(len(FD_OFFSETS)))


def _grad_of_vjp_body(fn, spec, out, consts, floats, c, u_blocks):
    """∇ₓ ⟨VJP_F(x)(c)_i, u_i⟩ for each primal leaf i (u supported on leaf i, stacked): the
    derivative of the rule's backward pass, one cotangent leaf at a time (second order)."""
    F = _float_fn(fn, spec, out, consts)

    def s(x, u):
        y, pullback = jax.vjp(F, x)
        g = pullback(_cast_like(c, y))[0]
        return sum(jnp.sum(gi * ui.astype(gi.dtype)) for gi, ui in zip(g, u, strict=True))

    return jax.vmap(jax.grad(s), in_axes=(None, 0))(floats, u_blocks)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ref_program(fn, spec, out, parts, consts, floats_b, cs_b, ts, hs, c1, u):
    """The references one precision up: ``vjp`` / ``jvp`` of ``fn`` per batch member, its ``fd``
    values and ``g2`` (grad of vjp) at member 0."""
    res = {}
    if "vjp" in parts:
        res["vjp"] = _vjp_body(fn, spec, out, consts, floats_b, cs_b)
    if "jvp" in parts:
        res["jvp"] = _jvp_body(fn, spec, out, consts, floats_b, ts)
    first = [x[0] for x in floats_b]
    if "fd" in parts:
        res["fd"] = _fd_body(fn, spec, out, consts, first, ts, hs)
    if "g2" in parts:
        res["g2"] = _grad_of_vjp_body(fn, spec, out, consts, first, c1, u)
    return res


def _run_parts(program, statics: tuple, parts: tuple, args: tuple) -> dict:
    """``program(*statics, parts, *args)`` on the host; where it fails, each part alone (an
    exception in place of the part that fails)."""
    try:
        return jax.device_get(program(*statics, parts, *args))
    except Exception:  # noqa: BLE001
        if len(parts) == 1:
            raise
    res: dict = {}
    for part in parts:
        try:
            res.update(jax.device_get(program(*statics, (part,), *args)))
        except Exception as e:  # noqa: BLE001
            res[part] = e
    return res


def _normalize(result, spec: _In, fix: tuple) -> list:
    """The float leaves of a rule's per-primal result (None / wrong shape → zeros)."""
    leaves = spec.treedef.flatten_up_to(tuple(result))
    kept = []
    k = 0
    for leaf, fl, shape, dtype in zip(leaves, spec.is_float, spec.shapes, spec.dtypes, strict=True):
        if not fl:
            continue
        kept.append(jnp.asarray(leaf) if fix[k] in ("ok", "dtype") else jnp.zeros(shape, dtype))
        k += 1
    return kept


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _hand_vjp(vjp_fn, spec, out, fix, floats, consts, cs):
    """The user's ``vjp_fn(primals, c)`` for each stacked cotangent, its float leaves."""
    primals = spec.args(floats, consts)
    return jax.lax.map(lambda c: _normalize(vjp_fn(primals, out.cotangent(c)), spec, fix), cs)


def _normalize_out(result, out: _Out, fix: tuple) -> list:
    leaves = out.treedef.flatten_up_to(result)
    kept = []
    k = 0
    for leaf, fl, shape, dtype in zip(leaves, out.is_float, out.shapes, out.dtypes, strict=True):
        if not fl:
            continue
        kept.append(jnp.asarray(leaf) if fix[k] in ("ok", "dtype") else jnp.zeros(shape, dtype))
        k += 1
    return kept


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _hand_jvp(jvp_fn, spec, out, fix_primal, fix_tangent, floats, consts, ts):
    """The user's ``jvp_fn(primals, tangents)`` for each stacked tangent: float leaves of
    (primal_out, tangent_out)."""
    primals = spec.args(floats, consts)

    def one(t):
        y, ty = jvp_fn(primals, spec.tangents(t))
        return _normalize_out(y, out, fix_primal), _normalize_out(ty, out, fix_tangent)

    return jax.lax.map(one, ts)


def _custom_kernel(fn, spec, out, want_jvp, consts, floats, cs, ts):
    """f(x), the primal of jax.vjp(f), its VJP of each cotangent and (where f has forward mode)
    its jax.jvp along each tangent — what check_custom_vjp takes from f under jit and vmap. The
    directions run under lax.map: the rule sees no batch axis but the transform's own."""
    F = _float_fn(fn, spec, out, consts)
    y_plain = F(floats)
    y, pullback = jax.vjp(F, floats)
    vjps = jax.lax.map(lambda c: pullback(_cast_like(c, y))[0], cs)
    jts = None
    if want_jvp:
        jts = jax.lax.map(lambda t: jax.jvp(F, (floats,), (_cast_like(t, floats),))[1], ts)
    return y_plain, y, vjps, jts


def _vmap_kernel(fn, spec, out, want_jvp, consts, floats_b, cs_b, ts):
    """The kernel's quantities under ``jax.vmap``, batched over (member, cotangent) pairs and
    (member, tangent) pairs: B members' f(x); for each of their n cotangents the VJP, for each of
    the K tangents the JVP — reshaped to (B, n, …) and (B, K, …)."""
    F = _float_fn(fn, spec, out, consts)
    B, n = cs_b[0].shape[:2]

    def repeat(xs, k):
        return [jnp.repeat(x, k, axis=0) for x in xs]

    def vjp_one(fl, c):
        y, pullback = jax.vjp(F, fl)
        return y, pullback(_cast_like(c, y))[0]

    y_plain = jax.vmap(F)(floats_b)
    y_vjp, vjps = jax.vmap(vjp_one)(repeat(floats_b, n),
                                    [c.reshape(B * n, *c.shape[2:]) for c in cs_b])  # fmt: skip
    y_vjp = [y.reshape(B, n, *y.shape[1:])[:, 0] for y in y_vjp]
    vjps = [v.reshape(B, n, *v.shape[1:]) for v in vjps]
    jts = None
    if want_jvp:
        K = ts[0].shape[0]
        tiled = [jnp.tile(t, (B,) + (1,) * (t.ndim - 1)) for t in ts]
        jts = jax.vmap(lambda fl, t: jax.jvp(F, (fl,), (_cast_like(t, fl),))[1])(
            repeat(floats_b, K), tiled
        )
        jts = [j.reshape(B, K, *j.shape[1:]) for j in jts]
    return y_plain, y_vjp, vjps, jts


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _custom_program(fn, spec, out, want_jvp, parts, consts, floats, floats_b, cs, cs_b, ts, c1, u):
    """f under ``jit`` (member 0), under ``vmap`` (every member) and its ``g2`` (grad of vjp)."""
    res = {}
    if "jit" in parts:
        res["jit"] = _custom_kernel(fn, spec, out, want_jvp, consts, floats, cs, ts)
    if "vmap" in parts:
        res["vmap"] = _vmap_kernel(fn, spec, out, want_jvp, consts, floats_b, cs_b, ts)
    if "g2" in parts:
        res["g2"] = _grad_of_vjp_body(fn, spec, out, consts, floats, c1, u)
    return res


# --- argument handling ---------------------------------------------------------------------------
def _err(e: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _require_callable(value, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name}: expected a callable, got {type(value).__name__}")


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _tol_option(value, name: str, oracles: Sequence[str]) -> dict:
    """``rtol`` / ``atol``: None, one float for every oracle, or ``{oracle: value}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(oracles))
        if unknown:
            raise ValueError(
                f"{name}: unknown oracle(s) {', '.join(map(repr, unknown))}; expected keys among "
                + ", ".join(map(repr, oracles))
            )
        return {k: float(v) for k, v in value.items()}
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return {k: float(value) for k in oracles}
    raise TypeError(f"{name}: expected a float or an {{oracle: value}} dict, got {value!r}")


_NUMBER = (jax.Array, np.ndarray, np.generic, int, float, bool, complex)


@dataclasses.dataclass
class _Problem:
    """One call's point: the static spec, the float leaves (host copies and as given), the other
    leaves, and the labels."""

    spec: _In
    labels: list  # one per float leaf
    orders: list  # flat leaf index of each float leaf
    floats: list  # host NumPy copies, in their dtypes
    given: list  # the float leaves as the caller gave them
    consts: list  # the non-float leaves, as arrays
    skipped: list  # rows for the non-float leaves

    @property
    def dtypes(self) -> list:
        return [x.dtype for x in self.floats]

    @property
    def shapes(self) -> list:
        return [x.shape for x in self.floats]


def _problem(primals: tuple, names, nondiff: tuple = (), hint: str = "") -> _Problem:
    if not primals:
        raise ValueError(
            "primals: none given; pass the point as positional arguments after the rule, "
            "e.g. check_vjp(f, vjp_fn, x, W)"
        )
    n_args = len(primals)
    if names is not None:
        names = tuple(names)
        if len(names) != n_args:
            raise ValueError(f"names: {len(names)} labels for {n_args} primals")
    positions = tuple(i for i in range(n_args) if i not in nondiff)
    dargs = tuple(primals[i] for i in positions)
    with_path, treedef = jax.tree_util.tree_flatten_with_path(dargs)
    is_float, shapes, dtypes = [], [], []
    labels, orders, floats, given, consts, skipped = [], [], [], [], [], []
    for k, (path, leaf) in enumerate(with_path):
        pos = positions[path[0].idx]
        label = (names[pos] if names is not None else f"primals[{pos}]") + jax.tree_util.keystr(
            path[1:]
        )
        if not isinstance(leaf, _NUMBER):
            raise TypeError(
                f"primals: leaf {label} is a {type(leaf).__name__}, not an array or a number" + hint
            )
        dtype = jnp.dtype(jnp.result_type(leaf))
        shape = tuple(np.shape(leaf))
        fl = bool(jnp.issubdtype(dtype, jnp.floating))
        is_float.append(fl)
        shapes.append(shape)
        dtypes.append(str(dtype))
        if fl:
            labels.append(label)
            orders.append(k)
            floats.append(np.asarray(leaf, dtype))
            given.append(leaf)
        else:
            consts.append(jnp.asarray(leaf))
            why = (
                "complex leaves are not checked"
                if jnp.issubdtype(dtype, jnp.complexfloating)
                else "not differentiable: its tangent and cotangent are float0, as in jax.vjp"
            )
            skipped.append(_status_row(SKIPPED, label, f"{dtype} leaf: {why}", order=k,
                                       shape=shape, dtype=str(dtype)))  # fmt: skip
    if not floats:
        raise ValueError(
            "primals: no floating-point leaf to differentiate (leaves: "
            + ", ".join(f"{r.path} {r.dtype}" for r in skipped)
            + ")"
        )
    spec = _In(treedef, tuple(is_float), tuple(shapes), tuple(dtypes), positions, n_args,
               tuple((p, _Static(primals[p])) for p in sorted(nondiff)))  # fmt: skip
    return _Problem(spec, labels, orders, floats, given, consts, skipped)


def _out_spec(fn, prob: _Problem, who: str) -> _Out:
    """f's output structure at the primals, from ``jax.eval_shape`` (naming ``who`` on failure)."""
    try:
        shapes = jax.eval_shape(lambda fl, cs: fn(*prob.spec.args(fl, cs)), prob.floats,
                                prob.consts)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{who}: could not be traced at the primals ({_err(e)})") from None
    with_path, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    if not with_path:
        raise ValueError(f"{who}: returns no array (output {treedef})")
    is_float, sh, dt, labels = [], [], [], []
    for path, leaf in with_path:
        if not hasattr(leaf, "dtype"):
            raise TypeError(f"{who}: output leaf out{jax.tree_util.keystr(path)} is not an array")
        is_float.append(bool(jnp.issubdtype(leaf.dtype, jnp.floating)))
        sh.append(tuple(leaf.shape))
        dt.append(str(leaf.dtype))
        labels.append("out" + jax.tree_util.keystr(path))
    if not any(is_float):
        raise ValueError(f"{who}: no floating-point output leaf to differentiate ({shapes})")
    return _Out(treedef, tuple(is_float), tuple(sh), tuple(dt), tuple(labels))


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


# --- random draws ---------------------------------------------------------------------------------
def _normal(rng, shape, dtype) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape), dtype)


def _tangent_blocks(rng, prob: _Problem, n: int):
    """n random tangents per float leaf, each supported on that leaf only: (blocks, stacked)."""
    L = len(prob.floats)
    blocks = [_normal(rng, (n, *x.shape), x.dtype) for x in prob.floats]
    ts = [np.zeros((L * n, *x.shape), x.dtype) for x in prob.floats]
    for i in range(L):
        ts[i][i * n : (i + 1) * n] = blocks[i]
    return blocks, ts


def _steps(prob: _Problem) -> list[float]:
    """h per float leaf: fd_step_factor(ref dtype) · rms(leaf) (an all-zero leaf: the rms of all
    float leaves together, else 1)."""
    sq = [np.asarray(x, np.float64) ** 2 for x in prob.floats]
    total = float(np.sqrt(sum(float(s.sum()) for s in sq) / max(sum(s.size for s in sq), 1)))
    steps = []
    for x, s in zip(prob.floats, sq, strict=True):
        ref = tolerance.reference_dtype(x.dtype)
        rms = float(np.sqrt(s.mean())) if s.size else 0.0
        tiny = float(jnp.finfo(ref).tiny)
        scale = rms if rms > tiny else (total if total > tiny else 1.0)
        steps.append(tolerance.fd_step_factor(ref) * scale)
    return steps


def _up(values) -> list:
    """Host copies cast to their reference dtype (exact)."""
    return [np.asarray(v).astype(tolerance.reference_dtype(v.dtype)) for v in values]


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _rtol_of(dtypes, kind: str) -> float:
    """The loosest default rtol along a row's path (its primal leaf and the outputs it passes
    through): the dtypes JAX gives, never what the rule returned."""

    def one(d):
        if kind == "fd" and tolerance.reference_dtype(d) == jnp.dtype(d):
            return tolerance.default_rtol(d, "fd")  # no higher precision: the fd floor
        return tolerance.default_rtol(d, "analytic")

    return max(one(d) for d in dtypes)


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


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise inner products of two stacks (leading axis kept)."""
    return np.sum(a.reshape(a.shape[0], -1) * b.reshape(b.shape[0], -1), axis=1)


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))


def _identity_rows(oracle, prob, hand64, hand_dtypes, blocks, cs64, jts64, n, rtols, atols,
                   rtol_default, *, method, transform, extra_noise=None,
                   skip=()) -> list[Row]:  # fmt: skip
    """⟨J t, c⟩ (from ``jts64``: per output leaf, (L·n, …)) against ⟨t, Jᵀc⟩ (the hand's)."""
    K = len(prob.floats) * n
    reps = np.arange(K) % n
    lhs = sum(_dot(jt, c[reps]) for jt, c in zip(jts64, cs64, strict=True))
    norm_jt = np.sqrt(sum(_norm(jt) ** 2 for jt in jts64))
    norm_c = np.sqrt(sum(_norm(c) ** 2 for c in cs64))[reps]
    rows = []
    for i, label in enumerate(prob.labels):
        if i in skip:
            continue
        sl = slice(i * n, (i + 1) * n)
        t = blocks[i].astype(np.float64)
        g = hand64[i][:n]
        rhs = _dot(t, g)
        rt = rtols.get(oracle, rtol_default[i])
        atol = atols.get(oracle)
        noise = None
        if atol is None:
            noise = rt * (norm_jt[sl] * norm_c[sl] + _norm(t) * _norm(g))
            if extra_noise is not None:
                noise = noise + extra_noise[sl]
        rows.append(compare(rhs, lhs[sl], oracle=oracle, path=label, rtol=rt, atol=atol,
                            noise=noise, method=method, shape=prob.shapes[i],
                            order=prob.orders[i], dtype=hand_dtypes[i],
                            note=None))  # fmt: skip
        rows[-1] = dataclasses.replace(rows[-1], transform=transform)
    return rows


def _fd_identity(fd, cs64, hs, n, eps_ref):
    """From F(x ± h t), F(x ± h/2 t): J t ≈ D(h) per output leaf, and per tangent the
    allowance round-off + (4/3)|⟨D(h) − D(h/2), c⟩|."""
    fp, fm, fp2, fm2 = (_f64(v) for v in fd)
    K = hs.shape[0]
    reps = np.arange(K) % n

    def per(a):  # broadcast the per-tangent step over a stacked leaf
        return hs.reshape((K,) + (1,) * (a.ndim - 1))

    d1 = [(p - m) / (2 * per(p)) for p, m in zip(fp, fm, strict=True)]
    d2 = [(p - m) / per(p) for p, m in zip(fp2, fm2, strict=True)]
    s1 = sum(_dot(d, c[reps]) for d, c in zip(d1, cs64, strict=True))
    s2 = sum(_dot(d, c[reps]) for d, c in zip(d2, cs64, strict=True))
    mag = sum(_dot(np.abs(p) + np.abs(m), np.abs(c[reps]))
              for p, m, c in zip(fp, fm, cs64, strict=True))  # fmt: skip
    roundoff = tolerance.FD_NOISE_FACTOR * eps_ref * mag / (2 * hs)
    truncation = (4.0 / 3.0) * np.abs(s1 - s2)
    return d1, roundoff + truncation


# --- check_vjp ------------------------------------------------------------------------------------
def check_vjp(
    f: Callable,
    vjp_fn: Callable,
    *primals,
    names: Sequence[str] | None = None,
    key=None,
    n_pairs: int = 4,
    rtol: float | dict | None = None,
    atol: float | dict | None = None,
    title: str | None = None,
    raise_on_fail: bool = False,
) -> Report:
    """A user's VJP rule of any ``f`` (pytrees in, pytree out) against ``jax.vjp``, ``jax.jvp``
    and central finite differences of ``f``.

    The rule is called as ``vjp_fn(primals, cotangent)`` — ``primals`` the tuple of positional
    arguments, ``cotangent`` a pytree like ``f(*primals)`` — and returns a tuple with one
    cotangent pytree per primal (mirroring ``jax.jvp(f, primals, tangents)``)::

        def f(x, params):                      # params = {"W": ..., "b": ...}
            return jnp.tanh(x @ params["W"] + params["b"])

        def f_vjp(primals, c):
            x, p = primals
            dz = c * (1 - f(x, p) ** 2)
            return dz @ p["W"].T, {"W": x.T @ dz, "b": dz.sum(0)}

        check_vjp(f, f_vjp, x, {"W": W, "b": b}).raise_if_failed()

    Rows, one per float primal leaf (``primals[0]``, ``primals[1]['W']``, …) and oracle: ``vjp``
    (elementwise against ``jax.vjp(f)`` for ``n_pairs`` random cotangents), ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩``
    (J t by ``jax.jvp``), ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd`` (J t by central differences), ``zero
    cotangent``, ``linearity``; a ``shape/dtype`` row where the rule's cotangent differs from the
    primal's; a ``skipped`` row per int/bool leaf. The rule runs traced (``jax.jit`` around
    ``jax.lax.map``), so its rows carry transform ``jit``; the references run one precision up.
    Where ``jax.vjp`` / ``jax.jvp`` of ``f`` itself fails, those rows are ``not applicable`` and
    the finite-difference row still judges the rule.

    Args:
      f: the function, ``f(*primals)`` → pytree.
      vjp_fn: the rule, ``vjp_fn(primals, cotangent)`` → tuple of cotangents (``None`` = zeros).
      *primals: the point, pytrees of arrays; int/bool leaves are skipped (float0).
      names: one label per primal for the row paths instead of ``primals[i]``.
      key: int seed or ``jax.random`` key for every random vector (default seed 0).
      n_pairs: random cotangents (and tangents per leaf), at least 2.
      rtol, atol: a float, or ``{oracle: value}``; default: from the dtypes (module docstring).
      title: the report's title.
      raise_on_fail: raise ``AssertionError`` naming every failing row instead of returning.

    Raises:
      TypeError: ``f`` or ``vjp_fn`` not callable or not traceable, ``vjp_fn`` returning the
        wrong structure, a primal leaf that is not an array.
      ValueError: no primals, no float leaf, bad ``names`` / ``n_pairs`` / tolerance keys.
    """
    _require_callable(f, "f")
    _require_callable(vjp_fn, "vjp_fn")
    n = _count(n_pairs, "n_pairs", 2)
    prob = _problem(primals, names)
    out = _out_spec(f, prob, "f")
    rtols, atols = _tol_option(rtol, "rtol", VJP_ORACLES), _tol_option(atol, "atol", VJP_ORACLES)
    rng = host_rng(key)
    _, key_meta = resolve_key(key)

    fix, rows = _probe_vjp(vjp_fn, prob, out)
    bad = {i for i, fx in enumerate(fix) if fx == "bad"}

    cs = [_normal(rng, (n, *s), d) for s, d in zip(out.float_shapes, out.float_dtypes, strict=True)]
    blocks, ts = _tangent_blocks(rng, prob, n)
    alpha, beta = (float(v) for v in rng.standard_normal(2))
    combo = [(alpha * c[0].astype(np.float64) + beta * c[1].astype(np.float64)).astype(c.dtype)
             for c in cs]  # fmt: skip
    c_all = [
        np.concatenate([c, np.zeros_like(c[:1]), m[None]]) for c, m in zip(cs, combo, strict=True)
    ]
    try:
        hand = jax.device_get(
            _hand_vjp(vjp_fn, prob.spec, out, fix, prob.floats, prob.consts, c_all)
        )
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"vjp_fn: failed when traced with jax.jit ({_err(e)})") from None
    hand_dtypes = [str(h.dtype) for h in hand]
    hand64 = _f64(hand)

    hs = _steps(prob)
    K = len(prob.floats) * n
    hs_k = np.repeat(np.asarray(hs), n)
    refs = _references(
        f, prob, out, ("vjp", "jvp", "fd"), cs_b=[c[None] for c in cs], ts=ts, hs=hs_k
    )
    cs64 = _f64(cs)

    dts = [[str(d), *out.float_dtypes] for d in prob.dtypes]
    r_an = [_rtol_of(d, "analytic") for d in dts]
    r_fd = [_rtol_of(d, "fd") for d in dts]
    rows = list(prob.skipped) + rows
    # vjp: elementwise against jax.vjp(f)
    for i, label in enumerate(prob.labels):
        if i in bad:
            continue
        if isinstance(refs["vjp"], Exception):
            rows.append(_status_row(VJP, label, f"jax.vjp(f) failed: {_err(refs['vjp'])}",
                                    order=prob.orders[i], transform="jit"))  # fmt: skip
            continue
        ref = _f64(refs["vjp"][1][i][0])
        rows.append(dataclasses.replace(
            compare(hand[i][:n], ref, oracle=VJP, path=label, rtol=rtols.get(VJP, r_an[i]),
                    atol=atols.get(VJP), method=f"{n} random cotangents vs jax.vjp",
                    shape=prob.shapes[i], order=prob.orders[i]),
            transform="jit"))  # fmt: skip
    # dot-product identity, J t by jax.jvp
    if isinstance(refs["jvp"], Exception):
        rows += [_status_row(DOT, label, f"jax.jvp(f) failed: {_err(refs['jvp'])}",
                             order=prob.orders[i], transform="jit")
                 for i, label in enumerate(prob.labels) if i not in bad]  # fmt: skip
    else:
        jts64 = [_f64(jt[0]) for jt in refs["jvp"][1]]
        rows += _identity_rows(DOT, prob, hand64, hand_dtypes, blocks, cs64, jts64, n, rtols,
                               atols, r_an, method=f"{n} random pairs, J t by jax.jvp",
                               transform="jit", skip=bad)  # fmt: skip
    # dot-product identity, J t by central differences
    if isinstance(refs["fd"], Exception):
        rows += [_status_row(DOT_FD, label, f"f failed at perturbed points: {_err(refs['fd'])}",
                             order=prob.orders[i], transform="jit")
                 for i, label in enumerate(prob.labels) if i not in bad]  # fmt: skip
    else:
        eps_ref = max(tolerance.eps(tolerance.reference_dtype(d)) for d in out.float_dtypes)
        d1, allowance = _fd_identity(refs["fd"], cs64, hs_k, n, eps_ref)
        rows += _identity_rows(DOT_FD, prob, hand64, hand_dtypes, blocks, cs64, d1, n, rtols,
                               atols, r_fd, method=f"{n} random pairs, J t by central differences",
                               transform="jit", extra_noise=allowance, skip=bad)  # fmt: skip
    rows += _zero_linearity_rows(prob, hand, hand64, n, alpha, beta, rtols, atols, r_an, bad,
                                 transform="jit")  # fmt: skip

    meta = {"key": key_meta, "n_pairs": n, "alpha": alpha, "beta": beta,
            "rtol": dict(zip(prob.labels, r_an, strict=True)),
            "fd_rtol": dict(zip(prob.labels, r_fd, strict=True)),
            "fd_steps": dict(zip(prob.labels, hs, strict=True)),
            "reference_dtypes": {lab: str(tolerance.reference_dtype(d))
                                 for lab, d in zip(prob.labels, prob.dtypes, strict=True)},
            "skipped": [r.path for r in prob.skipped], "tangents": K}  # fmt: skip
    return _finish(title or f"VJP rule of {_name(f)}", rows, meta, raise_on_fail)


def _name(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _probe_vjp(vjp_fn, prob: _Problem, out: _Out):
    """Traces the rule once (``jax.eval_shape``): its structure (a TypeError naming ``vjp_fn``
    when wrong), and per float leaf whether its shape and dtype are JAX's."""
    spec = prob.spec
    zeros = [np.zeros(s, d) for s, d in zip(out.float_shapes, out.float_dtypes, strict=True)]
    try:
        result = jax.eval_shape(lambda fl, cs, c: vjp_fn(spec.args(fl, cs), out.cotangent(c)),
                                prob.floats, prob.consts, zeros)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise TypeError(
            f"vjp_fn: could not be traced as vjp_fn(primals, cotangent) ({_err(e)})"
        ) from None
    expected = jax.tree.structure(tuple(spec.args(prob.floats, prob.consts)))
    got = tuple(result) if isinstance(result, (list, tuple)) else result
    try:
        leaves = spec.treedef.flatten_up_to(got)
    except (ValueError, TypeError):
        raise TypeError(
            f"vjp_fn: returned {jax.tree.structure(result)}, expected a tuple with one cotangent "
            f"per primal: {expected}"
        ) from None
    return _fix(leaves, spec.is_float, spec.shapes, spec.dtypes, prob.labels, prob.orders,
                "the cotangent", "jit")  # fmt: skip


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


def _references(fn, prob: _Problem, out: _Out, parts: tuple, *, cs_b=None, ts=None, hs=None,
                members=None, c1=None, u=None) -> dict:  # fmt: skip
    """The references one precision up (``upcast`` inside ``reference_precision``), in one
    program; each entry the part's result, or the exception it raised."""
    members = [np.asarray(x)[None] for x in prob.floats] if members is None else members
    dtypes = [*map(str, prob.dtypes), *out.float_dtypes]
    with tolerance.reference_precision(dtypes):
        floats_b = _up(members)
        ref_dtype = jnp.result_type(*[x.dtype for x in floats_b])
        args = (
            prob.consts,
            floats_b,
            None if cs_b is None else _up(cs_b),
            None if ts is None else _up(ts),
            None if hs is None else np.asarray(hs, ref_dtype),
            None if c1 is None else _up(c1),
            None if u is None else _up(u),
        )
        return _run_parts(_ref_program, (fn, prob.spec, out), parts, args)


def _zero_linearity_rows(prob, hand, hand64, n, alpha, beta, rtols, atols, r_an, bad, *,
                         transform) -> list[Row]:  # fmt: skip
    """V11 and V12 from the hand results stacked as [c₁ … c_n, 0, α c₁ + β c₂]."""
    rows = []
    for i, label in enumerate(prob.labels):
        if i in bad:
            continue
        rows.append(dataclasses.replace(
            compare(hand[i][n], np.zeros(prob.shapes[i]), oracle=ZERO_COTANGENT, path=label,
                    rtol=0.0, atol=atols.get(ZERO_COTANGENT, 0.0), order=prob.orders[i]),
            transform=transform))  # fmt: skip
    for i, label in enumerate(prob.labels):
        if i in bad:
            continue
        v1, v2 = hand64[i][0], hand64[i][1]
        rt = rtols.get(LINEARITY, r_an[i])
        scale = abs(alpha) * float(np.max(np.abs(v1), initial=0)) + abs(beta) * float(
            np.max(np.abs(v2), initial=0)
        )
        rows.append(dataclasses.replace(
            compare(hand[i][n + 1], alpha * v1 + beta * v2, oracle=LINEARITY, path=label, rtol=rt,
                    atol=atols.get(LINEARITY, rt * scale), order=prob.orders[i]),
            transform=transform))  # fmt: skip
    return rows


# --- check_jvp ------------------------------------------------------------------------------------
def check_jvp(
    f: Callable,
    jvp_fn: Callable,
    *primals,
    names: Sequence[str] | None = None,
    key=None,
    n_tangents: int = 4,
    rtol: float | dict | None = None,
    atol: float | dict | None = None,
    title: str | None = None,
    raise_on_fail: bool = False,
) -> Report:
    """A user's JVP rule of any ``f`` against ``f``, ``jax.jvp`` and central finite differences.

    The rule is called like ``jax.jvp``: ``jvp_fn(primals, tangents)`` → ``(primal_out,
    tangent_out)``, ``primals`` and ``tangents`` tuples with one pytree per positional argument
    (the tangent of an int/bool leaf is float0, as ``jax.jvp`` passes it)::

        def softmax_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            y = jax.nn.softmax(x)
            return y, y * (t - jnp.sum(y * t, axis=-1, keepdims=True))

        check_jvp(jax.nn.softmax, softmax_jvp, x).raise_if_failed()

    Rows: ``primal`` (per output leaf, against ``f(*primals)``), ``jvp`` and ``fd`` (per input
    leaf: ``n_tangents`` random tangents supported on that leaf, every output leaf compared, the
    note naming the worst and the failing output leaves), ``linearity`` (per input leaf),
    ``zero tangent`` (per output leaf), ``shape/dtype`` where an output of the rule differs from
    JAX's. The rule runs traced (transform ``jit``); the references one precision up.

    Args: as :func:`check_vjp`, with ``n_tangents`` (≥ 2) random tangents per input leaf.

    Raises:
      TypeError: ``f`` / ``jvp_fn`` not callable or not traceable, ``jvp_fn`` not returning a
        ``(primal_out, tangent_out)`` pair shaped like ``f``'s output.
      ValueError: no primals, no float leaf, bad ``names`` / ``n_tangents`` / tolerance keys.
    """
    _require_callable(f, "f")
    _require_callable(jvp_fn, "jvp_fn")
    n = _count(n_tangents, "n_tangents", 2)
    prob = _problem(primals, names)
    out = _out_spec(f, prob, "f")
    rtols, atols = _tol_option(rtol, "rtol", JVP_ORACLES), _tol_option(atol, "atol", JVP_ORACLES)
    rng = host_rng(key)
    _, key_meta = resolve_key(key)
    fix_p, fix_t, rows = _probe_jvp(jvp_fn, prob, out)

    L = len(prob.floats)
    K = L * n
    blocks, ts = _tangent_blocks(rng, prob, n)
    alpha, beta = (float(v) for v in rng.standard_normal(2))
    t_all = []
    for i, t in enumerate(ts):
        extra = np.zeros((1 + L, *t.shape[1:]), t.dtype)
        b = blocks[i].astype(np.float64)
        extra[1 + i] = (alpha * b[0] + beta * b[1]).astype(t.dtype)  # [0] is the zero tangent
        t_all.append(np.concatenate([t, extra]))
    try:
        hand_p, hand_t = jax.device_get(
            _hand_jvp(jvp_fn, prob.spec, out, fix_p, fix_t, prob.floats, prob.consts, t_all)
        )
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"jvp_fn: failed when traced with jax.jit ({_err(e)})") from None
    hand_t64 = _f64(hand_t)

    hs = _steps(prob)
    hs_k = np.repeat(np.asarray(hs), n)
    refs = _references(f, prob, out, ("jvp", "fd"), ts=ts, hs=hs_k)
    out_labels = out.float_labels
    bad_t = {j for j, fx in enumerate(fix_t) if fx == "bad"}
    bad_p = {j for j, fx in enumerate(fix_p) if fx == "bad"}
    r_out = [_rtol_of([d], "analytic") for d in out.float_dtypes]
    rows = list(prob.skipped) + rows
    # primal output
    n_out = len(out_labels)
    for j, label in enumerate(out_labels):
        if j in bad_p:
            continue
        if isinstance(refs["jvp"], Exception):
            rows.append(
                _status_row(
                    PRIMAL,
                    label,
                    f"f failed one precision up: {_err(refs['jvp'])}",
                    order=j - n_out,
                    transform="jit",
                )
            )
            continue
        rows.append(dataclasses.replace(
            compare(hand_p[j][K], _f64(refs["jvp"][0][j][0]), oracle=PRIMAL, path=label,
                    rtol=rtols.get(PRIMAL, r_out[j]), atol=atols.get(PRIMAL),
                    method="vs f(*primals)", order=j - n_out),
            transform="jit"))  # fmt: skip

    def per_input(oracle, ref_of, kind, method, noise_of=None):
        result = []
        for i, label in enumerate(prob.labels):
            sl = slice(i * n, (i + 1) * n)
            per_out = []
            for j in range(n_out):
                if j in bad_t:
                    continue
                rt = rtols.get(oracle, _rtol_of([str(prob.dtypes[i]), out.float_dtypes[j]], kind))
                at = atols.get(oracle)
                noise = noise_of(j, sl) if (noise_of is not None and at is None) else None
                per_out.append(compare(hand_t[j][sl], ref_of(j, sl), oracle=oracle, path=label,
                                       rtol=rt, atol=at, noise=noise, method=method,
                                       order=prob.orders[i]))  # fmt: skip
            if per_out:
                labels_j = [lab for j, lab in enumerate(out_labels) if j not in bad_t]
                row = _combine(per_out, label, prob.orders[i], labels_j)
                result.append(dataclasses.replace(row, transform="jit"))
        return result

    if isinstance(refs["jvp"], Exception):
        rows += [_status_row(JVP, lab, f"jax.jvp(f) failed: {_err(refs['jvp'])}",
                             order=prob.orders[i], transform="jit")
                 for i, lab in enumerate(prob.labels)]  # fmt: skip
    else:
        jts = [_f64(jt[0]) for jt in refs["jvp"][1]]
        rows += per_input(JVP, lambda j, sl: jts[j][sl], "analytic",
                          f"{n} random tangents vs jax.jvp")  # fmt: skip
    if isinstance(refs["fd"], Exception):
        rows += [_status_row(FD, lab, f"f failed at perturbed points: {_err(refs['fd'])}",
                             order=prob.orders[i], transform="jit")
                 for i, lab in enumerate(prob.labels)]  # fmt: skip
    else:
        fp, fm, fp2, fm2 = (_f64(v) for v in refs["fd"])
        eps_ref = [tolerance.eps(tolerance.reference_dtype(d)) for d in out.float_dtypes]

        def h_of(a):
            return hs_k.reshape((K,) + (1,) * (a.ndim - 1))

        d1 = [(p - m) / (2 * h_of(p)) for p, m in zip(fp, fm, strict=True)]
        d2 = [(p - m) / h_of(p) for p, m in zip(fp2, fm2, strict=True)]
        allowance = [tolerance.FD_NOISE_FACTOR * e * (np.abs(p) + np.abs(m)) / (2 * h_of(p))
                     + (4.0 / 3.0) * np.abs(a - b)
                     for e, p, m, a, b in zip(eps_ref, fp, fm, d1, d2, strict=True)]  # fmt: skip
        rows += per_input(FD, lambda j, sl: d1[j][sl], "fd",
                          f"{n} random tangents vs central differences",
                          noise_of=lambda j, sl: allowance[j][sl])  # fmt: skip
    # linearity, per input leaf
    for i, label in enumerate(prob.labels):
        per_out = []
        for j in range(n_out):
            if j in bad_t:
                continue
            v1, v2 = hand_t64[j][i * n], hand_t64[j][i * n + 1]
            rt = rtols.get(LINEARITY, _rtol_of([str(prob.dtypes[i]), out.float_dtypes[j]],
                                               "analytic"))  # fmt: skip
            scale = abs(alpha) * float(np.max(np.abs(v1), initial=0)) + abs(beta) * float(
                np.max(np.abs(v2), initial=0)
            )
            per_out.append(compare(hand_t[j][K + 1 + i], alpha * v1 + beta * v2,
                                   oracle=LINEARITY, path=label, rtol=rt,
                                   atol=atols.get(LINEARITY, rt * scale),
                                   order=prob.orders[i]))  # fmt: skip
        if per_out:
            labels_j = [lab for j, lab in enumerate(out_labels) if j not in bad_t]
            rows.append(dataclasses.replace(_combine(per_out, label, prob.orders[i], labels_j),
                                            transform="jit"))  # fmt: skip
    for j, label in enumerate(out_labels):
        if j in bad_t:
            continue
        rows.append(dataclasses.replace(
            compare(hand_t[j][K], np.zeros(out.float_shapes[j]), oracle=ZERO_TANGENT, path=label,
                    rtol=0.0, atol=atols.get(ZERO_TANGENT, 0.0), order=j - n_out),
            transform="jit"))  # fmt: skip
    meta = {"key": key_meta, "n_tangents": n, "alpha": alpha, "beta": beta,
            "fd_steps": dict(zip(prob.labels, hs, strict=True)),
            "reference_dtypes": {lab: str(tolerance.reference_dtype(d))
                                 for lab, d in zip(prob.labels, prob.dtypes, strict=True)},
            "skipped": [r.path for r in prob.skipped]}  # fmt: skip
    return _finish(title or f"JVP rule of {_name(f)}", rows, meta, raise_on_fail)


def _probe_jvp(jvp_fn, prob: _Problem, out: _Out):
    spec = prob.spec
    zeros = [np.zeros(x.shape, x.dtype) for x in prob.floats]
    try:
        result = jax.eval_shape(lambda fl, cs, t: jvp_fn(spec.args(fl, cs), spec.tangents(t)),
                                prob.floats, prob.consts, zeros)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise TypeError(
            f"jvp_fn: could not be traced as jvp_fn(primals, tangents) ({_err(e)})"
        ) from None
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(
            f"jvp_fn: returned {jax.tree.structure(result)}, expected a pair (primal_out, "
            f"tangent_out), each with f's output structure {out.treedef}"
        )
    leaves = []
    for what, part in zip(("primal_out", "tangent_out"), result, strict=True):
        try:
            leaves.append(out.treedef.flatten_up_to(part))
        except (ValueError, TypeError):
            raise TypeError(
                f"jvp_fn: {what} has structure {jax.tree.structure(part)}, expected f's output "
                f"structure {out.treedef}"
            ) from None
    labels = out.labels
    orders = list(range(-len(labels), 0))
    fl_labels = [lab for lab, fl in zip(labels, out.is_float, strict=True) if fl]
    fl_orders = [o for o, fl in zip(orders, out.is_float, strict=True) if fl]
    fix_p, rows_p = _fix(leaves[0], out.is_float, out.shapes, out.dtypes, fl_labels, fl_orders,
                         "primal_out", "jit")  # fmt: skip
    fix_t, rows_t = _fix(leaves[1], out.is_float, out.shapes, out.dtypes, fl_labels, fl_orders,
                         "tangent_out", "jit")  # fmt: skip
    return fix_p, fix_t, rows_p + rows_t


# --- check_custom_vjp ------------------------------------------------------------------------------
def _rule_kind(f) -> str | None:
    if isinstance(f, jax.custom_vjp):
        return "custom_vjp"
    if isinstance(f, jax.custom_jvp):
        return "custom_jvp"
    return None


def _nondiff(value, f, n_args: int) -> tuple:
    if value is None:
        value = getattr(f, "nondiff_argnums", ()) or ()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"nondiff_argnums: expected a tuple of ints, got {value!r}") from None
    norm = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -n_args <= a < n_args:
            raise ValueError(f"nondiff_argnums: {a!r} is not a position among the {n_args} primals")
        norm.append(int(a) % n_args)
    if len(set(norm)) != len(norm):
        raise ValueError(f"nondiff_argnums: repeated positions in {items}")
    return tuple(sorted(norm))


def check_custom_vjp(
    f: Callable,
    reference: Callable,
    *primals,
    nondiff_argnums: Sequence[int] | None = None,
    key=None,
    n_pairs: int = 3,
    n_batch: int = 3,
    rtol: float | dict | None = None,
    atol: float | dict | None = None,
    title: str | None = None,
    raise_on_fail: bool = False,
) -> Report:
    """A ``jax.custom_vjp`` / ``jax.custom_jvp`` function ``f`` against its plain ``reference``
    (same signature, differentiable by JAX), under eager, ``jax.jit`` and ``jax.vmap``::

        @jax.custom_vjp
        def safe_log(x):
            return jnp.log(x)
        safe_log.defvjp(lambda x: (jnp.log(x), x),
                        lambda x, g: (g / jnp.maximum(x, 1e-30),))

        check_custom_vjp(safe_log, jnp.log, x).raise_if_failed()

    Rows (``transform`` eager / jit / vmap): ``primal`` (f against the reference, per output
    leaf) and ``vjp primal`` (the primal output of ``jax.vjp(f)``, a custom_vjp's fwd); ``vjp``
    (f's VJP of ``n_pairs`` random cotangents against the reference's, elementwise per input
    leaf); ``jvp`` (f's own forward mode against the reference's, where f has one — a
    custom_jvp; for a custom_vjp one ``not applicable`` row). Under ``vmap``, ``n_batch`` members
    with their own primals (member 0 the point, the others perturbed by
    :data:`BATCH_PERTURBATION`) and cotangents, each against its own unbatched reference.
    Eager only: ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩`` (forward mode from the reference), ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd``
    (central differences of the reference), ``zero cotangent``, ``linearity``. Under jit:
    ``grad of vjp`` (second order, u on one leaf at a time; ``not applicable`` with the error
    when the bwd is not differentiable).

    Args:
      f: the function with the custom rule (any callable is accepted; a plain one is noted).
      reference: the plain function, same signature and output structure.
      *primals: the point; int/bool leaves are skipped for differentiation (float0).
      nondiff_argnums: positions passed through untouched and not checked, as in
        ``jax.custom_vjp(nondiff_argnums=...)``; default: ``f.nondiff_argnums``.
      key, rtol, atol, title, raise_on_fail: as :func:`check_vjp`.
      n_pairs: random cotangents (and tangents per leaf), at least 2.
      n_batch: members of the ``vmap`` batch, at least 2.

    Raises:
      TypeError: ``f`` / ``reference`` not callable or not traceable, ``jax.vjp(f)`` failing
        eagerly (the rule's own error, e.g. a bwd of the wrong structure).
      ValueError: no primals, bad ``nondiff_argnums``, a ``reference`` whose output differs from
        f's in structure or shape, bad options.
    """
    _require_callable(f, "f")
    _require_callable(reference, "reference")
    n = _count(n_pairs, "n_pairs", 2)
    B = _count(n_batch, "n_batch", 2)
    if not primals:
        _problem(primals, None)
    nondiff = _nondiff(nondiff_argnums, f, len(primals))
    prob = _problem(primals, None, nondiff, hint=" (pass it through nondiff_argnums)")
    out = _out_spec(f, prob, "f")
    out_ref = _out_spec(reference, prob, "reference")
    if out_ref.treedef != out.treedef:
        raise ValueError(f"reference: output structure {out_ref.treedef} differs from f's "
                         f"{out.treedef}")  # fmt: skip
    if out_ref.shapes != out.shapes:
        raise ValueError(f"reference: output shapes {list(out_ref.shapes)} differ from f's "
                         f"{list(out.shapes)}")  # fmt: skip
    if out_ref.is_float != out.is_float:
        raise ValueError(f"reference: output dtypes {list(out_ref.dtypes)} differ from f's "
                         f"{list(out.dtypes)} in which leaves are floating")  # fmt: skip
    rtols = _tol_option(rtol, "rtol", CUSTOM_ORACLES)
    atols = _tol_option(atol, "atol", CUSTOM_ORACLES)
    rng = host_rng(key)
    _, key_meta = resolve_key(key)
    kind = _rule_kind(f)
    spec = prob.spec
    consts = prob.consts

    rows: list[Row] = list(prob.skipped)
    rows += [_status_row(SKIPPED, f"primals[{p}]", "nondiff_argnums: passed through untouched, "
                         "not checked", order=-1) for p in nondiff]  # fmt: skip
    if kind is None:
        rows.append(
            _status_row(
                "rule",
                _name(f),
                "f is neither a jax.custom_vjp nor a "
                "jax.custom_jvp: JAX's own derivative of f is checked",
                order=-1,
            )
        )
    for j, (a, b) in enumerate(zip(out.dtypes, out_ref.dtypes, strict=True)):
        if a != b:
            rows.append(
                _fail_row(
                    SIGNATURE,
                    out.labels[j],
                    f"f returns {a} where the reference returns {b}",
                    order=j - len(out.labels),
                    dtype=a,
                )
            )

    # forward mode of f: defined for a custom_jvp (and plain functions), not for a custom_vjp
    F0 = _float_fn(f, spec, out, consts)
    zeros_in = [np.zeros(x.shape, x.dtype) for x in prob.floats]
    zeros_out = [np.zeros(s, d) for s, d in zip(out.float_shapes, out.float_dtypes, strict=True)]
    try:  # lowering, not tracing alone, is where JAX refuses forward mode of a custom_vjp
        jax.jit(lambda fl, t: jax.jvp(F0, (fl,), (t,))).lower(prob.floats, zeros_in)
        jvp_error = None
    except Exception as e:  # noqa: BLE001
        jvp_error = e
    want_jvp = jvp_error is None

    # draws: cotangents per member, members' primals, tangents, the eager extras, u
    cs_b = [_normal(rng, (B, n, *s), d) for s, d in zip(out.float_shapes, out.float_dtypes,
                                                        strict=True)]  # fmt: skip
    members = []
    for x in prob.floats:
        spread = 1.0 + BATCH_PERTURBATION * rng.standard_normal((B - 1, *x.shape))
        others = (x.astype(np.float64)[None] * spread).astype(x.dtype)
        members.append(np.concatenate([x[None], others]))
    blocks, ts = _tangent_blocks(rng, prob, n)
    alpha, beta = (float(v) for v in rng.standard_normal(2))
    u = _tangent_blocks(rng, prob, 1)[1]  # second order: u on one leaf at a time
    cs0 = [c[0] for c in cs_b]
    combo = [(alpha * c[0].astype(np.float64) + beta * c[1].astype(np.float64)).astype(c.dtype)
             for c in cs0]  # fmt: skip

    # eager: f's own jax.vjp / jax.jvp, one call per random vector
    try:
        y_plain = F0(prob.given)
        y_vjp, pullback = jax.vjp(F0, prob.given)
        c_list = [[c[k] for c in cs0] for k in range(n)] + [zeros_out, combo]
        eager_vjps = [pullback(_cast_like([jnp.asarray(v) for v in c], y_vjp))[0]
                      for c in c_list]  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"f: jax.vjp(f, *primals) failed eagerly ({_err(e)})") from None
    eager_vjps = [np.stack([np.asarray(v[i]) for v in eager_vjps]) for i in range(len(prob.floats))]
    for i, v in enumerate(eager_vjps):
        _, problem = _check_leaf(
            v[0], prob.shapes[i], prob.dtypes[i], f"the cotangent of {prob.labels[i]}"
        )
        if problem:
            rows.append(
                _fail_row(
                    SIGNATURE,
                    prob.labels[i],
                    problem,
                    order=prob.orders[i],
                    shape=prob.shapes[i],
                    dtype=str(v.dtype),
                )
            )
    eager_jts = None
    if want_jvp:
        K = len(prob.floats) * n
        try:
            outs = [jax.jvp(F0, (prob.given,), ([jnp.asarray(t[k]) for t in ts],))[1]
                    for k in range(K)]  # fmt: skip
            eager_jts = [np.stack([np.asarray(o[j]) for o in outs]) for j in range(len(cs0))]
        except Exception as e:  # noqa: BLE001
            eager_jts = e
    hand = {"eager": (_host(y_plain), _host(y_vjp), [v[:n] for v in eager_vjps], eager_jts)}
    c_first = [c[0] for c in cs0]
    traced = _run_parts(_custom_program, (f, spec, out, want_jvp), ("jit", "vmap", "g2"),
                        (consts, prob.floats, members, cs0, cs_b, ts, c_first, u))  # fmt: skip
    hand["jit"], hand["vmap"] = traced["jit"], traced["vmap"]

    hs = _steps(prob)
    hs_k = np.repeat(np.asarray(hs), n)
    refs = _references(reference, prob, out, ("vjp", "jvp", "fd", "g2"), cs_b=cs_b,
                       ts=ts, hs=hs_k, members=members, c1=c_first, u=u)  # fmt: skip

    dts = [[str(d), *out.float_dtypes] for d in prob.dtypes]
    r_an = [_rtol_of(d, "analytic") for d in dts]
    r_fd = [_rtol_of(d, "fd") for d in dts]
    r_out = [_rtol_of([d], "analytic") for d in out.float_dtypes]
    out_labels = out.float_labels
    n_out = len(out_labels)

    ref_y = None
    for name in ("vjp", "jvp"):
        if not isinstance(refs.get(name), Exception) and refs.get(name) is not None:
            ref_y = [_f64(y) for y in refs[name][0]]  # (B, …) per output leaf
            break

    for transform in TRANSFORMS:
        h = hand[transform]
        sel = slice(None) if transform == "vmap" else 0  # the batch, or member 0
        if isinstance(h, Exception):
            rows.append(_fail_row(VJP, _name(f), f"f failed under {transform}: {_err(h)}",
                                  order=-1, transform=transform))  # fmt: skip
            continue
        y_plain_h, y_vjp_h, vjps_h, jts_h = h
        for oracle, ys in ((PRIMAL, y_plain_h), (VJP_PRIMAL, y_vjp_h)):
            for j, label in enumerate(out_labels):
                if ref_y is None:
                    rows.append(_status_row(oracle, label, "the reference failed one precision "
                                            f"up: {_err(refs['vjp'])}", order=j - n_out,
                                            transform=transform))  # fmt: skip
                    continue
                rows.append(dataclasses.replace(
                    compare(ys[j], ref_y[j][sel], oracle=oracle, path=label,
                            rtol=rtols.get(oracle, r_out[j]), atol=atols.get(oracle),
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
                compare(vjps_h[i], ref, oracle=VJP, path=label, rtol=rtols.get(VJP, r_an[i]),
                        atol=atols.get(VJP), shape=prob.shapes[i], order=prob.orders[i],
                        method=f"{n} random cotangents vs the reference"
                        + (f", {B} members" if sel != 0 else "")),
                transform=transform))  # fmt: skip
        if want_jvp:
            if isinstance(jts_h, Exception):
                rows.append(
                    _fail_row(
                        JVP,
                        _name(f),
                        f"jax.jvp(f) failed under {transform}: {_err(jts_h)}",
                        order=-1,
                        transform=transform,
                    )
                )
            elif isinstance(refs["jvp"], Exception):
                rows.append(
                    _status_row(
                        JVP,
                        _name(f),
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
                        rt = rtols.get(JVP, _rtol_of([str(prob.dtypes[i]), out.float_dtypes[j]],
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
    if not want_jvp:
        rows.append(_status_row(JVP, _name(f), f"forward mode of f is not defined ({kind or 'f'}); "
                                f"it is taken from the reference. {_err(jvp_error)}",
                                order=-1))  # fmt: skip

    # eager only: the identities against the reference's forward mode and f's differences
    hand64 = _f64(eager_vjps)
    hand_dtypes = [str(v.dtype) for v in eager_vjps]
    cs64 = _f64(cs0)
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
        rows += _identity_rows(DOT, prob, hand64, hand_dtypes, blocks, cs64, jts64, n, rtols,
                               atols, r_an, method=f"{n} random pairs, J t by the reference's "
                               "jax.jvp", transform="eager")  # fmt: skip
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
        eps_ref = max(tolerance.eps(tolerance.reference_dtype(d)) for d in out.float_dtypes)
        d1, allowance = _fd_identity(refs["fd"], cs64, hs_k, n, eps_ref)
        rows += _identity_rows(DOT_FD, prob, hand64, hand_dtypes, blocks, cs64, d1, n, rtols,
                               atols, r_fd, method=f"{n} random pairs, J t by central "
                               "differences of the reference", transform="eager",
                               extra_noise=allowance)  # fmt: skip
    rows += _zero_linearity_rows(prob, eager_vjps, hand64, n, alpha, beta, rtols, atols, r_an,
                                 set(), transform="eager")  # fmt: skip

    # second order, under jit
    g2, g2_error = (
        (None, traced["g2"]) if isinstance(traced["g2"], Exception) else (traced["g2"], None)
    )
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
                                rtol=rtols.get(GRAD_OF_VJP, max(r_an[i], r_an[k])),
                                atol=atols.get(GRAD_OF_VJP), order=prob.orders[i],
                                method="∇⟨VJP(x)(c)_i, u_i⟩ vs the reference's")
                        for k in range(len(prob.labels))]  # fmt: skip
            row = _combine(per_leaf, label, prob.orders[i], [f"∂/∂{lab}" for lab in prob.labels],
                           what="derivative")  # fmt: skip
            rows.append(dataclasses.replace(row, transform="jit"))

    meta = {"key": key_meta, "kind": kind or "plain function", "nondiff_argnums": list(nondiff),
            "n_pairs": n, "n_batch": B, "alpha": alpha, "beta": beta,
            "forward_mode_of_f": want_jvp, "fd_steps": dict(zip(prob.labels, hs, strict=True)),
            "rtol": dict(zip(prob.labels, r_an, strict=True)),
            "reference_dtypes": {lab: str(tolerance.reference_dtype(d))
                                 for lab, d in zip(prob.labels, prob.dtypes, strict=True)},
            "skipped": [r.path for r in prob.skipped]}  # fmt: skip
    rows.sort(key=lambda r: _ORACLE_RANK.get(r.oracle, -1))
    return _finish(
        title or f"{kind or 'function'} {_name(f)} vs {_name(reference)}", rows, meta, raise_on_fail
    )


_ORACLE_RANK = {o: k for k, o in enumerate((SKIPPED, "rule", SIGNATURE, *CUSTOM_ORACLES))}


def _host(values) -> list:
    return [np.asarray(v) for v in values]
