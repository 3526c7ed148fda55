"""Forward propagation: a^(1) = x; z^(l+1) = Θ^(l) a^(l); a^(l+1) = f(z^(l+1)) (eqs. F1–F3).

Batched with one example per row, so the lecture's column-vector form z = Θ a becomes
z = a Wᵀ + b for a (m, n) batch of activations. The last layer applies the output link g
(softmax, sigmoid or identity) instead of the hidden activation f.

The returned :class:`Cache` holds every z and a: the backward pass reuses them (f′ from the cached
a for sigmoid/tanh/elu) instead of recomputing the forward pass.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.activations import resolve
from jaxbp.losses import get_output
from jaxbp.params import Params
from jaxbp.precision import dot_nt
from jaxbp.validation import check_call

Array = jax.Array


class Cache(NamedTuple):
    """Everything the forward pass computed, for the backward pass.

    With L − 1 = ``len(params)`` weight layers (lecture layers 1 … L):

    Attributes:
      z: ``len(params)`` arrays; ``z[l]`` is z^(l+2) of shape (m, n_{l+2}); ``z[-1]`` the logits.
      a: ``len(params) + 1`` arrays; ``a[0]`` = x = a^(1), ``a[l]`` = a^(l+1), ``a[-1]`` = ŷ.
    """

    z: tuple[Array, ...]
    a: tuple[Array, ...]


def affine(W: Array, b: Array, a: Array) -> Array:
    """z = Θ a with the bias column split off: z = a Wᵀ + b for a batch of rows (eq. F2).

    With bfloat16 W and a (``precision="bf16"``), z is accumulated and returned in float32
    (:func:`jaxbp.precision.dot_nt`)."""
    return dot_nt(a, W) + b


def forward(params: Params, x: Array, *, activation="sigmoid", output: str = "softmax_ce") -> Cache:
    """Runs forward propagation and keeps the cache (eqs. F1–F3).

    Args:
      params: tuple of ``Layer(W, b)``.
      x: (m, n_1) inputs, one example per row.
      activation: hidden activation name, or one name per hidden layer.
      output: output layer name (``softmax_ce``, ``sigmoid_bce``, ``identity_mse``).

    Returns:
      A :class:`Cache`; ``cache.a[-1]`` is ŷ = h_Θ(x) and ``cache.z[-1]`` its logits.

    This is the building block that runs inside jitted code and checks nothing beyond what JAX
    does; :func:`predict` and the gradient entry points check their arguments and name the bad one.
    """
    acts = resolve(activation, len(params) - 1)
    link = get_output(output).link
    a = x.astype(params[0].W.dtype)
    zs, activations = [], [a]
    for l, layer in enumerate(params):
        z = affine(layer.W, layer.b, a)
        # a hidden a^(l) is kept in the weights' dtype, the operand of the next product and of
        # B3's (a no-op unless bf16 weights give float32 z); ŷ stays in z's dtype
        a = acts[l].f(z).astype(layer.W.dtype) if l < len(acts) else link(z)
        zs.append(z)
        activations.append(a)
    return Cache(tuple(zs), tuple(activations))


def predict(params: Params, x: Array, *, activation="sigmoid", output: str = "softmax_ce") -> Array:
    """ŷ = h_Θ(x): class probabilities (softmax / sigmoid) or outputs (identity), shape (m, K)."""
    single = jnp.ndim(x) == 1
    params, x, _, activation, output = check_call(params, x, None, activation, output)
    y_hat = _predict(params, x, activation, output)
    return y_hat[0] if single else y_hat


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _predict(params, x, activation, output):
    return forward(params, x, activation=activation, output=output).a[-1]


def as_targets(y: Array, k: int, dtype) -> Array:
    """Targets as (m, K) in ``dtype``: integer labels (m,) become one-hot rows."""
    if jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1:
        return jax.nn.one_hot(y, k, dtype=dtype)
    return y.astype(dtype)
