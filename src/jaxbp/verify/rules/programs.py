"""The compiled programs of the rule checks: two per check, one for the rule and one for all
the references, keyed on the functions and the static descriptions (checking the same problem
again compiles nothing)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import tolerance
from jaxbp.verify.rules.draws import _up
from jaxbp.verify.rules.problem import _cast_like, _float_fn, _In, _Out, _Problem


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


class _RefArgs(NamedTuple):
    """The arrays of :func:`_ref_program`, the float ones one precision up; ``None`` where no
    part reads it. L float primal leaves, n random vectors per leaf, K = L·n tangents, B members."""

    consts: list  # the non-float leaves, as arrays
    floats_b: list  # per float primal leaf: (B, *shape), the members' primals (B = 1: the point)
    cs_b: list | None  # per float output leaf: (B, n, *shape), each member's cotangents
    ts: list | None  # per float primal leaf: (K, *shape), tangents i·n … supported on leaf i
    hs: np.ndarray | None  # (K,): each tangent's finite-difference step
    c1: list | None  # per float output leaf: (*shape), the cotangent of grad of vjp
    u: list | None  # per float primal leaf: (L, *shape), u supported on one leaf at a time


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ref_program(fn, spec, out, parts, args: _RefArgs):
    """The references one precision up: ``vjp`` / ``jvp`` of ``fn`` per batch member, its ``fd``
    values and ``g2`` (grad of vjp) at member 0."""
    consts, floats_b, cs_b, ts, hs, c1, u = args
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
    """``program(*statics, parts, args)`` on the host; where it fails, each part alone (an
    exception in place of the part that fails)."""
    try:
        return jax.device_get(program(*statics, parts, args))
    except Exception:  # noqa: BLE001
        if len(parts) == 1:
            raise
    res: dict = {}
    for part in parts:
        try:
            res.update(jax.device_get(program(*statics, (part,), args)))
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


class _CustomArgs(NamedTuple):
    """The arrays of :func:`_custom_program`, in the primals' dtypes (shapes as :class:`_RefArgs`;
    member 0 is the point)."""

    consts: list  # the non-float leaves, as arrays
    floats: list  # per float primal leaf: (*shape), the point
    floats_b: list  # per float primal leaf: (B, *shape), the members' primals
    cs: list  # per float output leaf: (n, *shape), member 0's cotangents
    cs_b: list  # per float output leaf: (B, n, *shape), each member's cotangents
    ts: list  # per float primal leaf: (K, *shape), tangents i·n … supported on leaf i
    c1: list  # per float output leaf: (*shape), the cotangent of grad of vjp
    u: list  # per float primal leaf: (L, *shape), u supported on one leaf at a time


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _custom_program(fn, spec, out, want_jvp, parts, args: _CustomArgs):
    """f under ``jit`` (member 0), under ``vmap`` (every member) and its ``g2`` (grad of vjp)."""
    consts, floats, floats_b, cs, cs_b, ts, c1, u = args
    res = {}
    if "jit" in parts:
        res["jit"] = _custom_kernel(fn, spec, out, want_jvp, consts, floats, cs, ts)
    if "vmap" in parts:
        res["vmap"] = _vmap_kernel(fn, spec, out, want_jvp, consts, floats_b, cs_b, ts)
    if "g2" in parts:
        res["g2"] = _grad_of_vjp_body(fn, spec, out, consts, floats, c1, u)
    return res


def _references(fn, prob: _Problem, out: _Out, parts: tuple, *, cs_b=None, ts=None, hs=None,
                members=None, c1=None, u=None) -> dict:  # fmt: skip
    """The references one precision up (``upcast`` inside ``reference_precision``), in one
    program; each entry the part's result, or the exception it raised."""
    members = [np.asarray(x)[None] for x in prob.floats] if members is None else members
    dtypes = [*map(str, prob.dtypes), *out.float_dtypes]
    with tolerance.reference_precision(dtypes):
        floats_b = _up(members)
        ref_dtype = jnp.result_type(*[x.dtype for x in floats_b])
        args = _RefArgs(
            prob.consts,
            floats_b,
            None if cs_b is None else _up(cs_b),
            None if ts is None else _up(ts),
            None if hs is None else np.asarray(hs, ref_dtype),
            None if c1 is None else _up(c1),
            None if u is None else _up(u),
        )
        return _run_parts(_ref_program, (fn, prob.spec, out), parts, args)
