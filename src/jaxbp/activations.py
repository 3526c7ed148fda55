"""Hidden-layer activation functions f and their hand-derived derivatives f′, side by side.

Each activation is an :class:`Activation` pair ``(f, f_prime)``. ``f_prime(z, a)`` receives both
the pre-activation ``z`` and the cached activation ``a = f(z)`` from the forward pass, so that a
derivative expressible through the output reuses it instead of recomputing a transcendental
function (sigmoid: f′ = a(1 − a); tanh: f′ = 1 − a²; elu: f′ = a + 1 for z ≤ 0).

Kink convention (relu, leaky_relu): the derivative at exactly z = 0 is the one ``jax.grad``
gives for the same ``f`` — 0 for relu (``jax.nn.relu``'s rule) and 1 for leaky_relu — so that
hand-derived and automatic gradients agree bit-for-bit even on the kink.

Equations: docs/derivation.md, eqs. A1–A7.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

LEAKY_RELU_SLOPE = 0.01
"""Negative-side slope α of leaky_relu: f(z) = z for z ≥ 0, αz otherwise."""


class Activation(NamedTuple):
    """An activation function and its hand-derived derivative.

    Attributes:
      name: registry name.
      f: ``z -> a``, elementwise.
      f_prime: ``(z, a) -> f′(z)``, elementwise; ``a`` is ``f(z)`` from the forward cache.
    """

    name: str
    f: Callable[[Array], Array]
    f_prime: Callable[[Array, Array], Array]


# --- A1: sigmoid, f(z) = 1 / (1 + e^{-z}),  f′(z) = f(z)(1 − f(z)) = a(1 − a)
def sigmoid(z: Array) -> Array:
    """Logistic sigmoid σ(z) = 1 / (1 + e^{−z}) (eq. A1)."""
    return jax.nn.sigmoid(z)


def sigmoid_prime(z: Array, a: Array) -> Array:
    """σ′(z) = a(1 − a), from the cached activation a = σ(z) (eq. A1)."""
    del z
    return a * (1 - a)


# --- A2: tanh, f′(z) = 1 − tanh²(z) = 1 − a²
def tanh(z: Array) -> Array:
    """Hyperbolic tangent (eq. A2)."""
    return jnp.tanh(z)


def tanh_prime(z: Array, a: Array) -> Array:
    """tanh′(z) = 1 − a², from the cached activation (eq. A2)."""
    del z
    return 1 - a * a


# --- A3: relu, f(z) = max(z, 0),  f′(z) = 1 if z > 0 else 0
def relu(z: Array) -> Array:
    """Rectified linear unit max(z, 0) (eq. A3)."""
    return jax.nn.relu(z)


def relu_prime(z: Array, a: Array) -> Array:
    """relu′(z) = 1 for z > 0, else 0 (0 at the kink, as ``jax.grad(jax.nn.relu)``) (eq. A3)."""
    del a
    return (z > 0).astype(z.dtype)


# --- A4: leaky relu, f(z) = z if z ≥ 0 else αz,  f′(z) = 1 if z ≥ 0 else α
def leaky_relu(z: Array) -> Array:
    """Leaky relu with slope α = ``LEAKY_RELU_SLOPE`` for z < 0 (eq. A4)."""
    return jnp.where(z >= 0, z, LEAKY_RELU_SLOPE * z)


def leaky_relu_prime(z: Array, a: Array) -> Array:
    """leaky_relu′(z) = 1 for z ≥ 0, else α (1 at the kink, as ``jax.grad``) (eq. A4)."""
    del a
    return jnp.where(z >= 0, jnp.ones_like(z), jnp.full_like(z, LEAKY_RELU_SLOPE))


# --- A5: softplus, f(z) = log(1 + e^z),  f′(z) = σ(z)
def softplus(z: Array) -> Array:
    """Softplus log(1 + e^z), computed stably (eq. A5)."""
    return jax.nn.softplus(z)


def softplus_prime(z: Array, a: Array) -> Array:
    """softplus′(z) = σ(z) (eq. A5)."""
    del a
    return jax.nn.sigmoid(z)


# --- A6: elu, f(z) = z if z > 0 else e^z − 1,  f′(z) = 1 if z > 0 else e^z = a + 1
def elu(z: Array) -> Array:
    """Exponential linear unit with α = 1 (eq. A6)."""
    # expm1 is evaluated on where(z > 0, 0, z) so the unused branch cannot overflow; unlike
    # jnp.minimum, `where` sends the whole cotangent to one branch, so jax.grad at z = 0 is 1.
    return jnp.where(z > 0, z, jnp.expm1(jnp.where(z > 0, 0, z)))


def elu_prime(z: Array, a: Array) -> Array:
    """elu′(z) = 1 for z > 0, else e^z = a + 1, from the cached activation (eq. A6)."""
    return jnp.where(z > 0, jnp.ones_like(z), a + 1)


# --- A7: identity, f′ = 1
def identity(z: Array) -> Array:
    """Identity f(z) = z (eq. A7)."""
    return z


def identity_prime(z: Array, a: Array) -> Array:
    """identity′(z) = 1 (eq. A7)."""
    del a
    return jnp.ones_like(z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", sigmoid, sigmoid_prime),
        Activation("tanh", tanh, tanh_prime),
        Activation("relu", relu, relu_prime),
        Activation("leaky_relu", leaky_relu, leaky_relu_prime),
        Activation("softplus", softplus, softplus_prime),
        Activation("elu", elu, elu_prime),
        Activation("identity", identity, identity_prime),
    )
}
"""Every activation by name."""

KINKED = frozenset({"relu", "leaky_relu"})
"""Activations whose derivative is discontinuous at z = 0."""


def get_activation(name: str) -> Activation:
    """Looks up an activation by name.

    Raises:
      ValueError: naming the unknown name and listing the valid ones.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation: unknown name {name!r}; valid names are {', '.join(ACTIVATIONS)}"
        ) from None


def resolve(activation: str | tuple[str, ...] | list[str], n_hidden: int) -> tuple[Activation, ...]:
    """Resolves ``activation`` to one :class:`Activation` per hidden layer.

    Args:
      activation: one name for every hidden layer, or a sequence with one name per hidden layer.
      n_hidden: the number of hidden layers (``len(params) - 1``).

    Raises:
      ValueError: an unknown name, or a sequence whose length is not ``n_hidden``.
    """
    if isinstance(activation, str):
        return (get_activation(activation),) * n_hidden
    names = tuple(activation)
    if len(names) != n_hidden:
        raise ValueError(
            f"activation: got {len(names)} names {names!r} for {n_hidden} hidden layer(s); "
            "give one name for all hidden layers or exactly one per hidden layer"
        )
    return tuple(get_activation(n) for n in names)
