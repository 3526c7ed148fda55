"""Dense (fully connected) layer: z = Θ a + b, with its hand-derived backward.

Forward (the lecture's z^(l+1) = Θ^(l) a^(l), one example per row of ``x``)::

    y = x Θᵀ + b                      x: (m, …, n_in), Θ: (n_out, n_in), b: (n_out,)

Backward, for dy = δ^(l+1) = ∂E/∂y (docs/derivation.md, eqs. L1–L3):

- ∂E/∂Θ = Σ_i δ_i a_iᵀ = dyᵀ x        (Δ^(l) = Σ δ^(l+1) (a^(l))ᵀ, accumulated over examples)
- ∂E/∂b = Σ_i δ_i                     (the bias unit's a_0 = 1)
- ∂E/∂x = dy Θ                        ((Θ^(l))ᵀ δ^(l+1), before the ⊙ f′(z^(l)) of the
                                       activation layer below)

Any leading axes between the batch and the features (a sequence axis for attention blocks) are
summed over like the batch axis.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxbp.layers import init as init_lib
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


@register("Dense")
def Dense(features: int, *, scheme: str = "he", dtype=jnp.float32) -> Layer:
    """A dense layer of ``features`` outputs acting on the last axis (eqs. L1–L3).

    Args:
      features: n_out.
      scheme: weight initialisation, ``he`` or ``glorot`` (biases start at zero).
      dtype: the parameters' dtype.
    """
    positive_int(features, "features", "Dense")
    init_lib.check_scheme(scheme, "Dense")
    name = f"Dense({features})"

    def init(key, in_shape):
        shape = check_shape(in_shape, None, "Dense")
        if not shape:
            raise ValueError("Dense: in_shape needs a feature axis, got ()")
        n_in = shape[-1]
        W = init_lib.weight(key, (features, n_in), n_in, features, scheme, dtype)
        return {"W": W, "b": jnp.zeros((features,), dtype)}, (*shape[:-1], features)

    def check(params):
        check_params(params, {"W": (features, "n_in"), "b": (features,)}, name)
        return params["W"].shape[1]

    def forward(params, x, *, key=None, train=False):
        del key, train
        n_in = check(params)
        note = f"n_in = {n_in}, from params['W'] of shape {params['W'].shape}"
        check_array(x, "x", ("m", ANY_AXES, n_in), name, note)
        return x @ params["W"].T + params["b"], x

    def backward(params, cache, dy):
        check(params)
        x = cache
        check_dy(dy, (*x.shape[:-1], features), name)
        dW = jnp.einsum("...o,...i->oi", dy, x)  # Δ = Σ_i δ_i a_iᵀ
        db = jnp.sum(dy.reshape(-1, dy.shape[-1]), axis=0)
        dx = dy @ params["W"]  # Θᵀ δ, row-wise
        return {"W": dW, "b": db}, dx

    return Layer(init, forward, backward, name=name)
