"""Checks of a hand-written VJP that need no finite differences (eqs. V10–V12).

For a function F with Jacobian J at the primals and a hand VJP c ↦ Jᵀc:

- dot-product identity (V10): ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ for random t and c — the left side by forward
  mode (``jax.jvp``, independent of the hand rule), the right side by the hand VJP. Checked once
  per input leaf (t supported on that leaf only), so a failure names the leaf. Round-off of the
  two inner products is bounded by ‖J t‖ ‖c‖ (Cauchy–Schwarz), which scales the tolerance.
- zero cotangent (V11): Jᵀ 0 = 0 exactly, on every leaf.
- linearity (V12): Jᵀ(α c₁ + β c₂) = α Jᵀc₁ + β Jᵀc₂.

:func:`check_vjp` works for any function; :func:`check_backward` and :func:`check_loss_vjp`
instantiate it for jaxbp's δ recursion (the VJP of the logits, B2/B3/B6) and for the custom VJP of
:func:`jaxbp.loss` (all four cotangents: params, x, y, λ).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import reference
from jaxbp.verify.oracles import host_rng
from jaxbp.verify.report import Report, Row, compare, default_rtol, environment

Array = jax.Array


def _vdot(a, b) -> Array:
    return sum(
        jnp.vdot(x.astype(jnp.result_type(x, y)), y.astype(jnp.result_type(x, y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _batched_jvp(fun, primals, stacked_tangents):
    """``jax.jvp(fun)`` along each tangent of a stacked batch, compiled once per call."""
    return jax.jit(jax.vmap(lambda t: jax.jvp(fun, primals, t)[1]))(stacked_tangents)


def check_vjp(
    fun: Callable,
    vjp_fn: Callable,
    primals: Sequence,
    *,
    names: Sequence[str] | None = None,
    key=None,
    n_pairs: int = 4,
    rtol: float | None = None,
    atol: float | None = None,
    title: str = "VJP identities",
    raise_on_fail: bool = False,
) -> Report:
    """Dot-product identity, zero cotangent and linearity of ``vjp_fn`` (eqs. V10–V12).

    Args:
      fun: ``fun(*primals)`` → output pytree; differentiated in forward mode only.
      vjp_fn: the hand VJP, ``vjp_fn(primals, cotangent)`` → a tuple with one cotangent pytree per
        primal (same structures as ``primals``).
      primals: the point, a sequence of pytrees of floating arrays.
      names: one label per primal for the row paths (default ``arg0``, ``arg1``, …).
      key: PRNG key or int seed for t, c, α, β (default seed 0).
      n_pairs: random (t, c) pairs per leaf for the dot-product identity.
      rtol, atol: tolerances (defaults: the dtype's analytic rtol, scaled as described above).
      title: the report's title.
      raise_on_fail: raise ``AssertionError`` naming every failing row instead of returning.
    """
    primals = tuple(primals)
    names = tuple(names) if names is not None else tuple(f"arg{i}" for i in range(len(primals)))
    if len(names) != len(primals):
        raise ValueError(f"names: {len(names)} labels for {len(primals)} primals")
    rng = host_rng(key)
    out = fun(*primals)
    dtype = jnp.result_type(*jax.tree.leaves(out))
    rtol_ = default_rtol(dtype, "analytic") if rtol is None else rtol
    zeros_p = jax.tree.map(jnp.zeros_like, primals)

    def check_structure(ct):
        ct = tuple(ct)
        if jax.tree.structure(ct) != jax.tree.structure(primals):
            raise TypeError(
                f"vjp_fn: returned structure {jax.tree.structure(ct)}, expected one cotangent per "
                f"primal with structure {jax.tree.structure(primals)}"
            )
        return ct

    def normal(shape, dtype):
        return jnp.asarray(rng.standard_normal(shape), dtype)

    cs = [jax.tree.map(lambda v: normal(jnp.shape(v), jnp.result_type(v)), out)
          for _ in range(n_pairs)]  # fmt: skip
    vjps = [check_structure(vjp_fn(primals, c)) for c in cs]

    flat_primals, treedef = jax.tree_util.tree_flatten_with_path(primals)
    leaves = [v for _, v in flat_primals]
    # Tangents: for leaf i and pair j, a random t on leaf i only — all jvps in one vmapped call.
    tangents, t_leaves = [], []
    for i, leaf in enumerate(leaves):
        for _ in range(n_pairs):
            t_leaf = normal(jnp.shape(leaf), jnp.result_type(leaf))
            t_leaves.append(t_leaf)
            tangents.append([t_leaf if k == i else jnp.zeros_like(v) for k, v in enumerate(leaves)])
    stacked = jax.tree.unflatten(treedef, [jnp.stack(col) for col in zip(*tangents, strict=True)])
    jts = _batched_jvp(fun, primals, stacked)
    c_rep = jax.tree.map(lambda *c: jnp.stack(c * len(leaves)), *cs)
    lhs_all = np.asarray(jax.vmap(_vdot)(jts, c_rep), np.float64)

    def sq(tree):
        return sum(jnp.sum(a * a, axis=tuple(range(1, a.ndim))) for a in jax.tree.leaves(tree))

    bound = np.sqrt(np.asarray(sq(jts), np.float64) * np.asarray(sq(c_rep), np.float64))
    rows: list[Row] = []
    for i, (path, leaf) in enumerate(flat_primals):
        label = names[path[0].idx] + jax.tree_util.keystr(path[1:])
        sl = slice(i * n_pairs, (i + 1) * n_pairs)
        rhs = [float(jnp.vdot(t_leaves[i * n_pairs + j], jax.tree.leaves(vjps[j])[i]))
               for j in range(n_pairs)]  # fmt: skip
        rows.append(compare(np.array(rhs), lhs_all[sl], oracle="⟨Jt,c⟩ = ⟨t,Jᵀc⟩", path=label,
                            rtol=rtol_, atol=atol, noise=None if atol is not None else
                            rtol_ * bound[sl], method=f"{n_pairs} random pairs",
                            shape=jnp.shape(leaf), order=i, dtype=jnp.result_type(leaf)))  # fmt: skip

    zero_ct = check_structure(vjp_fn(primals, jax.tree.map(jnp.zeros_like, out)))
    for i, ((path, _), z, ref) in enumerate(
        zip(flat_primals, jax.tree.leaves(zero_ct), jax.tree.leaves(zeros_p), strict=True)
    ):
        label = names[path[0].idx] + jax.tree_util.keystr(path[1:])
        rows.append(compare(z, ref, oracle="zero cotangent", path=label, rtol=0.0, atol=0.0,
                            order=i))  # fmt: skip

    alpha, beta = (float(v) for v in rng.standard_normal(2))
    combo = jax.tree.map(lambda a, b: alpha * a + beta * b, cs[0], cs[1 % n_pairs])
    v_combo = check_structure(vjp_fn(primals, combo))
    for i, ((path, _), vc, v1, v2) in enumerate(
        zip(flat_primals, jax.tree.leaves(v_combo), jax.tree.leaves(vjps[0]),
            jax.tree.leaves(vjps[1 % n_pairs]), strict=True)
    ):  # fmt: skip
        label = names[path[0].idx] + jax.tree_util.keystr(path[1:])
        expected = alpha * np.asarray(v1, np.float64) + beta * np.asarray(v2, np.float64)
        scale = abs(alpha) * float(np.max(np.abs(v1), initial=0)) + abs(beta) * float(
            np.max(np.abs(v2), initial=0)
        )
        rows.append(compare(vc, expected, oracle="linearity", path=label, rtol=rtol_,
                            atol=rtol_ * scale if atol is None else atol, order=i))  # fmt: skip

    meta = {"n_pairs": n_pairs, "alpha": alpha, "beta": beta, "rtol": rtol_, **environment()}
    report = Report(title, tuple(rows), meta)
    if raise_on_fail:
        report.raise_if_failed()
    return report


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def backward_vjp(params, x, cotangent, *, activation="sigmoid", output="softmax_ce"):
    """jaxbp's δ recursion as the VJP of (params, x) ↦ logits: ``(grads, input cotangent)``."""
    import jaxbp

    cache = jaxbp.forward(params, x, activation=activation, output=output)
    result = jaxbp.backward(params, cache, cotangent, activation=activation)
    return result.grads, result.input_delta


def check_backward(params, x, *, activation="sigmoid", output="softmax_ce", key=None,
                   rtol=None, atol=None, vjp_fn: Callable | None = None) -> Report:  # fmt: skip
    """V10–V12 for the δ recursion as the VJP of the logits z^(L)(params, x) (eqs. B2, B3, B6).

    ``vjp_fn(params, x, cotangent)`` → ``(grads, x cotangent)`` replaces jaxbp's
    :func:`backward_vjp` (a user's own recursion).
    """
    names = dict(activation=activation, output=output)
    hand = vjp_fn or functools.partial(backward_vjp, **names)
    return check_vjp(
        lambda p, x_: reference.forward(p, x_, **names)[0][-1],
        lambda primals, c: tuple(hand(*primals, c)),
        (tuple(params), x),
        names=("params", "x"),
        key=key,
        rtol=rtol,
        atol=atol,
        title="δ recursion as the VJP of the logits (dot-product identity, zero, linearity)",
    )


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _loss_vjp(primals, c, *, activation, output):
    """The pullback of :func:`jaxbp.loss` (its custom VJP rule) at ``primals`` applied to c."""
    import jaxbp

    _, pullback = jax.vjp(
        lambda p, x_, y_, l2_: jaxbp.loss(p, x_, y_, l2=l2_, activation=activation, output=output),
        *primals,
    )
    return pullback(c)


def check_loss_vjp(params, x, y, l2, *, activation="sigmoid", output="softmax_ce", key=None,
                   rtol=None, atol=None) -> Report:  # fmt: skip
    """V10–V12 for the custom VJP of :func:`jaxbp.loss` w.r.t. params, x, real targets y and λ."""
    names = dict(activation=activation, output=output)
    primals = (tuple(params), x, y, jnp.asarray(l2, params[0].W.dtype))
    return check_vjp(
        lambda p, x_, y_, l2_: reference.cost(p, x_, y_, l2=l2_, **names),
        lambda primals_, c: _loss_vjp(primals_, c, **names),
        primals,
        names=("params", "x", "y", "l2"),
        key=key,
        rtol=rtol,
        atol=atol,
        title="jaxbp.loss custom VJP (dot-product identity, zero, linearity)",
    )
