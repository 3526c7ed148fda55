"""Batch and layer normalisation, with the coupled backward that runs through μ and σ².

Both normalise a group of N values a_1 … a_N (one channel over the batch for BatchNorm, one
example's features for LayerNorm), then scale and shift (docs/derivation.md, eqs. L12–L14)::

    μ = (1/N) Σ_j a_j      σ² = (1/N) Σ_j (a_j − μ)²      s = 1/√(σ² + ε)
    â_i = (a_i − μ) s      y_i = γ â_i + β                 γ = ``scale``, β = ``offset``

Backward, for δ_i = ∂E/∂y_i. The parameters are the easy part: ∂E/∂γ = Σ δ ⊙ â, ∂E/∂β = Σ δ
(sums over everything that shares the parameter). The input is not: every a_j enters μ and σ²,
so a_i reaches E along three paths — directly through â_i, and through μ and σ², which every
â_j of the group depends on. With g_i = ∂E/∂â_i = γ δ_i::

    ∂μ/∂a_i = 1/N          ∂σ²/∂a_i = (2/N)(a_i − μ)      (the −(2/N)Σ_j(a_j − μ) through μ is 0)
    ∂E/∂σ² = Σ_j g_j (a_j − μ) · (−½ s³)  = −½ s² Σ_j g_j â_j
    ∂E/∂μ  = Σ_j g_j · (−s)               = −s Σ_j g_j      (direct part; the part through σ²
                                                             is ∝ Σ_j (a_j − μ) = 0)
    ∂E/∂a_i = s g_i + (1/N) ∂E/∂μ + (2/N)(a_i − μ) ∂E/∂σ²
            = (s/N) (N g_i − Σ_j g_j − â_i Σ_j g_j â_j)                           (eq. L12)

For BatchNorm, γ is one number per channel and factors out of the sums: δ_in = (γ s / N)(N δ −
Σ δ − â Σ(δ ⊙ â)); for LayerNorm (one γ per feature, the summed axis) it stays inside as g. The
two Σ terms are the coupling: the error handed to one example depends on every other example of
the batch. Treating μ and σ as constants (δ_in = γ s δ) is the classic mistake; ``tests/
test_layers_normalization.py`` shows the checker catching it.

BatchNorm in evaluation mode normalises by the running statistics instead, which do not depend
on the batch, so the backward is elementwise: δ_in = γ s δ with s = 1/√(var + ε) (eq. L13). The
running statistics are not trained, but the layer contract (:mod:`jaxbp.layers.base`) asks for
their true derivative: ∂E/∂mean = −Σ γ s δ, ∂E/∂var = −½ Σ γ s² δ ⊙ â (zeros in training mode,
where y does not depend on them).

Running statistics (BatchNorm, training mode), written by ``update_state`` from the cache::

    mean ← momentum · mean + (1 − momentum) · μ_batch
    var  ← momentum · var  + (1 − momentum) · σ²_batch      (σ² BIASED, the 1/N of the forward)

The biased variance follows flax and Keras (PyTorch stores the unbiased N/(N − 1) σ²); it is the
variance the layer normalised by, and it is defined for N = 1.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxbp.layers.base import (
    ANY_AXES,
    Layer,
    check_array,
    check_dy,
    check_params,
    check_shape,
    register,
    shape_text,
)

STATE = ("mean", "var")


def _check_number(value, name: str, layer: str, *, low: float, high: float | None, open_low: bool):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{layer}: {name} must be a finite number, got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if open_low else '['}{low}, {high if high is not None else '∞'}"
        bounds += "]" if high is not None else ")"
        raise ValueError(f"{layer}: {name} must be in {bounds}, got {value!r}")
    return float(value)


def _features(params, state: bool, layer: str) -> int:
    """The number of features C, once ``params``'s shapes agree on it: scale, offset and (for
    ``state``) the running statistics, one entry per feature."""
    check_params(params, {"scale": ("C",)}, layer)
    c = params["scale"].shape[0]
    patterns = {"offset": (c,), **({"state": {k: (c,) for k in STATE}} if state else {})}
    check_params(params, patterns, layer)
    return c


def _check_x(params, x, lead: tuple, state: bool, layer: str) -> None:
    """``params`` agree on C (:func:`_features`), and ``x`` has ``lead`` axes, then C."""
    c = _features(params, state, layer)
    note = f"{c} features, from params['scale'] of shape {shape_text((c,))}"
    check_array(x, "x", (*lead, c), layer, note)


def _normalise_backward(scale, x_hat, inv_std, dy, axes, n):
    """δ_in = (s / N)(N g − Σ g − â Σ(g ⊙ â)) with g = γ δ, sums over ``axes`` (eq. L12).

    γ stays inside the sums: it is constant over BatchNorm's axes (one value per channel) but
    varies along LayerNorm's (one value per feature)."""
    g = scale * dy  # ∂E/∂â
    sum_g = jnp.sum(g, axis=axes, keepdims=True)
    sum_g_xhat = jnp.sum(g * x_hat, axis=axes, keepdims=True)
    return (inv_std / n) * (n * g - sum_g - x_hat * sum_g_xhat)


