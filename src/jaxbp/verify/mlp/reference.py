"""An independent reference network for the verifier: the same J(Θ) as :func:`jaxbp.cost`, written
with ``jax.nn`` primitives only (no jaxbp forward, activation or loss code), with optional zero
"probe" offsets added to every pre-activation z^(l).

Differentiating J with respect to the probes at zero gives autodiff's ∂J/∂z^(l) for every layer
(eq. V6) — the quantity the hand-derived δ^(l) must equal — in one reverse pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxbp.activations import LEAKY_RELU_SLOPE, resolve

Array = jax.Array

_ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "leaky_relu": lambda z: jax.nn.leaky_relu(z, negative_slope=LEAKY_RELU_SLOPE),
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "identity": lambda z: z,
}

_LINKS = {
    "softmax_ce": lambda z: jax.nn.softmax(z, axis=-1),
    "sigmoid_bce": jax.nn.sigmoid,
    "identity_mse": lambda z: z,
}


def activation_names(activation, n_hidden: int) -> tuple[str, ...]:
    """One activation name per hidden layer (validated by :func:`jaxbp.activations.resolve`)."""
    return tuple(a.name for a in resolve(activation, n_hidden))


def forward(params, x: Array, probes=None, *, activation="sigmoid", output="softmax_ce"):
    """Reference forward pass: ``(zs, activations)`` with z^(l) + probe^(l) where probes are given.

    Returns:
      ``zs[l]`` (m, n_out of layer l) and ``activations[l]`` (``activations[0] = x``), as
      :class:`jaxbp.Cache` lays them out.
    """
    names = activation_names(activation, len(params) - 1)
    a = x.astype(params[0].W.dtype)
    zs, acts = [], [a]
    for l, (W, b) in enumerate(params):
        z = jnp.dot(a, W.T) + b
        if probes is not None:
            z = z + probes[l]
        a = _ACTIVATIONS[names[l]](z) if l < len(names) else _LINKS[output](z)
        zs.append(z)
        acts.append(a)
    return tuple(zs), tuple(acts)


def per_example_cost(z: Array, y: Array, output: str) -> Array:
    """The per-example cost from the logits, through ``jax.nn`` (eqs. C1–C3)."""
    if output == "softmax_ce":
        return -jnp.sum(y * jax.nn.log_softmax(z, axis=-1), axis=-1)
    if output == "sigmoid_bce":
        return -jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z), axis=-1)
    if output == "identity_mse":
        return 0.5 * jnp.sum(jnp.square(z - y), axis=-1)
    raise ValueError(f"output: unknown name {output!r}; valid names are {', '.join(_LINKS)}")


def targets(y: Array, k: int, dtype) -> Array:
    """Integer labels (m,) as one-hot rows; real targets cast to ``dtype``."""
    if jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1:
        return jax.nn.one_hot(y, k, dtype=dtype)
    return y.astype(dtype)


def cost(
    params, x: Array, y: Array, probes=None, *, activation="sigmoid", output="softmax_ce", l2=0.0
) -> Array:
    """Reference J(Θ) = (1/m) Σ_i cost_i + (λ/2m) Σ_l ‖W^(l)‖² (eqs. C1–C3, R1)."""
    zs, _ = forward(params, x, probes, activation=activation, output=output)
    logits = zs[-1]
    y = targets(y, logits.shape[-1], logits.dtype)
    m = x.shape[0]
    penalty = sum(jnp.sum(jnp.square(W)) for W, _ in params)
    return jnp.mean(per_example_cost(logits, y, output)) + (l2 / (2 * m)) * penalty


def zero_probes(params, m: int) -> tuple[Array, ...]:
    """Zero offsets, one (m, n_out) array per weight layer."""
    return tuple(jnp.zeros((m, W.shape[0]), W.dtype) for W, _ in params)


def kinked_preactivations(params, x: Array, *, activation="sigmoid") -> tuple[Array, ...]:
    """The pre-activations z^(l) of every hidden layer whose activation has a kink (relu,
    leaky_relu) — what :mod:`jaxbp.verify.kinks` watches during finite differences."""
    from jaxbp.activations import KINKED

    names = activation_names(activation, len(params) - 1)
    zs, _ = forward(params, x, activation=activation, output="identity_mse")
    return tuple(z for z, name in zip(zs[:-1], names, strict=True) if name in KINKED)
