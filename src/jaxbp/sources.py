"""The gradient sources: one registry, one name per thing, read by train, verify, bench and the CLI.

Every source is a function with the contract of :func:`jaxbp.value_and_grad`:

  ``(params, x, y, *, activation="sigmoid", output="softmax_ce", l2=None) -> (J, grads)``

J(Θ) with its L2 term and ∂J/∂Θ with exactly the structure of ``params``; ``l2=None``
(:data:`jaxbp.cost.NO_PENALTY`) means no penalty term at all, a number (``0.0`` included) is an
ordinary λ. All agree to rounding (``tests/test_sources.py``); they differ in how they get there:

============ ===================================================================================
name         gradient
============ ===================================================================================
manual       the hand-derived δ recursion in batched form (:func:`jaxbp.value_and_grad`, B1–B4)
autodiff     ``jax.grad`` of the same cost (:func:`jaxbp.autodiff_value_and_grad`): the reference
graph        the lecture's node-by-node computational graph (:func:`jaxbp.graph.value_and_grad`)
scan         the lecture's per-sample loop as a ``lax.scan`` (:func:`jaxbp.scan_value_and_grad`)
custom_vjp   ``jax.value_and_grad`` of :func:`jaxbp.loss`, JAX's reverse mode calling our rule
vmap         per-example gradients by ``jax.vmap``, averaged, plus the L2 term
============ ===================================================================================

Networks of :mod:`jaxbp.layers` (the CNN of ``jaxbp train --model cnn``) have their own, smaller
table, :data:`LAYER_SOURCES` — ``manual`` (the layers' hand-derived backward chained by
:func:`jaxbp.layers.value_and_grad`), ``autodiff`` (:func:`jaxbp.layers.autodiff_value_and_grad`)
and ``custom_vjp`` (``jax.value_and_grad`` of :func:`jaxbp.layers.loss`) — under the same names,
each ``(network, params, x, y, *, output, l2=None, key=None) -> (J, grads)``.

Example:
  >>> J, grads = jaxbp.sources.source("scan")(params, x, labels, activation="tanh", l2=0.1)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import MappingProxyType

import jax

from jaxbp import graph, layers
from jaxbp.autodiff import autodiff_value_and_grad
from jaxbp.backprop import value_and_grad as manual_value_and_grad
from jaxbp.cost import NO_PENALTY
from jaxbp.params import Params
from jaxbp.per_sample import scan_value_and_grad, vmap_value_and_grad
from jaxbp.validation import check_call
from jaxbp.vjp import loss

Array = jax.Array
ValueAndGrad = Callable[..., tuple[Array, Params]]


def custom_vjp_value_and_grad(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
):
    """``jax.value_and_grad(jaxbp.loss)``: the hand δ recursion reached through ``jax.custom_vjp``.

    Same contract as :func:`jaxbp.value_and_grad`.
    """
    checked = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, checked)
    return _custom_vjp_value_and_grad(params, x, y, l2, activation=activation, output=output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _custom_vjp_value_and_grad(params, x, y, l2, *, activation, output):
    return jax.value_and_grad(loss)(params, x, y, activation=activation, output=output, l2=l2)


SOURCES: MappingProxyType[str, ValueAndGrad] = MappingProxyType(
    {
        "manual": manual_value_and_grad,
        "autodiff": autodiff_value_and_grad,
        "graph": graph.value_and_grad,
        "scan": scan_value_and_grad,
        "custom_vjp": custom_vjp_value_and_grad,
        "vmap": vmap_value_and_grad,
    }
)
"""Name → ``value_and_grad``-contract function, read-only (module docstring)."""

NAMES: tuple[str, ...] = tuple(SOURCES)
"""Every source name, in the registry's order."""

DESCRIPTIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "manual": "the hand-derived δ recursion in batched form (eqs. B1–B4)",
        "autodiff": "jax.grad of the same cost: the reference",
        "graph": "the lecture's node-by-node computational graph (eqs. G1–G4)",
        "scan": "the lecture's per-sample loop as a lax.scan over examples (eq. B5)",
        "custom_vjp": "jax.value_and_grad of jaxbp.loss, whose custom VJP is the δ recursion",
        "vmap": "per-example gradients by jax.vmap, averaged, plus the L2 term",
    }
)
"""Name → one line saying what the source computes."""


def _layers_manual(network, params, x, y, *, output, l2=None, key=None):
    kw = dict(output=output, l2=l2, key=key)
    (J, _), grads = layers.value_and_grad(network, params, x, y, **kw)
    return J, grads


def _layers_autodiff(network, params, x, y, *, output, l2=None, key=None):
    kw = dict(output=output, l2=l2, key=key)
    (J, _), grads = layers.autodiff_value_and_grad(network, params, x, y, **kw)
    return J, grads


def _layers_custom_vjp(network, params, x, y, *, output, l2=None, key=None):
    kw = dict(output=output, l2=l2, key=key)
    return jax.value_and_grad(lambda p: layers.loss(network, p, x, y, **kw))(params)


LAYER_SOURCES: MappingProxyType[str, Callable] = MappingProxyType(
    {"manual": _layers_manual, "autodiff": _layers_autodiff, "custom_vjp": _layers_custom_vjp}
)
"""Name → ``(network, params, x, y, *, output, l2=None, key=None) -> (J, grads)`` for a network
of :mod:`jaxbp.layers` (module docstring); training mode, ``key`` for its dropout masks."""

LAYER_NAMES: tuple[str, ...] = tuple(LAYER_SOURCES)
"""The source names a :mod:`jaxbp.layers` network (``model cnn``) trains with."""

LAYER_DESCRIPTIONS: MappingProxyType[str, str] = MappingProxyType(
    {
        "manual": "each layer's hand-derived backward, chained (jaxbp.layers.value_and_grad)",
        "autodiff": "jax.grad of the same forward pass: the reference",
        "custom_vjp": "jax.value_and_grad of jaxbp.layers.loss, whose custom VJP is the chain",
    }
)


def layer_source(name: str) -> Callable:
    """The gradient function of a source name for a :mod:`jaxbp.layers` network.

    Raises:
      ValueError: ``name`` is not one of :data:`LAYER_NAMES`, naming ``grad`` and listing them.
    """
    if not isinstance(name, str) or name not in LAYER_SOURCES:
        raise ValueError(
            f"grad: {name!r} is not a source for a jaxbp.layers network; valid sources are "
            f"{', '.join(LAYER_NAMES)}"
        )
    return LAYER_SOURCES[name]


def source(name: str, *, among: Sequence[str] = NAMES) -> ValueAndGrad:
    """The ``value_and_grad`` function of a source name.

    Args:
      name: one of :data:`NAMES`.
      among: the names this caller accepts (a subset of :data:`NAMES`; default all) — the error
        lists these.

    Raises:
      ValueError: ``name`` is not among them, naming the argument (``grad``, as every tool calls
        it) and listing the valid names.
    """
    if not isinstance(name, str) or name not in among or name not in SOURCES:
        valid = ", ".join(n for n in among if n in SOURCES)
        raise ValueError(f"grad: unknown {name!r}; valid sources are {valid}")
    return SOURCES[name]


__all__ = [
    "DESCRIPTIONS",
    "LAYER_DESCRIPTIONS",
    "LAYER_NAMES",
    "LAYER_SOURCES",
    "NAMES",
    "SOURCES",
    "ValueAndGrad",
    "custom_vjp_value_and_grad",
    "layer_source",
    "source",
]
