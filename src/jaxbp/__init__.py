"""jaxbp — hand-derived backpropagation in JAX, verified against autodiff.

Public API (docs/derivation.md maps each function to the lecture's equation and its test):

- parameters: :func:`init_params`, :func:`from_theta`, :func:`to_theta`, :func:`to_flat`,
  :func:`from_flat`, :class:`Layer`;
- forward: :func:`forward`, :func:`predict`;
- gradients: :func:`value_and_grad` (the δ recursion), :func:`scan_value_and_grad` (the lecture's
  per-sample loop), :func:`per_example_grads`, :func:`loss` (``jax.custom_vjp``),
  :func:`autodiff_value_and_grad` (``jax.grad`` reference), :func:`cost`; every gradient source by
  name in one registry, ``jaxbp.sources``.

The subpackages — ``jaxbp.verify``, ``jaxbp.data``, ``jaxbp.train``, ``jaxbp.distributed`` and the
rest of :data:`SUBMODULES` — are imported on first use (``jaxbp.verify.check`` works after a plain
``import jaxbp``), so that importing the core does not import scikit-learn or matplotlib.
"""

import importlib

from jaxbp.activations import ACTIVATIONS, Activation, get_activation
from jaxbp.autodiff import autodiff_value_and_grad
from jaxbp.backprop import Backward, backward, value_and_grad
from jaxbp.cost import cost
from jaxbp.forward import Cache, forward, predict
from jaxbp.losses import OUTPUTS, Output, get_output, softmax, softmax_jacobian
from jaxbp.params import Layer, from_flat, from_theta, init_params, layer_sizes, to_flat, to_theta
from jaxbp.per_sample import per_example_grads, scan_value_and_grad
from jaxbp.vjp import loss

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "OUTPUTS",
    "Activation",
    "Backward",
    "Cache",
    "Layer",
    "Output",
    "autodiff_value_and_grad",
    "backward",
    "cost",
    "forward",
    "from_flat",
    "from_theta",
    "get_activation",
    "get_output",
    "init_params",
    "layer_sizes",
    "loss",
    "per_example_grads",
    "predict",
    "scan_value_and_grad",
    "softmax",
    "softmax_jacobian",
    "to_flat",
    "to_theta",
    "value_and_grad",
]

SUBMODULES = frozenset(
    {
        "bench",
        "checkpoint",
        "data",
        "distributed",
        "experiment",
        "files",
        "graph",
        "layers",
        "model",
        "optim",
        "plots",
        "shadow",
        "sources",
        "testing",
        "train",
        "train_steps",
        "verify",
    }
)
"""Subpackages and modules imported lazily as attributes of ``jaxbp``."""


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"jaxbp.{name}")
    raise AttributeError(f"module 'jaxbp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | SUBMODULES)
