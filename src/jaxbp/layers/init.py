"""Weight initialisation shared by the layers: He (relu nets) and Glorot, from fan-in / fan-out.

W ~ N(0, 2 / fan_in) ("he", He et al. 2015) or U(±√(6 / (fan_in + fan_out))) ("glorot", Glorot
& Bengio 2010) — the lecture's symmetry breaking (random Θ, never all equal) with the scale that
keeps activations of deep relu or tanh stacks of order one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCHEMES = ("he", "glorot")


def check_scheme(scheme: str, layer: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"{layer}: scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return scheme


def weight(key, shape, fan_in: int, fan_out: int, scheme: str, dtype) -> jax.Array:
    """A weight array of ``shape`` drawn by ``scheme`` from its fan-in and fan-out."""
    if scheme == "he":
        return jax.random.normal(key, shape, dtype) * jnp.sqrt(2.0 / fan_in).astype(dtype)
    limit = jnp.sqrt(6.0 / (fan_in + fan_out)).astype(dtype)
    return jax.random.uniform(key, shape, dtype, -limit, limit)
