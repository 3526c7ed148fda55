"""Embedding: a lookup table, y = W[x], whose backward is a scatter-add of δ into the looked-up rows.

For integer indices x (any shape (m, …)) and a table W of shape (num, features) (docs/
derivation.md, eq. L16)::

    y[i, …] = W[x[i, …]]                                  y: (m, …, features)

y is W times a one-hot matrix: y = onehot(x) W. Its VJP is therefore onehotᵀ δ — each row k of
∂E/∂W collects the δ of every position that looked up row k, summed where an index repeats::

    ∂E/∂W[k] = Σ_{positions p with x_p = k} δ_p           (jnp.zeros_like(W).at[x].add(δ))

There is no δ_in: x is an index, not a quantity with a derivative (``backward`` returns
``dx = None``, the integer-input convention of :mod:`jaxbp.layers.base`).

Out-of-range indices. Plain JAX would clamp an index ≥ num to the last row in the lookup (and
wrap negatives Python-style), while the scatter of its VJP drops out-of-range updates: forward
and backward would disagree. Here, when x is concrete (not traced, e.g. eager calls), an index
outside [0, num) raises ``ValueError`` naming the index and where it sits. Under ``jit`` the
values are unknown and cannot be checked; the layer then clamps every index into [0, num − 1]
(negatives to row 0, no wrap-around) in the forward pass and scatters into the same clamped rows,
so the backward remains the exact VJP of what the forward computed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layers.base import (
    ANY_AXES,
    Layer,
    check_array,
    check_dy,
    check_params,
    check_shape,
    positive_int,
    register,
)


def _check_indices(x, num: int, layer: str):
    check_array(x, "x", ("m", ANY_AXES), layer, "x is a batch of integer indices")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"{layer}: x must be an integer array of indices, got dtype {x.dtype}")
    if isinstance(x, jax.core.Tracer):  # under jit / vmap: the values are not known here
        return
    values = np.asarray(x)
    bad = np.argwhere((values < 0) | (values >= num))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{layer}: x holds index {int(values[where])} at position {where} (example row "
            f"{where[0]}); indices must be in [0, {num}) — {len(bad)} out of range in all"
        )


@register("Embedding")
def Embedding(num: int, features: int, *, dtype=jnp.float32) -> Layer:
    """A table of ``num`` vectors of ``features`` entries, looked up by integer index (eq. L16).

    Params: ``{"W": (num, features)}`` (named ``W`` so that the L2 penalty of
    :mod:`jaxbp.layers.network` falls on it), initialised N(0, 1/features) so that rows have
    norm ≈ 1. ``init``'s in_shape is the index shape of one example (``()`` for one index,
    ``(T,)`` for a sequence); the output shape appends ``features``.

    Args:
      num: the number of rows (the vocabulary size).
      features: the length of each vector.
      dtype: the table's dtype.

    Raises:
      ValueError: ``num`` or ``features`` not a positive int; (from ``forward``) an ``x`` that
        is not a batch of integer indices in [0, num) (the values checked only outside ``jit``),
        or ``params['W']`` not (num, features); (from ``backward``) a ``dy`` not
        (*x.shape, features).
    """
    positive_int(num, "num", "Embedding")
    positive_int(features, "features", "Embedding")
    name = f"Embedding({num}, {features})"

    def init(key, in_shape):
        shape = check_shape(in_shape, None, name)
        W = jax.random.normal(key, (num, features), dtype) / jnp.sqrt(features).astype(dtype)
        return {"W": W}, (*shape, features)

    def forward(params, x, *, key=None, train=False):
        del key, train
        check_params(params, {"W": (num, features)}, name)
        _check_indices(x, num, name)
        x = jnp.clip(x, 0, num - 1)  # a no-op for valid indices; see the module docstring
        return params["W"][x], x

    def backward(params, cache, dy):
        check_params(params, {"W": (num, features)}, name)
        x = cache
        check_dy(dy, (*x.shape, features), name)
        dW = jnp.zeros_like(params["W"]).at[x].add(dy)  # Σ of δ over positions with x = k
        return {"W": dW}, None  # no δ_in for an index

    return Layer(init, forward, backward, name=name)
