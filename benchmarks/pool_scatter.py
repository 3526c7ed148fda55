"""MaxPool2D's backward as it was before the padded placement (docs/benchmarks.md, "cnn"): δ
added back into each window offset's strided slice, ``dx.at[:, p::s, q::s].add(…)``, which JAX
lowers to an XLA ``scatter`` (two per offset in StableHLO: 16 for LeNet's two 2×2 pools). Kept
as the "before" of that change, for ``--ab``:

    PYTHONPATH=src python benchmarks/cnn_step.py time --methods hand,autodiff --ab benchmarks/pool_scatter.py
    PYTHONPATH=src python benchmarks/pool_scatter.py   # bit-for-bit against the layer's backward

Forward, the tie rule (first maximum in row-major offset order) and every value are the
layer's own; only the backward's write pattern differs.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxbp.layers import pooling
from jaxbp.layers.base import Layer
from jaxbp.layers.conv import Conv2D  # noqa: F401  the layer's own, unchanged (for --ab)


def MaxPool2D(window, strides=None, padding: str = "VALID") -> Layer:
    """:func:`jaxbp.layers.pooling.MaxPool2D` with the strided-slice (scatter) backward."""
    base = pooling.MaxPool2D(window, strides, padding)
    pool = pooling._pool("Max", window, strides, padding)

    def backward(params, cache, dy):
        del params
        x, y = cache
        padded, pads, index, crop = pool.offsets(x.shape, y.shape)
        a = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
        dx = jnp.zeros(padded, dy.dtype)
        taken = jnp.zeros(y.shape, bool)
        for idx in index.values():
            winner = (a[idx] == y) & ~taken
            taken = taken | winner
            dx = dx.at[idx].add(jnp.where(winner, dy, jnp.zeros((), dy.dtype)))
        return (), dx[crop]

    return base._replace(backward=backward)


def check() -> int:
    """dx of this backward against the layer's own, bit for bit, in float64, on 40 geometries
    with and without ties; returns the number of cases."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    cases = 0
    for H, W in [(8, 8), (7, 9), (5, 5), (28, 28)]:
        for window, strides in [(2, None), (3, 2), (2, 1), ((3, 2), (1, 2)), (3, None)]:
            for padding in ("VALID", "SAME"):
                ref, old = (
                    pooling.MaxPool2D(window, strides, padding),
                    MaxPool2D(window, strides, padding),
                )
                try:
                    ref.init(None, (H, W, 3))
                except ValueError:  # a VALID window larger than the input
                    continue
                for tied in (False, True):
                    x = rng.normal(size=(2, H, W, 3))
                    x = jnp.asarray(np.round(x) if tied else x)  # rounding: many ties
                    y, cache = ref.forward((), x)
                    dy = jnp.asarray(rng.normal(size=y.shape))
                    _, want = jax.jit(lambda c, d, ref=ref: ref.backward((), c, d))(cache, dy)
                    _, got = jax.jit(lambda c, d, old=old: old.backward((), c, d))(cache, dy)
                    assert np.array_equal(np.asarray(got), np.asarray(want)), (
                        H, W, window, strides, padding, tied,
                    )  # fmt: skip
                    cases += 1
    return cases


if __name__ == "__main__":
    print(f"bit-identical to jaxbp.layers.pooling.MaxPool2D's backward on {check()} cases")
