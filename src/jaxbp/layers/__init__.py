"""Hand-derived backpropagation beyond the MLP: layers as ``(init, forward, backward)`` triples.

The lecture's derivation — cache the forward values, send an error δ back through each node's
local derivative — applied layer by layer. Each layer is a :class:`Layer` (a ``NamedTuple`` of
pure functions, :mod:`jaxbp.layers.base` states the contract); its ``backward`` is derived by hand
beside its ``forward``, never by ``jax.grad``; :func:`Sequential` chains them into the δ
recursion of a whole network; :mod:`jaxbp.layers.network` puts an output layer on top (δ^(L) =
ŷ − y) and offers the network's hand-derived gradient as a ``jax.custom_vjp`` loss;
:func:`check_layer` verifies any layer against ``jax.vjp`` and finite differences.

Example:
  >>> from jaxbp import layers
  >>> model = layers.Sequential(
  ...     layers.Conv2D(8, 3, padding="SAME"), layers.Relu(), layers.MaxPool2D(2, 2),
  ...     layers.Flatten(), layers.Dense(10))
  >>> params, out_shape = model.init(jax.random.key(0), (8, 8, 1))
  >>> (J, cache), grads = layers.value_and_grad(model, params, x, y, output="softmax_ce")
  >>> layers.check_layer(model, params, x).raise_if_failed()

Modules (one concept each): base, init, dense, elementwise, reshape, combinators, conv, pooling,
normalization, dropout, augment, embedding, attention, network, check; models (the lecture's MLP,
:func:`mlp`, with :func:`mlp_params` / :func:`lecture_params` to convert its parameters from and to
``jaxbp.init_params``'s; the LeNet-style default, :func:`lenet`); spec (a network as
``[[layers]]`` tables: :func:`to_spec`, :func:`from_spec`, :func:`to_toml`, :func:`from_toml`,
:func:`register_layer` for a user's own layer type). ``mlp`` and ``lenet`` here are the
spec-recording presets of :mod:`jaxbp.layers.spec` (the same networks as
:mod:`jaxbp.layers.models`' functions, carrying the spec ``{"type": "mlp", …}``).
Equations: docs/derivation.md, § Layers; the convolution's backward step by step:
docs/conv_backward.md.
"""

from jaxbp.layers.attention import SelfAttention
from jaxbp.layers.augment import RandomShift
from jaxbp.layers.base import Layer, LayerSpec, keep_params
from jaxbp.layers.check import check_layer
from jaxbp.layers.combinators import Residual, Sequential
from jaxbp.layers.conv import Conv2D
from jaxbp.layers.dense import Dense
from jaxbp.layers.dropout import Dropout
from jaxbp.layers.elementwise import (
    Elementwise,
    Elu,
    Identity,
    LeakyRelu,
    Relu,
    Sigmoid,
    Softplus,
    Tanh,
)
from jaxbp.layers.embedding import Embedding
from jaxbp.layers.models import lecture_params, mlp_params
from jaxbp.layers.network import (
    autodiff_value_and_grad,
    cost,
    loss,
    network_dtype,
    penalty,
    predict,
    predict_proba,
    value_and_grad,
)
from jaxbp.layers.normalization import BatchNorm, LayerNorm
from jaxbp.layers.pooling import AvgPool2D, MaxPool2D
from jaxbp.layers.reshape import Flatten, Reshape
from jaxbp.layers.spec import (
    LAYER_TYPES,
    from_spec,
    from_toml,
    lenet,
    mlp,
    register_layer,
    to_spec,
    to_toml,
)

__all__ = [
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Elementwise",
    "Elu",
    "Embedding",
    "Flatten",
    "Identity",
    "LAYER_TYPES",
    "Layer",
    "LayerSpec",
    "LayerNorm",
    "LeakyRelu",
    "MaxPool2D",
    "RandomShift",
    "Reshape",
    "Relu",
    "Residual",
    "SelfAttention",
    "Sequential",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "autodiff_value_and_grad",
    "check_layer",
    "cost",
    "from_spec",
    "from_toml",
    "keep_params",
    "lecture_params",
    "lenet",
    "loss",
    "mlp",
    "mlp_params",
    "penalty",
    "predict",
    "predict_proba",
    "network_dtype",
    "register_layer",
    "to_spec",
    "to_toml",
    "value_and_grad",
]
