"""Ready-made networks of :mod:`jaxbp.layers`: the lecture's MLP and the LeNet-style CNN that
``jaxbp train --model cnn`` trains.

**The MLP** (:func:`mlp`) is the lecture's network as a stack of layers: one
:func:`~jaxbp.layers.Dense` per weight matrix Θ^(l), an activation layer f after each hidden one,
none after the last (its nonlinearity is the output layer of :mod:`jaxbp.layers.network`,
``output=``: softmax_ce, sigmoid_bce, identity_mse)::

    (n_1,) → Dense(n_2) → f → Dense(n_3) → f → … → Dense(n_L)      (the logits z^(L))

Its ``Sequential.backward`` *is* the δ recursion of :mod:`jaxbp.backprop`: B2's
δ^(l) = (Θ^(l))ᵀ δ^(l+1) ⊙ f′(z^(l)) is Dense's dx = δΘ followed by the activation's ⊙ f′, B3's
δ^(l+1) a^(l)ᵀ and Σδ are Dense's parameter gradient. :func:`mlp_params` and
:func:`lecture_params` convert between the lecture's parameters (a tuple of ``jaxbp.Layer(W, b)``)
and the Sequential's (a ``{"W", "b"}`` dict per Dense, ``()`` per activation layer); ``mlp``'s
``init`` draws exactly what :func:`jaxbp.init_params` draws, so a seed gives the same network in
both.

**LeNet-5** (LeCun et al. 1998, :func:`lenet`) in today's form: two blocks of convolution →
activation → 2×2 max pooling, then dense layers down to the K class logits. "SAME" padding keeps
each block's output at ⌈H/2⌉ × ⌈W/2⌉, so one definition serves digits' 8×8 and MNIST's 28×28
images::

    (H, W, C) → Conv2D(c₁, k, SAME) → f → MaxPool2D(2, 2)
              → Conv2D(c₂, k, SAME) → f → MaxPool2D(2, 2)
              → Flatten → Dense(h₁) → f → Dense(h₂) → f → Dense(K)

(with ``dropout`` > 0, a :func:`~jaxbp.layers.Dropout` after each hidden dense layer's f).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from jaxbp import params as lecture
from jaxbp.activations import get_activation, resolve
from jaxbp.layers.base import Layer, check_shape, positive_int
from jaxbp.layers.combinators import Sequential
from jaxbp.layers.dense import Dense
from jaxbp.layers.elementwise import Elementwise

MLP_SCHEMES = lecture.SCHEMES
"""Initialisation schemes of :func:`mlp`: those of :func:`jaxbp.init_params` (ng, glorot, he)."""

LENET_CHANNELS = (6, 16)
LENET_KERNEL = 5
LENET_HIDDEN = (120, 84)


def lenet(
    num_classes: int,
    *,
    channels: Sequence[int] = LENET_CHANNELS,
    kernel_size: int = LENET_KERNEL,
    hidden: Sequence[int] = LENET_HIDDEN,
    activation: str = "relu",
    dropout: float = 0.0,
    dtype=jnp.float32,
) -> Layer:
    """The LeNet-style network: one conv block per entry of ``channels``, one dense layer per
    entry of ``hidden``, then ``Dense(num_classes)`` giving the logits.

    Args:
      num_classes: K, the number of logits.
      channels: output channels of each conv block (at least one block).
      kernel_size: the square convolution kernel's side.
      hidden: widths of the dense layers between the flattened features and the logits.
      activation: a name of :data:`jaxbp.activations.ACTIVATIONS`, after every conv and hidden
        dense layer.
      dropout: the probability of dropping each unit of a hidden dense layer in training
        (:func:`~jaxbp.layers.Dropout` after its activation; 0: no dropout layers, and then
        the forward pass needs no key).
      dtype: the parameters' dtype.

    Raises:
      ValueError: a non-positive size, no conv block, an unknown activation.
    """
    from jaxbp import layers

    positive_int(num_classes, "num_classes", "lenet")
    positive_int(kernel_size, "kernel_size", "lenet")
    channels, hidden = tuple(channels), tuple(hidden)
    if not channels:
        raise ValueError("lenet: channels needs at least one conv block, got ()")
    for c in channels:
        positive_int(c, "channels", "lenet")
    for h in hidden:
        positive_int(h, "hidden", "lenet")
    stack = []
    for c in channels:
        stack += [
            layers.Conv2D(c, kernel_size, padding="SAME", dtype=dtype),
            layers.Elementwise(activation),
            layers.MaxPool2D(2, 2, padding="SAME"),
        ]
    stack.append(layers.Flatten())
    for h in hidden:
        stack += [layers.Dense(h, dtype=dtype), layers.Elementwise(activation)]
        if dropout:
            stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(num_classes, dtype=dtype))
    return layers.Sequential(*stack)


# --- the lecture's MLP ----------------------------------------------------------------------------
def _mlp_sizes(sizes) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ValueError(
            f"mlp: sizes must be a sequence of widths (n_in, hidden…, n_out), got {sizes!r}"
        )
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least an input and an output width, got {sizes!r}")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"mlp: sizes entry {i} must be a positive integer, got {n!r}")
    return tuple(int(n) for n in sizes)


def _hidden_activations(activation, n_hidden: int) -> tuple[str, ...]:
    """One activation name per hidden layer, as :func:`jaxbp.value_and_grad` takes them."""
    try:
        if isinstance(activation, str):
            get_activation(activation)  # checked even where there is no hidden layer
            return (activation,) * n_hidden
        if isinstance(activation, (list, tuple)):
            resolve(tuple(activation), n_hidden)
            return tuple(activation)
    except ValueError as e:
        raise ValueError(f"mlp: {e}") from None
    raise TypeError(
        "mlp: activation must be a name or a sequence of one name per hidden layer, got "
        f"{type(activation).__name__} {activation!r}"
    )


def mlp(sizes: Sequence[int], *, activation="relu", scheme: str = "he", dtype=jnp.float32) -> Layer:
    """The lecture's MLP as a :func:`~jaxbp.layers.Sequential` of dense and activation layers.

    ``sizes = (n_1, …, n_L)`` gives ``Dense(n_2), f, Dense(n_3), f, …, Dense(n_L)``: an activation
    layer after every hidden dense layer and none after the last, whose output is the logits
    z^(L) — the output nonlinearity (softmax, sigmoid or identity) is the head's ``output=`` in
    :func:`jaxbp.layers.value_and_grad` / :func:`jaxbp.layers.predict`, as in
    :func:`jaxbp.value_and_grad`. Parameters are ``params[2l] = {"W": Θ^(l) without its bias
    column, "b": its bias column}`` and ``params[2l + 1] = ()``; :func:`mlp_params` and
    :func:`lecture_params` convert from and to :func:`jaxbp.init_params`'s tuple of
    ``jaxbp.Layer(W, b)``.

    ``init(key, (n_1,))`` draws exactly (bitwise) ``mlp_params(jaxbp.init_params(key, sizes,
    scheme=scheme, dtype=dtype))``, so a seed gives the same network as the lecture-level API.
    ``forward`` and ``backward`` are Sequential's own (the δ recursion, eq. L5), so
    :func:`jaxbp.verify.check_network` checks each layer of the network on its own. The dense
    sublayers carry ``scheme`` as ``Dense`` knows it (``"ng"``, which ``Dense`` does not have,
    as ``"glorot"``: the same weight distribution; the random biases are drawn by this ``init``),
    which matters only to a network rebuilt from ``sublayers``.

    Args:
      sizes: the widths (n_in, hidden…, n_out), input first, at least two entries — as for
        :func:`jaxbp.init_params`.
      activation: the hidden activation: a name of :data:`jaxbp.activations.ACTIVATIONS`, or a
        sequence of one name per hidden layer (``len(sizes) − 2``), as for
        :func:`jaxbp.value_and_grad`.
      scheme: initialisation, one of :data:`MLP_SCHEMES` (``init_params``'s schemes).
      dtype: the parameters' floating dtype.

    Returns:
      The network, a :class:`~jaxbp.layers.Layer` with ``2 (len(sizes) − 1) − 1`` sublayers.

    Raises:
      ValueError: fewer than two sizes, a non-positive size, an unknown activation or scheme, a
        list of activations not one per hidden layer — naming the argument and the value;
        (from ``init``) an ``in_shape`` whose last axis is not ``sizes[0]``.
      TypeError: an activation that is neither a name nor a sequence, a non-floating dtype.

    Example:
      >>> net = layers.mlp([400, 25, 10], activation="sigmoid", scheme="ng")
      >>> params, _ = net.init(jax.random.key(0), (400,))
      >>> (J, _), grads = layers.value_and_grad(net, params, x, y, output="softmax_ce", l2=1.0)
    """
    sizes = _mlp_sizes(sizes)
    names = _hidden_activations(activation, len(sizes) - 2)
    if scheme not in MLP_SCHEMES:
        raise ValueError(f"mlp: scheme must be one of {', '.join(MLP_SCHEMES)}, got {scheme!r}")
    try:
        floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        floating = False
    if not floating:
        raise TypeError(f"mlp: dtype must be a floating dtype, got {dtype!r}")
    dense_scheme = "glorot" if scheme == "ng" else scheme
    stack: list[Layer] = []
    for l, n_out in enumerate(sizes[1:]):
        stack.append(Dense(n_out, scheme=dense_scheme, dtype=dtype))
        if l < len(names):
            stack.append(Elementwise(names[l]))
    net = Sequential(*stack)

    def init(key, in_shape):
        shape = check_shape(in_shape, None, "mlp")
        if not shape or shape[-1] != sizes[0]:
            raise ValueError(
                f"mlp: in_shape must end in the input width sizes[0] = {sizes[0]}, got {shape}"
            )
        params = lecture.init_params(key, sizes, scheme=scheme, dtype=dtype)
        return mlp_params(params), (*shape[:-1], sizes[-1])

    return net._replace(init=init)


def mlp_params(params) -> tuple:
    """The lecture's parameters (or gradients) as :func:`mlp`'s: ``Layer(W, b)`` → ``{"W", "b"}``.

    Args:
      params: a non-empty sequence of ``jaxbp.Layer(W, b)`` (any ``(W, b)`` pairs) whose shapes
        chain, as :func:`jaxbp.init_params` gives.

    Returns:
      ``({"W": W_0, "b": b_0}, (), {"W": W_1, "b": b_1}, (), …)``: one dict per weight layer, a
      ``()`` for the activation layer between two of them. The arrays are ``params``' own (no
      copy, no cast): :func:`lecture_params` gives ``params`` back exactly.

    Raises:
      TypeError / ValueError: from :func:`jaxbp.params.check_params`, naming the layer.
    """
    out: list = []
    for l, layer in enumerate(lecture.check_params(params)):
        if l:
            out.append(())
        out.append({"W": layer.W, "b": layer.b})
    return tuple(out)


def lecture_params(net_params) -> lecture.Params:
    """:func:`mlp`'s parameters (or gradients) as the lecture's tuple of ``jaxbp.Layer(W, b)``.

    The inverse of :func:`mlp_params`; the arrays are ``net_params``' own (no copy, no cast).

    Args:
      net_params: one entry per layer of an :func:`mlp`: a dict with ``"W"`` and ``"b"`` at even
        indices (the dense layers), an empty ``()`` at odd ones (the activation layers); a list
        (from a file) does as well as a tuple.

    Raises:
      TypeError: not a tuple or list, a dense entry not a dict, an activation entry not empty.
      ValueError: an even number of entries, a dense entry without ``W`` or ``b``; shapes that do
        not chain (from :func:`jaxbp.params.check_params`: its layer ``l`` is entry ``2l``).
    """
    if not isinstance(net_params, (tuple, list)):
        raise TypeError(
            "net_params: must be a tuple with one entry per layer of an mlp, got "
            f"{type(net_params).__name__}"
        )
    if len(net_params) % 2 == 0:
        raise ValueError(
            "net_params: an mlp has an odd number of layers (Dense, activation, …, Dense), got "
            f"{len(net_params)} entries"
        )
    pairs = []
    for i, entry in enumerate(net_params):
        if i % 2:
            if not (isinstance(entry, (tuple, list, Mapping)) and len(entry) == 0):
                raise TypeError(
                    f"net_params: entry {i} (an activation layer) must be (), got "
                    f"{type(entry).__name__} {entry!r}"
                )
            continue
        if not isinstance(entry, Mapping):
            raise TypeError(
                f"net_params: entry {i} (a Dense layer) must be a dict with keys 'W', 'b', got "
                f"{type(entry).__name__}"
            )
        if "W" not in entry or "b" not in entry:
            got = ", ".join(map(repr, entry)) or "none"
            raise ValueError(
                f"net_params: entry {i} (a Dense layer) must have keys 'W', 'b', got keys {got}"
            )
        pairs.append(lecture.Layer(entry["W"], entry["b"]))
    return lecture.check_params(pairs)