@register("BatchNorm")
def BatchNorm(*, momentum: float = 0.9, epsilon: float = 1e-5, dtype=jnp.float32) -> Layer:
    """Batch normalisation over every axis but the last (eqs. L12–L13).

    For input (m, C) the statistics are per feature over the batch; for NHWC input (m, H, W, C)
    per channel over the batch and both spatial axes (N = m·H·W).

    Params: ``{"scale": (C,), "offset": (C,), "state": {"mean": (C,), "var": (C,)}}``, starting
    at 1, 0, 0, 1. ``forward(..., train=True)`` normalises by the batch statistics and records
    the new running statistics in its cache (``update_state`` writes them); ``train=False``
    normalises by ``params["state"]``.

    Args:
      momentum: the running statistics' decay, in [0, 1].
      epsilon: ε > 0 added to the variance.
      dtype: the parameters' dtype.
    """
    momentum = _check_number(momentum, "momentum", "BatchNorm", low=0.0, high=1.0, open_low=False)
    epsilon = _check_number(epsilon, "epsilon", "BatchNorm", low=0.0, high=None, open_low=True)
    name = f"BatchNorm(momentum={momentum}, epsilon={epsilon})"

    def init(key, in_shape):
        del key
        shape = check_shape(in_shape, None, name)
        if not shape:
            raise ValueError(f"{name}: in_shape needs a channel axis, got ()")
        c = shape[-1]
        params = {
            "scale": jnp.ones((c,), dtype),
            "offset": jnp.zeros((c,), dtype),
            "state": {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)},
        }
        return params, shape

    def forward(params, x, *, key=None, train=False):
        del key
        _check_x(params, x, ("m", ANY_AXES), True, name)
        axes = tuple(range(x.ndim - 1))
        state = params["state"]
        if train:
            mu = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mu), axis=axes)  # biased: the 1/N of eq. L12
            new_state = {
                "mean": (momentum * state["mean"] + (1 - momentum) * mu).astype(
                    state["mean"].dtype
                ),
                "var": (momentum * state["var"] + (1 - momentum) * var).astype(state["var"].dtype),
            }
        else:
            mu, var = state["mean"], state["var"]
        inv_std = 1 / jnp.sqrt(var + epsilon)
        x_hat = (x - mu) * inv_std
        y = params["scale"] * x_hat + params["offset"]
        cache = {"x_hat": x_hat, "inv_std": inv_std}
        if train:
            cache["state"] = new_state  # the cache's structure tells backward the mode
        return y, cache

    def backward(params, cache, dy):
        x_hat, inv_std = cache["x_hat"], cache["inv_std"]
        _features(params, True, name)
        check_dy(dy, x_hat.shape, name)
        axes = tuple(range(dy.ndim - 1))
        scale = params["scale"]
        grads = {"scale": jnp.sum(dy * x_hat, axis=axes), "offset": jnp.sum(dy, axis=axes)}
        if "state" in cache:  # training: coupled through the batch's μ and σ² (eq. L12)
            n = math.prod(dy.shape[:-1])
            dx = _normalise_backward(scale, x_hat, inv_std, dy, axes, n)
            grads["state"] = {k: jnp.zeros_like(params["state"][k]) for k in STATE}
        else:  # evaluation: μ, σ² are the running statistics, constants of x (eq. L13)
            g = scale * inv_std * dy  # ∂E/∂a = γ s δ
            grads["state"] = {
                "mean": -jnp.sum(g, axis=axes),  # ∂â/∂mean = −s
                "var": -0.5 * inv_std * jnp.sum(g * x_hat, axis=axes),  # ∂s/∂var = −½ s³
            }
            dx = g
        return grads, dx

    def update_state(params, cache):
        if "state" not in cache:  # evaluation mode: nothing recorded
            return params
        return {**params, "state": cache["state"]}

    return Layer(init, forward, backward, update_state, name)


@register("LayerNorm")
def LayerNorm(*, epsilon: float = 1e-5, dtype=jnp.float32) -> Layer:
    """Layer normalisation over the last axis of each example (each row) (eq. L14).

    y = γ (a − μ)/√(σ² + ε) + β with μ, σ² over the d features of one row (of one position, for
    (m, T, d) sequences); the backward is eq. L12 per row, N = d, with g = γ ⊙ δ inside the sums. No running statistics: train
    and evaluation mode are the same.

    Params: ``{"scale": (d,), "offset": (d,)}``, starting at 1 and 0.

    Args:
      epsilon: ε > 0 added to the variance.
      dtype: the parameters' dtype.
    """
    epsilon = _check_number(epsilon, "epsilon", "LayerNorm", low=0.0, high=None, open_low=True)
    name = f"LayerNorm(epsilon={epsilon})"

    def init(key, in_shape):
        del key
        shape = check_shape(in_shape, None, name)
        if not shape:
            raise ValueError(f"{name}: in_shape needs a feature axis, got ()")
        d = shape[-1]
        return {"scale": jnp.ones((d,), dtype), "offset": jnp.zeros((d,), dtype)}, shape

    def forward(params, x, *, key=None, train=False):
        del key, train
        _check_x(params, x, (ANY_AXES,), False, name)
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        inv_std = 1 / jnp.sqrt(var + epsilon)
        x_hat = (x - mu) * inv_std
        return params["scale"] * x_hat + params["offset"], (x_hat, inv_std)

    def backward(params, cache, dy):
        x_hat, inv_std = cache
        _features(params, False, name)
        check_dy(dy, x_hat.shape, name)
        lead = tuple(range(dy.ndim - 1))
        grads = {"scale": jnp.sum(dy * x_hat, axis=lead), "offset": jnp.sum(dy, axis=lead)}
        dx = _normalise_backward(params["scale"], x_hat, inv_std, dy, -1, dy.shape[-1])
        return grads, dx

    return Layer(init, forward, backward, name=name)
