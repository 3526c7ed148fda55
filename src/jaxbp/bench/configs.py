"""The benchmark's network configurations and the flop count of one training step.

A training step on a batch of m rows does, per weight layer with W of shape (n_out, n_in), three
matrix products of m·n_in·n_out multiply-adds each — forward z = a Wᵀ (eq. F2), backward
δ W (eq. B2) and the weight gradient δᵀ a (eq. B3) — so 6·m·Σ n_in·n_out floating-point
operations in all. Biases, activations, the softmax and the optimizer update are O(m·Σ n_out)
and left out: the count is the GEMM work that bounds the step.

A convolutional configuration (``Config.model``, a :class:`LeNet`: the network of
:func:`jaxbp.layers.models.lenet`) counts its convolutions the same way: a k_h×k_w convolution
from C_in to C_out channels with an H_o×W_o output does 2·m·H_o·W_o·k_h·k_w·C_in·C_out operations
forward, and as many again for each of its two backward convolutions — the input error δ ⋆ W
and the kernel gradient x ⋆ δ — so three times that per convolution, plus the dense layers'
6·m·n_in·n_out. Pooling is a comparison per input and, like the activations, left out. As for
the MLP, the first layer's input error is counted although no method computes it (there is no
layer below to hand it to).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class LeNet(NamedTuple):
    """The LeNet-style CNN of :func:`jaxbp.layers.models.lenet` on images of one shape.

    Each entry of ``channels`` is a block Conv2D(c, kernel, SAME) → activation →
    MaxPool2D(2, 2, SAME) (so ⌈H/2⌉ × ⌈W/2⌉ after each block), then Flatten, one dense layer
    per entry of ``hidden`` and Dense(classes).

    Attributes:
      image: (H, W, C) of one example (layout NHWC, batch axis first).
      channels: output channels of each conv block.
      kernel: the square kernel's side.
      hidden: widths of the dense layers after the flattened features.
      classes: K, the number of logits.
    """

    image: tuple[int, int, int]
    channels: tuple[int, ...] = (6, 16)
    kernel: int = 5
    hidden: tuple[int, ...] = (120, 84)
    classes: int = 10

    def convs(self) -> list[tuple[int, int, int, int]]:
        """(H_o, W_o, C_in, C_out) of each convolution (stride 1, SAME: H_o = H)."""
        h, w, c = self.image
        out = []
        for c_out in self.channels:
            out.append((h, w, c, c_out))
            h, w, c = -(-h // 2), -(-w // 2), c_out  # 2×2 max pooling, stride 2, SAME
        return out

    def dense_sizes(self) -> tuple[int, ...]:
        """Widths of the dense part, the flattened features first: e.g. (784, 120, 84, 10)."""
        h, w, c, c_out = self.convs()[-1]
        return (-(-h // 2) * -(-w // 2) * c_out, *self.hidden, self.classes)

    def describe(self) -> str:
        """E.g. ``28x28x1 conv5x5x6 pool2 conv5x5x16 pool2 784-120-84-10``."""
        k = self.kernel
        blocks = " ".join(f"conv{k}x{k}x{c} pool2" for c in self.channels)
        return (
            "x".join(map(str, self.image)) + f" {blocks} " + "-".join(map(str, self.dense_sizes()))
        )


class Config(NamedTuple):
    """One benchmark configuration.

    Attributes:
      name: table name.
      sizes: layer widths, input first — of the MLP, or with ``model`` of the CNN's dense part
        (the flattened features first, :meth:`LeNet.dense_sizes`).
      batch: rows per training step.
      note: what the configuration stands for.
      model: None for an MLP of ``sizes``; a :class:`LeNet` for the convolutional network.
    """

    name: str
    sizes: tuple[int, ...]
    batch: int
    note: str
    model: LeNet | None = None

    @property
    def kind(self) -> str:
        """``mlp`` or ``cnn``."""
        return "mlp" if self.model is None else "cnn"

    def describe(self) -> str:
        """The network in one line: ``64-32-10`` or :meth:`LeNet.describe`."""
        return "-".join(map(str, self.sizes)) if self.model is None else self.model.describe()


MNIST_LENET = LeNet(image=(28, 28, 1))
"""LeNet (conv 5×5×6, conv 5×5×16, dense 120-84-10) on MNIST-sized 28×28×1 images."""


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("tiny", (64, 32, 10), 64, "dispatch-bound: a small net, small batch"),
        Config("course", (400, 25, 10), 5000, "the course's digits network, full batch"),
        Config("mnist", (784, 512, 512, 10), 256, "a classic MNIST MLP, minibatch"),
        Config("wide", (1024, 2048, 2048, 10), 1024, "GEMM-bound: large square layers"),
        Config("deep", (256,) + (256,) * 8 + (10,), 512, "eight hidden layers of 256"),
        Config(
            "cnn",
            MNIST_LENET.dense_sizes(),
            256,
            "LeNet on MNIST-sized 28×28×1 images, minibatch",
            MNIST_LENET,
        ),
    )
}
"""The configurations of issue 5 (the MLPs), then issue 12's ``cnn``, in table order."""

QUICK = ("tiny", "course", "mnist")
"""The ``--quick`` subset."""

GEMM_TARGET_CONFIGS = ("mnist", "wide", "deep")
"""Configurations held to the ≥ 85 % of GEMM peak target."""


def n_params(sizes: Sequence[int]) -> int:
    """Number of parameters Σ (n_in + 1)·n_out of a network with these layer widths."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """Floating-point operations of one training step: 6·batch·Σ n_in·n_out (module docstring).

    Example:
      >>> step_flops((64, 32, 10), 64)
      909312
    """
    if len(sizes) < 2 or batch < 1 or min(sizes) < 1:
        raise ValueError(
            f"sizes/batch: need ≥ 2 positive widths and batch ≥ 1, got {tuple(sizes)}, {batch}"
        )
    return 6 * batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


def cnn_step_flops(model: LeNet, batch: int) -> int:
    """Floating-point operations of one training step of the CNN (module docstring): three
    convolutions of 2·m·H_o·W_o·k²·C_in·C_out each per conv layer, 6·m·n_in·n_out per dense one.

    Example:
      >>> cnn_step_flops(LeNet((28, 28, 1)), 1)
      4158000
    """
    if batch < 1 or min((*model.image, *model.channels, model.kernel, model.classes)) < 1:
        raise ValueError(f"model/batch: need positive sizes and batch ≥ 1, got {model}, {batch}")
    k2 = model.kernel * model.kernel
    conv = sum(6 * batch * h * w * k2 * c_in * c_out for h, w, c_in, c_out in model.convs())
    return conv + step_flops(model.dense_sizes(), batch)


def config_flops(config: Config) -> int:
    """The flop count of one training step of ``config``, MLP or CNN."""
    if config.model is None:
        return step_flops(config.sizes, config.batch)
    return cnn_step_flops(config.model, config.batch)


def custom_config(sizes: Sequence[int], batch: int) -> Config:
    """A configuration outside the table, named after its shape (``8-4-3 b16``)."""
    step_flops(sizes, batch)  # validates
    name = "-".join(map(str, sizes)) + f" b{batch}"
    return Config(name, tuple(int(s) for s in sizes), int(batch), "custom")
