"""Conv2D with ``algorithm="auto"`` also taking im2col where the input has one channel (the
LeNet's first block), for ``benchmarks/cnn_step.py --ab`` (docs/benchmarks.md, "cnn: im2col"):
alone, that layer's forward + backward is 2× faster as im2col (``conv_algorithms.py``), but is
the training step, where the first layer's input gradient is never used, faster too?

    PYTHONPATH=src python benchmarks/cnn_step.py time --methods hand,autodiff --ab benchmarks/conv_im2col_first.py --processes 3
"""

from __future__ import annotations

from jaxbp.layers import conv as _conv
from jaxbp.layers.pooling import MaxPool2D  # noqa: F401  the layer's own, unchanged (for --ab)


def Conv2D(features, kernel_size, strides=1, padding="VALID", *, algorithm="auto", **kwargs):
    """:func:`jaxbp.layers.Conv2D`, with im2col also for single-channel inputs under "auto"."""
    auto = _conv.Conv2D(features, kernel_size, strides, padding, algorithm=algorithm, **kwargs)
    im2col = _conv.Conv2D(features, kernel_size, strides, padding, algorithm="im2col", **kwargs)

    def pick(x):
        return im2col if algorithm == "auto" and x.shape[-1] == 1 else auto

    def forward(params, x, *, key=None, train=False):
        return pick(x).forward(params, x, key=key, train=train)

    def backward(params, cache, dy):
        return pick(cache).backward(params, cache, dy)

    return auto._replace(forward=forward, backward=backward)
