"""Ready-made networks of :mod:`jaxbp.layers`: the LeNet-style CNN that ``jaxbp train --model cnn``
trains.

LeNet-5 (LeCun et al. 1998) in today's form: two blocks of convolution → activation → 2×2 max
pooling, then dense layers down to the K class logits. "SAME" padding keeps each block's output at
⌈H/2⌉ × ⌈W/2⌉, so one definition serves digits' 8×8 and MNIST's 28×28 images::

    (H, W, C) → Conv2D(c₁, k, SAME) → f → MaxPool2D(2, 2)
              → Conv2D(c₂, k, SAME) → f → MaxPool2D(2, 2)
              → Flatten → Dense(h₁) → f → Dense(h₂) → f → Dense(K)

(with ``dropout`` > 0, a :func:`~jaxbp.layers.Dropout` after each hidden dense layer's f).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from jaxbp.layers.base import Layer, positive_int

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
