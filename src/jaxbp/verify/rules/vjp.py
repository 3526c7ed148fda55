"""check_vjp: a user's VJP rule of any pytree function against ``jax.vjp``, ``jax.jvp`` and
central finite differences of ``f``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxbp.verify import tolerance
from jaxbp.verify.oracles import host_rng, resolve_key
from jaxbp.verify.report import Report, compare
from jaxbp.verify.rules.draws import _f64, _normal, _rtol_of, _steps, _tangent_blocks
from jaxbp.verify.rules.identities import (
    _Cotangents,
    _fd_identity,
    _identity_rows,
    _zero_linearity_rows,
)
from jaxbp.verify.rules.problem import (
    _count,
    _Out,
    _out_spec,
    _Problem,
    _problem,
    _require_callable,
    _tol_option,
)
from jaxbp.verify.rules.programs import _hand_vjp, _references
from jaxbp.verify.rules.rows import (
    DOT,
    DOT_FD,
    VJP,
    VJP_ORACLES,
    _err,
    _finish,
    _fix,
    _name,
    _status_row,
)


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
    hand64 = _f64(hand)

    hs = _steps(prob)
    K = len(prob.floats) * n
    hs_k = np.repeat(np.asarray(hs), n)
    refs = _references(
        f, prob, out, ("vjp", "jvp", "fd"), cs_b=[c[None] for c in cs], ts=ts, hs=hs_k
    )
    cs64 = _f64(cs)
    hc = _Cotangents(prob, hand, hand64, blocks, cs64, n, alpha, beta, rtols, atols)

    dts = [[str(d), *out.float_dtypes] for d in prob.dtypes]
    r_an = [_rtol_of(d, "analytic") for d in dts]
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
        rows += _identity_rows(DOT, hc, jts64, r_an, method=f"{n} random pairs, J t by jax.jvp",
                               transform="jit", skip=bad)  # fmt: skip
    # dot-product identity, J t by central differences
    if isinstance(refs["fd"], Exception):
        rows += [_status_row(DOT_FD, label, f"f failed at perturbed points: {_err(refs['fd'])}",
                             order=prob.orders[i], transform="jit")
                 for i, label in enumerate(prob.labels) if i not in bad]  # fmt: skip
    else:
        d1, allowance, source = _fd_identity(refs["fd"], cs64, hs_k, n)
        rows += _identity_rows(DOT_FD, hc, d1, r_an,
                               method=f"{n} random pairs, J t by finite differences",
                               transform="jit", extra_noise=allowance, source=source,
                               skip=bad)  # fmt: skip
    rows += _zero_linearity_rows(hc, r_an, bad, transform="jit")

    meta = {"key": key_meta, "n_pairs": n, "alpha": alpha, "beta": beta,
            "rtol": dict(zip(prob.labels, r_an, strict=True)),
            "fd_steps": dict(zip(prob.labels, hs, strict=True)),
            "reference_dtypes": {lab: str(tolerance.reference_dtype(d))
                                 for lab, d in zip(prob.labels, prob.dtypes, strict=True)},
            "skipped": [r.path for r in prob.skipped], "tangents": K}  # fmt: skip
    return _finish(title or f"VJP rule of {_name(f)}", rows, meta, raise_on_fail)


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
