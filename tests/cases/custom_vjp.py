"""A ``jax.custom_vjp`` with its reference, for ``jaxbp verify --case``: softplus with the
hand-written backward rule ∂softplus/∂x = σ(x), checked with ``jaxbp.verify.check_custom_vjp``.

    jaxbp verify --case tests/cases/custom_vjp.py:case
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def softplus(x):
    return jnp.logaddexp(0.0, x)


def _fwd(x):
    return softplus(x), x


def _bwd(x, g):
    return (g * jax.nn.sigmoid(x),)


softplus.defvjp(_fwd, _bwd)


def reference(x):
    return jnp.logaddexp(0.0, x)


def case():
    return {
        "custom_vjp": softplus,
        "reference": reference,
        "primals": (jnp.linspace(-3.0, 3.0, 7, dtype=jnp.float64),),
    }
