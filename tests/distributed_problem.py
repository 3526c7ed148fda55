"""The fixed problems of the distributed tests, shared by the test modules and the subprocess
workers they spawn (tests/distributed_worker.py, tests/distributed_multihost_worker.py).

A short, deterministic training run: cyclic minibatches of 16 rows from 48, SGD with momentum
(so that optimizer state is replicated too), L2 on. Every device count in (1, 2, 4, 8) divides
the minibatch, so every run sees the same minibatches in the same order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp

SIZES = (6, 16, 8, 5)
M = 48
BATCH = 16
STEPS = 12
ACTIVATION = "tanh"
OUTPUT = "softmax_ce"
L2 = 0.1
DEVICE_COUNTS = (1, 2, 4, 8)
FLOAT32_DEVICE_COUNTS = (1, 8)  # float32 as well, at the two ends (float64 covers all four)

# Model-parallel problem: widths chosen so that model axes of 2, 4 and 8 split different
# subsets of layers (all split; split → replicated → split), covering every collective path.
MP_SIZES = (6, 16, 12, 8)
MP_OUTPUT = "sigmoid_bce"
MP_MESHES = ((1, 2), (1, 8), (2, 4))  # (data, model)


def optimizer():
    return optax.sgd(0.3, momentum=0.9)


def problem(dtype=jnp.float64, sizes=SIZES, output=OUTPUT, m=M, seed=0):
    """Parameters and data: x (m, n) normal, integer labels or multi-hot targets."""
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxbp.init_params(k_p, sizes, dtype=dtype)
    x = jax.random.normal(k_x, (m, sizes[0]), dtype)
    if output == "softmax_ce":
        y = jax.random.randint(k_y, (m,), 0, sizes[-1])
    else:
        y = jax.random.bernoulli(k_y, 0.4, (m, sizes[-1])).astype(dtype)
    return params, np.asarray(x), np.asarray(y)


@functools.cache
def reference_run(dtype_name: str, optimizer_name: str = "sgd"):
    """:func:`reference_train` on :func:`problem`, computed once per test process."""
    params, x, y = problem(jnp.dtype(dtype_name))
    opt = optax.adam(0.01) if optimizer_name == "adam" else optimizer()
    return reference_train(params, x, y, opt=opt)


def reference_train(params, x, y, *, steps=STEPS, batch=BATCH, opt=None):
    """Single-device training with the plain hand-derived gradient and the same schedule."""
    opt = optimizer() if opt is None else opt

    @jax.jit
    def step(params, state, x, y):
        J, grads = jaxbp.value_and_grad(params, x, y, activation=ACTIVATION, output=OUTPUT, l2=L2)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, J

    state = opt.init(params)
    losses = []
    for t in range(steps):
        rows = (np.arange(batch) + t * batch) % x.shape[0]
        params, state, J = step(params, state, x[rows], y[rows])
        losses.append(float(J))
    return params, losses


def flat(params) -> list[np.ndarray]:
    """The leaves as host numpy arrays, in tree order."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def scan_train(value_and_grad, params, x, y, *, batch=12, steps=4):
    """The trainer's epoch pattern: ``lax.scan`` over fixed minibatches, SGD, one seed."""
    opt = optax.sgd(0.3)
    x, y = jnp.asarray(x), jnp.asarray(y)
    rows = (jnp.arange(steps * batch) % x.shape[0]).reshape(steps, batch)

    def step(carry, r):
        params, state = carry
        _, grads = value_and_grad(params, x[r], y[r], activation=ACTIVATION, output=OUTPUT, l2=L2)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), rows)
    return params
