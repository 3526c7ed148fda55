"""The logistic regression of ``logistic.py`` with a planted bug in one leaf: ∂J/∂b forgets the
1/m of the mean, so ``jaxbp verify --case tests/cases/logistic_bug.py:case`` fails on ``['b']``
only (exit 1)."""

import jax
import jax.numpy as jnp
import numpy as np


def loss(params, x, y):
    z = x @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def grad(params, x, y):
    z = x @ params["w"] + params["b"]
    r = jax.nn.sigmoid(z) - y
    return {"w": x.T @ r / x.shape[0], "b": jnp.sum(r)}  # bug: "b" misses the 1/m


def case():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((12, 3)), jnp.float64)
    y = jnp.asarray(rng.integers(0, 2, 12), jnp.float64)
    params = {
        "w": jnp.asarray(0.5 * rng.standard_normal(3), jnp.float64),
        "b": jnp.asarray(0.1, jnp.float64),
    }
    return {"grad_fn": grad, "loss_fn": loss, "params": params, "args": (x, y)}
