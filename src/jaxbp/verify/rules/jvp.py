"""check_jvp: a user's JVP rule of any pytree function against ``f``, ``jax.jvp`` and central
finite differences of ``f``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxbp.verify import fd, tolerance
from jaxbp.verify.oracles import host_rng, resolve_key
from jaxbp.verify.report import Report, compare
from jaxbp.verify.rules.draws import _f64, _rtol_of, _steps, _tangent_blocks, fd_estimates
from jaxbp.verify.rules.problem import (
    _count,
    _Out,
    _out_spec,
    _Problem,
    _problem,
    _require_callable,
    _tol_option,
)
from jaxbp.verify.rules.programs import _hand_jvp, _references
from jaxbp.verify.rules.rows import (
    FD,
    JVP,
    JVP_ORACLES,
    LINEARITY,
    PRIMAL,
    ZERO_TANGENT,
    _combine,
    _err,
    _finish,
    _fix,
    _name,
    _status_row,
)


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

    def per_input(oracle, ref_of, kind, method, noise_of=None, source=None):
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
                                       rtol=rt, atol=at, allowance=noise, method=method,
                                       bound_source=source if noise is not None else None,
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
        ests = fd_estimates(refs["fd"], hs_k)
        source = fd.describe(ests[0].eval_dtype, step="h = 2·step_factor·rms of the leaf")
        rows += per_input(FD, lambda j, sl: ests[j].value[sl], "analytic",
                          f"{n} random tangents vs finite differences",
                          noise_of=lambda j, sl: ests[j].allowance[sl], source=source)  # fmt: skip
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
