"""check_custom_vjp: a ``jax.custom_vjp`` / ``jax.custom_jvp`` function against its plain
reference, under eager, ``jax.jit`` and ``jax.vmap``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import tolerance
from jaxbp.verify.oracles import host_rng, resolve_key
from jaxbp.verify.report import Report, Row
from jaxbp.verify.rules.custom_rows import (
    _Against,
    _eager_identity_rows,
    _grad_of_vjp_rows,
    _transform_rows,
)
from jaxbp.verify.rules.draws import _f64, _normal, _rtol_of, _steps, _tangent_blocks
from jaxbp.verify.rules.identities import _Cotangents
from jaxbp.verify.rules.problem import (
    _cast_like,
    _count,
    _float_fn,
    _out_spec,
    _problem,
    _require_callable,
    _tol_option,
)
from jaxbp.verify.rules.programs import _custom_program, _CustomArgs, _references, _run_parts
from jaxbp.verify.rules.rows import (
    CUSTOM_ORACLES,
    JVP,
    SIGNATURE,
    SKIPPED,
    TRANSFORMS,
    _check_leaf,
    _err,
    _fail_row,
    _finish,
    _name,
    _status_row,
)

BATCH_PERTURBATION = 0.05
"""Relative spread of the batch members' primals under ``vmap`` (member 0 is the point itself):
x·(1 + 0.05·N(0, 1)) keeps every sign and zero, so no member crosses a kink of f at 0."""


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
    args = _CustomArgs(consts, prob.floats, members, cs0, cs_b, ts, c_first, u)
    traced = _run_parts(_custom_program, (f, spec, out, want_jvp), ("jit", "vmap", "g2"), args)
    hand["jit"], hand["vmap"] = traced["jit"], traced["vmap"]

    hs = _steps(prob)
    hs_k = np.repeat(np.asarray(hs), n)
    refs = _references(reference, prob, out, ("vjp", "jvp", "fd", "g2"), cs_b=cs_b,
                       ts=ts, hs=hs_k, members=members, c1=c_first, u=u)  # fmt: skip

    dts = [[str(d), *out.float_dtypes] for d in prob.dtypes]
    r_an = [_rtol_of(d, "analytic") for d in dts]
    r_out = [_rtol_of([d], "analytic") for d in out.float_dtypes]

    ref_y = None
    for name in ("vjp", "jvp"):
        if not isinstance(refs.get(name), Exception) and refs.get(name) is not None:
            ref_y = [_f64(y) for y in refs[name][0]]  # (B, …) per output leaf
            break
    ag = _Against(_name(f), prob, out, refs, ref_y, rtols, atols, r_an, r_out, n, B)

    for transform in TRANSFORMS:
        rows += _transform_rows(ag, transform, hand[transform], want_jvp)
    if not want_jvp:
        rows.append(_status_row(JVP, _name(f), f"forward mode of f is not defined ({kind or 'f'}); "
                                f"it is taken from the reference. {_err(jvp_error)}",
                                order=-1))  # fmt: skip

    # eager only: the identities against the reference's forward mode and f's differences
    hc = _Cotangents(prob, eager_vjps, _f64(eager_vjps), blocks, _f64(cs0), n, alpha, beta, rtols,
                     atols)  # fmt: skip
    rows += _eager_identity_rows(ag, hc, hs_k)
    rows += _grad_of_vjp_rows(ag, traced["g2"])

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
