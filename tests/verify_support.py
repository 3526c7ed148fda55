"""Problems for the verifier tests, drawn with NumPy generators (explicit seeds).

``jax.random`` would compile a random-number kernel for every new leaf shape — seconds per
architecture — so test networks here are drawn on the host: W, b uniform in [−ε, ε] with the
course's ε = √6 / √(n_in + n_out) (the "ng" scheme of :func:`jaxbp.init_params`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

import jaxbp


def numpy_problem(sizes, *, output="softmax_ce", dtype=jnp.float64, m=6, seed=0, labels=True):
    """``(params, x, y)``: integer labels for softmax_ce when ``labels``, else real targets."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        eps = math.sqrt(6) / math.sqrt(n_in + n_out)
        params.append(
            jaxbp.Layer(
                jnp.asarray(rng.uniform(-eps, eps, (n_out, n_in)), dtype),
                jnp.asarray(rng.uniform(-eps, eps, (n_out,)), dtype),
            )
        )
    x = jnp.asarray(rng.standard_normal((m, sizes[0])), dtype)
    k = sizes[-1]
    if output == "softmax_ce":
        classes = rng.integers(0, k, m)
        y = jnp.asarray(classes, jnp.int32) if labels else jnp.asarray(np.eye(k)[classes], dtype)
    elif output == "sigmoid_bce":
        y = jnp.asarray(rng.integers(0, 2, (m, k)), dtype)
    else:
        y = jnp.asarray(rng.standard_normal((m, k)), dtype)
    return tuple(params), x, y
