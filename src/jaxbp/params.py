"""The parameter pytree, its initialisation, and conversions to the course's layouts.

``params`` is a tuple with one :class:`Layer` per weight matrix; layer ``l`` (0-based) maps
a^(l+1) to z^(l+2) in the lecture's 1-based numbering. ``Layer.W`` is the lecture's Θ^(l) without
its bias column, shape (n_out, n_in); ``Layer.b`` is that bias column, shape (n_out,). Gradients
have exactly the same structure, so every function here also works on a grads pytree.

Leaf paths, as ``jax.tree_util.keystr`` prints them, are ``[0].W``, ``[0].b``, ``[1].W`` …

The course layout is one matrix per layer of shape (n_out, n_in + 1), bias column first; its flat
vector unrolls each matrix column-major (MATLAB/Octave's ``Theta(:)``), layer after layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Layer(NamedTuple):
    """One affine layer z = W a + b.

    Attributes:
      W: (n_out, n_in) weights, the lecture's Θ^(l) without the bias column.
      b: (n_out,) biases, Θ^(l)'s column j = 0.
    """

    W: Array
    b: Array


Params = tuple[Layer, ...]

SCHEMES = ("ng", "glorot", "he")
"""Initialisation schemes accepted by :func:`init_params`."""


def init_params(
    key: Array, sizes: Sequence[int], *, scheme: str = "ng", dtype=jnp.float32
) -> Params:
    """Random parameters with symmetry breaking.

    Schemes, for a layer with fan-in n_in and fan-out n_out:

    - ``"ng"``: W and b uniform in [−ε, ε], ε = √6 / √(n_in + n_out) — the course's
      ``randInitializeWeights`` (biases random too, as there).
    - ``"glorot"``: W uniform in [−ε, ε] with the same ε (Glorot & Bengio 2010), b = 0.
    - ``"he"``: W normal with std √(2 / n_in) (He et al. 2015), b = 0.

    Args:
      key: a ``jax.random`` key; split once per layer, never reused.
      sizes: layer widths (n_1, …, n_L), input first, at least two entries.
      scheme: one of :data:`SCHEMES`.
      dtype: floating dtype of every leaf.

    Returns:
      A tuple of ``len(sizes) − 1`` :class:`Layer`.

    Raises:
      ValueError: fewer than two sizes, a non-positive size, an unknown scheme.
      TypeError: a non-floating dtype.

    Example:
      >>> params = init_params(jax.random.key(0), [400, 25, 10])
      >>> [p.W.shape for p in params]
      [(25, 400), (10, 25)]
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes: need at least an input and an output width, got {sizes!r}")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"sizes: entry {i} must be a positive integer, got {n!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: unknown {scheme!r}; valid schemes are {', '.join(SCHEMES)}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: parameters need a floating dtype, got {jnp.dtype(dtype)}")
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True):
        k_w, k_b = jax.random.split(k)
        eps = math.sqrt(6.0) / math.sqrt(n_in + n_out)
        if scheme == "ng":
            W = jax.random.uniform(k_w, (n_out, n_in), dtype, -eps, eps)
            b = jax.random.uniform(k_b, (n_out,), dtype, -eps, eps)
        elif scheme == "glorot":
            W = jax.random.uniform(k_w, (n_out, n_in), dtype, -eps, eps)
            b = jnp.zeros((n_out,), dtype)
        else:  # he
            W = jax.random.normal(k_w, (n_out, n_in), dtype) * math.sqrt(2.0 / n_in)
            b = jnp.zeros((n_out,), dtype)
        layers.append(Layer(W, b))
    return tuple(layers)


def layer_sizes(params: Params) -> tuple[int, ...]:
    """The widths (n_1, …, n_L) of a parameter tree, input first."""
    return (params[0].W.shape[1],) + tuple(layer.W.shape[0] for layer in params)


