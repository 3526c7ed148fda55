"""The hand-derived gradient under every transformation: eager, ``jit``, ``vmap``, ``jit∘vmap``,
and a recompilation guard.

Checks (each leaf against the reference network's ``jax.grad``, :mod:`jaxbp.verify.mlp.reference`):

- ``eager`` / ``jit``: the batch gradient (eqs. B1–B4).
- ``vmap`` / ``jit∘vmap``: per-example gradients — ``jax.vmap`` of the hand gradient over single
  examples — against ``vmap(jax.grad)`` of the reference cost.
- ``mean(vmap) = batch``: the mean of the hand per-example gradients equals the hand batch
  gradient (eq. V7, λ = 0). Both sides are hand-derived; a misplaced 1/m breaks it.
- ``recompilation``: after one warm-up call, further calls with new values of the same shapes
  compile nothing (eager calls of the public function, counted through ``jax.monitoring``), and a
  ``jax.jit`` of it traces once (eq. V8).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.mlp import reference
from jaxbp.verify.oracles import host_rng
from jaxbp.verify.report import Report, Row, compare, default_rtol, environment

Array = jax.Array

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def reference_value_and_grad(params, x, y, l2, *, activation, output):
    """(J, ∇J) of the reference cost by ``jax.value_and_grad``."""
    return jax.value_and_grad(reference.cost)(
        params, x, y, activation=activation, output=output, l2=l2
    )


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def reference_per_example(params, x, y, l2, *, activation, output):
    """``vmap(jax.grad)`` of the reference cost over single examples (each a batch of one)."""

    def one(x_t, y_t):
        return jax.grad(reference.cost)(
            params, x_t[None], y_t[None], activation=activation, output=output, l2=l2
        )

    return jax.vmap(one)(x, y)


def compare_trees(hand, ref, *, oracle: str, rtol: float, atol=None, prefix: str = "") -> list[Row]:
    """One :func:`~jaxbp.verify.report.compare` row per leaf, paths by ``keystr``.

    Raises:
      TypeError: the two trees differ in structure, naming both.
    """
    if jax.tree.structure(hand) != jax.tree.structure(ref):
        raise TypeError(
            f"{oracle}: result has structure {jax.tree.structure(hand)}, expected "
            f"{jax.tree.structure(ref)}"
        )
    flat, _ = jax.tree_util.tree_flatten_with_path(hand)
    return [
        compare(
            h,
            r,
            oracle=oracle,
            path=prefix + jax.tree_util.keystr(path),
            rtol=rtol,
            atol=atol,
            order=i,
        )  # fmt: skip
        for i, ((path, h), r) in enumerate(zip(flat, jax.tree.leaves(ref), strict=True))
    ]


class CompileCounter:
    """Counts XLA compilations and traces while active (``with CompileCounter() as c: …``)."""

    def __init__(self):
        self.compiles = 0
        self.traces = 0

    def _listener(self, event, duration, **kwargs):
        del duration, kwargs
        if event == _COMPILE_EVENT:
            self.compiles += 1
        elif event == _TRACE_EVENT:
            self.traces += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


def _count_row(path: str, observed: int, *, what: str, order: int) -> Row:
    return Row(
        oracle="recompilation", path=path, shape=(), dtype="-", method=what, n=1,
        max_abs=float(observed), max_rel=float(observed), norm_rel=float(observed),
        worst_index=None, value=float(observed), reference=0.0, rtol=0.0, atol=0.0,
        ok=observed == 0, order=order, error=float(observed), bound=0.0,
        problem=None if observed == 0 else f"{observed} unexpected {what} with unchanged shapes",
    )  # fmt: skip


def recompilation_rows(value_and_grad_fn: Callable, params, batches, kw: dict) -> list[Row]:
    """V8: no compilation on repeated eager calls; one trace of a ``jax.jit`` over many calls.

    Args:
      value_and_grad_fn: the public hand gradient.
      params: parameters.
      batches: at least two (x, y) pairs of identical shapes and dtypes.
      kw: activation/output/l2 keywords.
    """
    value_and_grad_fn(params, *batches[0], **kw)  # warm-up: compiles once
    jax.block_until_ready(params)
    with CompileCounter() as eager:
        for x, y in batches[1:]:
            jax.block_until_ready(value_and_grad_fn(params, x, y, **kw))
    traces = []

    def traced(p, x, y):
        traces.append(1)  # runs only while tracing
        return value_and_grad_fn(p, x, y, **kw)

    jitted = jax.jit(traced)
    for x, y in batches:
        jax.block_until_ready(jitted(params, x, y))
    return [
        _count_row("(eager calls)", eager.compiles, what="compilations", order=0),
        _count_row("(jit traces)", len(traces) - 1, what="extra traces", order=1),
    ]


class _Wrapped(NamedTuple):
    jit: Callable
    vmap: Callable
    jit_vmap: Callable


@functools.lru_cache(maxsize=64)
def _wrappers(vag: Callable, items: tuple) -> _Wrapped:
    """``jit``, per-example ``vmap`` and ``jit∘vmap`` of ``vag`` with fixed keywords — built once
    per (function, keywords) so that checking the same problem again compiles nothing new."""
    kw = dict(items)

    def per_example(p, x_, y_):
        return jax.vmap(lambda x_t, y_t: vag(p, x_t, y_t, **kw)[1])(x_, y_)

    return _Wrapped(jax.jit(functools.partial(vag, **kw)), per_example, jax.jit(per_example))


def check_transforms(
    params,
    x,
    y,
    *,
    activation="sigmoid",
    output: str = "softmax_ce",
    l2=0.0,
    value_and_grad_fn: Callable | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    key=None,
    raise_on_fail: bool = False,
) -> Report:
    """The hand gradient eager, under ``jit``, ``vmap``, ``jit∘vmap``, and the recompilation guard.

    Args:
      params, x, y, activation, output, l2: the problem, as for :func:`jaxbp.value_and_grad`;
        ``y`` must have one row per example (labels (m,) or targets (m, K)).
      value_and_grad_fn: the hand gradient, called as
        ``value_and_grad_fn(params, x, y, activation=…, output=…, l2=…)`` → ``(J, grads)``, also on
        a single example (x of shape (n,)); default :func:`jaxbp.value_and_grad`.
      rtol, atol: tolerances (defaults: the dtype's analytic rtol, leaf-scaled atol).
      key: PRNG key or seed for the extra same-shape batches of the recompilation guard.
      raise_on_fail: raise ``AssertionError`` naming every failing row instead of returning.
    """
    import jaxbp
    from jaxbp.validation import check_call

    vag = value_and_grad_fn or jaxbp.value_and_grad
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    names = dict(activation=activation, output=output)
    kw = dict(names, l2=l2)
    dtype = params[0].W.dtype
    rtol = default_rtol(dtype, "analytic") if rtol is None else rtol
    l2_arr = jnp.asarray(l2, dtype)
    rows: list[Row] = []

    J_ref, g_ref = reference_value_and_grad(params, x, y, l2_arr, **names)

    def add(hand, ref, oracle, value=None):
        if value is not None:
            rows.append(compare(value, J_ref, oracle=oracle, path="(value)", rtol=rtol,
                                atol=atol, method="scalar", order=-1))  # fmt: skip
        rows.extend(compare_trees(hand, ref, oracle=oracle, rtol=rtol, atol=atol))

    wrapped = _wrappers(vag, tuple(sorted(kw.items())))
    J, g = vag(params, x, y, **kw)
    add(g, g_ref, "eager", J)
    J, g = wrapped.jit(params, x, y)
    add(g, g_ref, "jit", J)
    ref_per = reference_per_example(params, x, y, l2_arr, **names)
    add(wrapped.vmap(params, x, y), ref_per, "vmap")
    add(wrapped.jit_vmap(params, x, y), ref_per, "jit∘vmap")

    no_l2 = dict(names, l2=0.0)
    per = _wrappers(vag, tuple(sorted(no_l2.items()))).vmap(params, x, y)
    mean_per = jax.tree.map(lambda a: np.mean(np.asarray(a, np.float64), axis=0), per)  # host
    add(vag(params, x, y, **no_l2)[1], mean_per, "mean(vmap) = batch")

    rng = host_rng(key)
    batches = [(x, y)]
    for _ in range(2):
        x_new = np.asarray(x) + 0.1 * rng.standard_normal(x.shape)  # on the host: no compile
        batches.append((jnp.asarray(x_new, x.dtype), y))
    rows += recompilation_rows(vag, params, batches, kw)

    meta = {"activation": activation, "output": output, "l2": float(l2), "m": int(x.shape[0]),
            "rtol": rtol, **environment()}  # fmt: skip
    report = Report(
        "transformations (eager, jit, vmap, jit∘vmap, recompilation)", tuple(rows), meta
    )
    if raise_on_fail:
        report.raise_if_failed()
    return report


def per_example_rows(params, x, y, *, activation, output, rtol, atol=None) -> list[Row]:
    """jaxbp's own per-example paths against ``vmap(jax.grad)``: :func:`jaxbp.per_example_grads`
    and ``vmap(jax.grad(jaxbp.loss))`` through the custom VJP (λ = 0)."""
    import jaxbp

    names = dict(activation=activation, output=output)
    ref = reference_per_example(params, x, y, jnp.asarray(0.0, params[0].W.dtype), **names)
    rows = compare_trees(
        jaxbp.per_example_grads(params, x, y, **names), ref, oracle="per_example_grads",
        rtol=rtol, atol=atol,
    )  # fmt: skip
    rows += compare_trees(
        _vmap_grad_loss(params, x, y, **names), ref, oracle="vmap(grad(loss))", rtol=rtol,
        atol=atol,
    )  # fmt: skip
    return rows


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _vmap_grad_loss(params, x, y, *, activation, output):
    """``vmap(jax.grad(jaxbp.loss))`` over single examples: per-example through the custom VJP."""
    import jaxbp

    grad = jax.grad(functools.partial(jaxbp.loss, activation=activation, output=output))
    return jax.vmap(grad, in_axes=(None, 0, 0))(params, x, y)
