"""The autodiff reference: the same cost J(Θ) (:func:`jaxbp.cost.cost`) differentiated by
``jax.grad``. Everything hand-derived in jaxbp is checked against this."""

from __future__ import annotations

import functools

import jax

from jaxbp.cost import NO_PENALTY, cost
from jaxbp.params import Params
from jaxbp.validation import check_call

Array = jax.Array


def autodiff_value_and_grad(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
):
    """``jax.value_and_grad`` of J(Θ); same contract as :func:`jaxbp.value_and_grad`."""
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    return _autodiff_value_and_grad(params, x, y, l2, activation, output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _autodiff_value_and_grad(params, x, y, l2, activation, output):
    return jax.value_and_grad(cost)(params, x, y, activation=activation, output=output, l2=l2)
