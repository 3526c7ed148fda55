"""A correct case for ``jaxbp verify --case``: logistic regression on a dict pytree {"w", "b"}.

J(w, b) = mean(softplus(z) − y z) with z = x w + b; by hand, ∂J/∂z = (σ(z) − y) / m, so
∂J/∂w = xᵀ ∂J/∂z and ∂J/∂b = Σ ∂J/∂z.

    jaxbp verify --case tests/cases/logistic.py:case
"""

import jax
import jax.numpy as jnp
import numpy as np


def problem():
    rng = np.random.default_rng(0)  # an explicit generator: the same case on every run
    x = jnp.asarray(rng.standard_normal((12, 3)), jnp.float64)
    y = jnp.asarray(rng.integers(0, 2, 12), jnp.float64)
    params = {
        "w": jnp.asarray(0.5 * rng.standard_normal(3), jnp.float64),
        "b": jnp.asarray(0.1, jnp.float64),  # a scalar leaf
    }
    return params, x, y


def loss(params, x, y):
    z = x @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def value_and_grad(params, x, y):
    z = x @ params["w"] + params["b"]
    dz = (jax.nn.sigmoid(z) - y) / x.shape[0]
    return loss(params, x, y), {"w": x.T @ dz, "b": jnp.sum(dz)}


def case():
    """The mapping form."""
    params, x, y = problem()
    return {"grad_fn": value_and_grad, "loss_fn": loss, "params": params, "args": (x, y)}


def as_tuple():
    """The tuple form: (grad_fn, loss_fn, params, args)."""
    params, x, y = problem()
    return value_and_grad, loss, params, (x, y)


def rev_only():
    """The mapping form with options for jaxbp.verify.check."""
    return {**case(), "options": {"modes": ("rev",), "key": 3}}