def check_params(params) -> Params:
    """Validates that ``params`` is a non-empty sequence of layers whose shapes chain.

    Returns:
      ``params`` as a tuple of :class:`Layer` (accepts any sequence of ``(W, b)`` pairs).

    Raises:
      TypeError: not a sequence of (W, b) pairs.
      ValueError: a W that is not 2-D, a b whose shape is not (n_out,), or layer l's n_in not
        equal to layer l−1's n_out — naming the layer.
    """
    if not isinstance(params, (tuple, list)) or len(params) == 0:
        raise TypeError(
            f"params: expected a non-empty tuple of Layer(W, b), got {type(params).__name__}"
        )
    out = []
    for l, layer in enumerate(params):
        try:
            W, b = layer
        except (TypeError, ValueError):
            raise TypeError(
                f"params: layer {l} must be a Layer(W, b) pair, got {type(layer).__name__}"
            ) from None
        if jnp.ndim(W) != 2:
            raise ValueError(
                f"params: layer {l} W must be 2-D (n_out, n_in), got shape {jnp.shape(W)}"
            )
        if jnp.shape(b) != (jnp.shape(W)[0],):
            raise ValueError(
                f"params: layer {l} b must have shape ({jnp.shape(W)[0]},) to match W "
                f"{jnp.shape(W)}, got {jnp.shape(b)}"
            )
        if l > 0 and jnp.shape(W)[1] != jnp.shape(out[-1].W)[0]:
            raise ValueError(
                f"params: layer {l} W has shape {jnp.shape(W)}, so it expects "
                f"{jnp.shape(W)[1]} inputs, but layer {l - 1} outputs {jnp.shape(out[-1].W)[0]}"
            )
        out.append(Layer(W, b))
    return tuple(out)


def to_theta(params: Params) -> list[Array]:
    """The course layout: one (n_out, n_in + 1) matrix per layer, bias column first.

    Θ^(l) = [b | W]. Works on a grads pytree too (giving the course's D^(l) matrices).
    """
    return [jnp.concatenate([layer.b[:, None], layer.W], axis=1) for layer in check_params(params)]


def from_theta(thetas: Sequence[Array]) -> Params:
    """Inverse of :func:`to_theta`: splits each Θ^(l) = [b | W] into a :class:`Layer`.

    Raises:
      ValueError: a Θ that is not 2-D with at least two columns, or Θs that do not chain.
    """
    if isinstance(thetas, (str, bytes)) or not isinstance(thetas, Sequence) or len(thetas) == 0:
        raise TypeError(
            f"thetas: expected a non-empty list of 2-D arrays, got {type(thetas).__name__}"
        )
    layers = []
    for l, theta in enumerate(thetas):
        theta = jnp.asarray(theta)
        if theta.ndim != 2 or theta.shape[1] < 2:
            raise ValueError(
                f"thetas: entry {l} must be 2-D (n_out, n_in + 1) with n_in ≥ 1, got shape {theta.shape}"
            )
        layers.append(Layer(theta[:, 1:], theta[:, 0]))
    return check_params(layers)


def to_flat(params: Params) -> Array:
    """One vector in the course's unrolling order: each Θ^(l) column-major, layer after layer.

    Equal to Octave's ``[Theta1(:); Theta2(:); …]``, so it can be handed to ``scipy.optimize``.
    """
    return jnp.concatenate([theta.T.reshape(-1) for theta in to_theta(params)])


def from_flat(flat: Array, sizes: Sequence[int]) -> Params:
    """Inverse of :func:`to_flat` for a network with widths ``sizes`` (input first).

    Raises:
      ValueError: ``flat`` is not 1-D or its length is not Σ n_out (n_in + 1).
    """
    flat = jnp.asarray(flat)
    sizes = tuple(int(n) for n in sizes)
    expected = sum(n_out * (n_in + 1) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    if flat.ndim != 1 or flat.shape[0] != expected:
        raise ValueError(
            f"flat: sizes {sizes} need a vector of length {expected}, got shape {flat.shape}"
        )
    thetas, start = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        count = n_out * (n_in + 1)
        thetas.append(flat[start : start + count].reshape(n_in + 1, n_out).T)
        start += count
    return from_theta(thetas)
