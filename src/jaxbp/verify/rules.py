"""Checks of a hand-written VJP that need no finite differences (eqs. V10–V12).

For a function F with Jacobian J at the primals and a hand VJP c ↦ Jᵀc:

- dot-product identity (V10): ⟨J t, c⟩ = ⟨t, Jᵀ c⟩ for random t and c — the left side by forward
  mode (``jax.jvp``, independent of the hand rule), the right side by the hand VJP. Checked once
  per input leaf (t supported on that leaf only), so a failure names the leaf. Round-off of the
  two inner products is bounded by ‖J t‖ ‖c‖ (Cauchy–Schwarz), which scales the tolerance.
- zero cotangent (V11): Jᵀ 0 = 0 exactly, on every leaf.
- linearity (V12): Jᵀ(α c₁ + β c₂) = α Jᵀc₁ + β Jᵀc₂.

:func:`check_vjp` works for any function; :mod:`jaxbp.verify.mlp.identities` instantiates it for
jaxbp's δ recursion and for the custom VJP of :func:`jaxbp.loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.oracles import host_rng
from jaxbp.verify.report import Report, Row, compare, default_rtol, environment

Array = jax.Array


def _vdot(a, b) -> Array:
    return sum(
        jnp.vdot(x.astype(jnp.result_type(x, y)), y.astype(jnp.result_type(x, y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _sq_norm(tree) -> Array:
    return sum(jnp.sum(a.astype(jnp.float64 if a.dtype == jnp.float64 else jnp.float32) ** 2)
               for a in jax.tree.leaves(tree))  # fmt: skip


def _identity_numbers(fun, vjp_fn, primals, cs, ts, combo, zero):
    """Everything V10–V12 need from ``fun`` and ``vjp_fn``, in one compiled computation.

    Args:
      cs: n_pairs stacked cotangents; ts: n_leaves · n_pairs stacked tangents (leaf i's block
      non-zero only on leaf i); combo: α c₁ + β c₂; zero: a zero cotangent.

    Returns:
      (⟨J t, c⟩ per tangent, ‖J t‖ ‖c‖ per tangent, Jᵀc per pair, Jᵀ0, Jᵀ(α c₁ + β c₂)).
    """
    n_pairs = jax.tree.leaves(cs)[0].shape[0]
    jts = jax.lax.map(lambda t: jax.jvp(fun, primals, t)[1], ts)
    n_leaves = jax.tree.leaves(ts)[0].shape[0] // n_pairs
    c_rep = jax.tree.map(lambda c: jnp.tile(c, (n_leaves,) + (1,) * (c.ndim - 1)), cs)
    lhs = jax.vmap(_vdot)(jts, c_rep)
    bound = jnp.sqrt(jax.vmap(_sq_norm)(jts) * jax.vmap(_sq_norm)(c_rep))
    vjps = jax.lax.map(lambda c: tuple(vjp_fn(primals, c)), cs)
    return lhs, bound, vjps, tuple(vjp_fn(primals, zero)), tuple(vjp_fn(primals, combo))


_numbers = jax.jit(_identity_numbers, static_argnums=(0, 1))


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
        primal (same structures as ``primals``); traced with ``jax.jit`` (it must be traceable).
      primals: the point, a sequence of pytrees of floating arrays.
      names: one label per primal for the row paths (default ``arg0``, ``arg1``, …).
      key: PRNG key or int seed for t, c, α, β (default seed 0); drawn on the host.
      n_pairs: random (t, c) pairs per leaf for the dot-product identity (at least 2).
      rtol, atol: tolerances (defaults: the dtype's analytic rtol, scaled as described above).
      title: the report's title.
      raise_on_fail: raise ``AssertionError`` naming every failing row instead of returning.

    Raises:
      ValueError: bad ``names`` or ``n_pairs``; TypeError: ``vjp_fn`` returns the wrong structure.
    """
    primals = tuple(primals)
    names = tuple(names) if names is not None else tuple(f"arg{i}" for i in range(len(primals)))
    if len(names) != len(primals):
        raise ValueError(f"names: {len(names)} labels for {len(primals)} primals")
    if not isinstance(n_pairs, int) or n_pairs < 2:
        raise ValueError(f"n_pairs: expected an integer ≥ 2, got {n_pairs!r}")
    rng = host_rng(key)
    out = jax.eval_shape(fun, *primals)
    rtol_ = (
        default_rtol(jnp.result_type(*jax.tree.leaves(out)), "analytic") if rtol is None else rtol
    )
    returned = jax.tree.structure(
        tuple(jax.eval_shape(vjp_fn, primals, jax.tree.map(lambda o: jnp.zeros(o.shape, o.dtype), out)))
    )  # fmt: skip
    if returned != jax.tree.structure(primals):
        raise TypeError(
            f"vjp_fn: returned structure {returned}, expected one cotangent per primal with "
            f"structure {jax.tree.structure(primals)}"
        )

    # Host-drawn vectors (no random kernel compiled per shape).
    def normal(shape, dtype):
        return np.asarray(rng.standard_normal(shape), dtype)

    cs = jax.tree.map(lambda o: normal((n_pairs, *o.shape), o.dtype), out)
    flat_primals, treedef = jax.tree_util.tree_flatten_with_path(primals)
    leaves = [np.asarray(v) for _, v in flat_primals]
    t_blocks = [normal((n_pairs, *v.shape), v.dtype) for v in leaves]
    ts = jax.tree.unflatten(treedef, [
        np.concatenate([t_blocks[i] if k == i else np.zeros((n_pairs, *v.shape), v.dtype)
                        for i in range(len(leaves))])
        for k, v in enumerate(leaves)
    ])  # fmt: skip
    alpha, beta = (float(v) for v in rng.standard_normal(2))
    combo = jax.tree.map(lambda c: (alpha * c[0] + beta * c[1]).astype(c.dtype), cs)
    zero = jax.tree.map(lambda o: np.zeros(o.shape, o.dtype), out)
    lhs, bound, vjps, zero_ct, v_combo = _numbers(fun, vjp_fn, primals, cs, ts, combo, zero)
    lhs, bound = np.asarray(lhs, np.float64), np.asarray(bound, np.float64)
    vjps = [np.asarray(v, np.float64) for v in jax.tree.leaves(vjps)]

    rows: list[Row] = []
    labels = [names[path[0].idx] + jax.tree_util.keystr(path[1:]) for path, _ in flat_primals]
    for i, (label, leaf) in enumerate(zip(labels, leaves, strict=True)):
        sl = slice(i * n_pairs, (i + 1) * n_pairs)
        t_flat = t_blocks[i].astype(np.float64).reshape(n_pairs, -1)
        rhs = np.sum(t_flat * vjps[i].reshape(n_pairs, -1), axis=1)  # ⟨t, Jᵀc⟩ per pair
        rows.append(compare(rhs, lhs[sl], oracle="⟨Jt,c⟩ = ⟨t,Jᵀc⟩", path=label, rtol=rtol_,
                            atol=atol, noise=None if atol is not None else rtol_ * bound[sl],
                            method=f"{n_pairs} random pairs", shape=leaf.shape, order=i,
                            dtype=leaf.dtype))  # fmt: skip
    for i, (label, z, leaf) in enumerate(
        zip(labels, jax.tree.leaves(zero_ct), leaves, strict=True)
    ):
        rows.append(compare(z, np.zeros(leaf.shape), oracle="zero cotangent", path=label,
                            rtol=0.0, atol=0.0, order=i))  # fmt: skip
    for i, (label, vc) in enumerate(zip(labels, jax.tree.leaves(v_combo), strict=True)):
        v1, v2 = vjps[i][0], vjps[i][1]
        scale = abs(alpha) * float(np.max(np.abs(v1), initial=0)) + abs(beta) * float(
            np.max(np.abs(v2), initial=0)
        )
        rows.append(compare(vc, alpha * v1 + beta * v2, oracle="linearity", path=label,
                            rtol=rtol_, atol=rtol_ * scale if atol is None else atol,
                            order=i))  # fmt: skip

    meta = {"n_pairs": n_pairs, "alpha": alpha, "beta": beta, "rtol": rtol_, **environment()}
    report = Report(title, tuple(rows), meta)
    if raise_on_fail:
        report.raise_if_failed()
    return report
