"""Per-layer δ check: every hand-derived δ^(l), and the forward cache, against autodiff.

Autodiff has no δ to compare with — it never names ∂J/∂z^(l). We make it name it: the reference
network (:mod:`jaxbp.verify.mlp.reference`) adds a zero "probe" offset p^(l) to every pre-activation,
z^(l) + p^(l), and ``jax.grad`` with respect to the probes at p = 0 is exactly ∂J/∂z^(l) for every
layer at once (eq. V6). The hand side is the δ recursion seeded as :func:`jaxbp.value_and_grad`
seeds it, δ^(L) = (ŷ − y)/m (B1 with B4's 1/m), so δ[l] must equal ∂J/∂z^(l) row for row.

Because each δ is compared on its own, a wrong derivative in one layer shows as that layer's δ
differing while every δ above it (closer to the output) still passes; the report names the first
divergent layer from the output — the layer where the derivation went wrong — before the error
spreads into every gradient below it.

Names: ``δ[l]``, ``z[l]``, ``a[l]`` index weight layers as ``params[l]`` does: δ[l] and z[l] are
at the output of layer l (the lecture's δ^(l+2), z^(l+2)); a[l] = f(z[l]) is the lecture's a^(l+2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxbp.verify.mlp import reference
from jaxbp.verify.report import Report, Row, compare, default_rtol, environment

Array = jax.Array


def hand_deltas(params, x, y, *, activation="sigmoid", output="softmax_ce"):
    """The hand-derived δ's of :func:`jaxbp.backward`, seeded with (ŷ − y)/m (eqs. B1, B2)."""
    return _forward_and_deltas(params, x, y, activation=activation, output=output)[1]


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _forward_and_deltas(params, x, y, *, activation, output):
    import jaxbp
    from jaxbp.forward import as_targets

    cache = jaxbp.forward(params, x, activation=activation, output=output)
    y_t = as_targets(y, cache.z[-1].shape[-1], cache.z[-1].dtype)
    delta_out = jaxbp.get_output(output).delta(cache.a[-1], y_t) / x.shape[0]
    return cache, jaxbp.backward(params, cache, delta_out, activation=activation).deltas


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def probe_gradients(params, x, y, l2, *, activation, output):
    """∂J/∂z^(l) for every layer: ``jax.grad`` w.r.t. zero probes on each z^(l) (eq. V6)."""
    probes = reference.zero_probes(params, x.shape[0])
    return jax.grad(
        lambda p: reference.cost(params, x, y, p, activation=activation, output=output, l2=l2)
    )(probes)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _reference_forward(params, x, *, activation, output):
    return reference.forward(params, x, activation=activation, output=output)


def check_deltas(
    params,
    x,
    y,
    *,
    activation="sigmoid",
    output: str = "softmax_ce",
    l2=0.0,
    deltas_fn: Callable | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    raise_on_fail: bool = False,
) -> Report:
    """Compares each δ^(l) and the forward cache with autodiff's ∂J/∂z^(l) (eq. V6).

    Args:
      params, x, y, activation, output, l2: the problem, as for :func:`jaxbp.value_and_grad`.
      deltas_fn: ``deltas_fn(params, x, y)`` → one array per weight layer, δ[l] = ∂J/∂z^(l) of
        shape (m, n_out of layer l) — a user's own δ recursion; defaults to jaxbp's
        (:func:`hand_deltas`).
      rtol, atol: tolerances (defaults: the dtype's analytic rtol, leaf-scaled atol).
      raise_on_fail: raise ``AssertionError`` naming every failing δ instead of returning.

    Returns:
      A :class:`~jaxbp.verify.Report` with rows ``z[l]``, ``a[l]`` (oracle ``reference
      forward``) and ``δ[l]`` (oracle ``probe``); ``meta["first_divergent"]`` names the failing δ
      closest to the output, or is None.
    """
    from jaxbp.validation import check_call

    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    kw = dict(activation=activation, output=output)
    dtype = params[0].W.dtype
    rtol_ = default_rtol(dtype, "analytic") if rtol is None else rtol
    rows: list[Row] = []

    cache, default_deltas = _forward_and_deltas(params, x, y, **kw)
    ref_z, ref_a = _reference_forward(params, x, **kw)
    for l in range(len(params)):
        rows.append(compare(cache.z[l], ref_z[l], oracle="reference forward", path=f"z[{l}]",
                            rtol=rtol_, atol=atol, order=3 * l))  # fmt: skip
        rows.append(compare(cache.a[l + 1], ref_a[l + 1], oracle="reference forward",
                            path=f"a[{l}]", rtol=rtol_, atol=atol, order=3 * l + 1))  # fmt: skip

    deltas = default_deltas if deltas_fn is None else tuple(deltas_fn(params, x, y))
    if len(deltas) != len(params):
        raise ValueError(
            f"deltas_fn: returned {len(deltas)} arrays for a network with {len(params)} weight "
            "layers; expected one δ per layer"
        )
    probes = probe_gradients(params, x, y, jnp.asarray(l2, dtype), **kw)
    delta_rows = [
        compare(d, p, oracle="probe", path=f"δ[{l}]", rtol=rtol_, atol=atol, order=3 * l + 2)
        for l, (d, p) in enumerate(zip(deltas, probes, strict=True))
    ]
    rows += delta_rows
    failing = [l for l, r in enumerate(delta_rows) if not r.ok]
    meta = {
        "activation": activation,
        "output": output,
        "l2": float(l2),
        "m": int(x.shape[0]),
        "first_divergent": f"δ[{max(failing)}]" if failing else None,
        "convention": "δ[l] = ∂J/∂z^(l) at the output of params[l], 1/m included",
        **environment(),
    }
    report = Report("per-layer δ check (probes on every z)", tuple(rows), meta)
    if raise_on_fail:
        report.raise_if_failed()
    return report
