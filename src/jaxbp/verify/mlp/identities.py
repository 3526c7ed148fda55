"""The VJP checks of :func:`jaxbp.verify.rules.check_vjp` (against ``jax.vjp``, the dot-product
identity by forward mode and by finite differences, zero cotangent, linearity; V10–V12)
instantiated for jaxbp's MLP: the δ recursion as the VJP of the logits (eqs. B2, B3, B6) and the
custom VJP of :func:`jaxbp.loss` (all four cotangents: params, x, y, λ). Rows are named
``params[0].W``, ``x``, ``y``, ``l2``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxbp.verify.mlp import reference
from jaxbp.verify.report import Report
from jaxbp.verify.rules import check_vjp


@functools.lru_cache(maxsize=64)
def _mlp_functions(activation, output):
    """(logits, δ-recursion VJP, reference cost, custom VJP of jaxbp.loss) for one network kind —
    the same function objects each time, so :func:`check_vjp`'s compiled computation is reused."""
    names = dict(activation=activation, output=output)

    def logits(p, x_):
        return reference.forward(p, x_, **names)[0][-1]

    def vjp(primals, c):
        return tuple(backward_vjp(*primals, c, **names))

    def cost(p, x_, y_, l2_):
        return reference.cost(p, x_, y_, l2=l2_, **names)

    def loss_vjp(primals, c):
        return _loss_vjp(primals, c, **names)

    return logits, vjp, cost, loss_vjp


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
    activation = tuple(activation) if isinstance(activation, list) else activation
    if vjp_fn is None:
        fun, vjp = _mlp_functions(activation, output)[:2]
    else:
        fun = _mlp_functions(activation, output)[0]

        def vjp(primals, c):
            return tuple(vjp_fn(*primals, c))

    return check_vjp(
        fun,
        vjp,
        tuple(params),
        x,
        names=("params", "x"),
        key=key,
        rtol=rtol,
        atol=atol,
        title="δ recursion as the VJP of the logits (jax.vjp, identities, zero, linearity)",
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
    activation = tuple(activation) if isinstance(activation, list) else activation
    primals = (tuple(params), x, y, jnp.asarray(l2, params[0].W.dtype))
    _, _, cost, vjp = _mlp_functions(activation, output)
    return check_vjp(
        cost,
        vjp,
        *primals,
        names=("params", "x", "y", "l2"),
        key=key,
        rtol=rtol,
        atol=atol,
        title="jaxbp.loss custom VJP (jax.vjp, identities, zero, linearity)",
    )
