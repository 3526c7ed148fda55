"""The per-epoch step as one XLA program per minibatch: :func:`compile_steps`, for networks whose
convolutions XLA:CPU runs slowly inside a loop or under ``vmap``.

:func:`jaxbp.train.compile_step` compiles a whole epoch — a ``lax.scan`` over the minibatches,
``vmap`` over the seeds — into one program. That is the right shape for dense layers and for
GPUs, but on XLA:CPU (jaxlib 0.10) a convolution's backward pass inside the while loop that the
scan becomes is not rewritten into the library's fast layout, and under ``vmap`` over seeds it
becomes a grouped convolution: a LeNet epoch on MNIST-sized images measured 5–10x slower than the
same steps dispatched one by one (2 seeds, 28 and 7 steps of 64 and 256 rows: 8.2 s vs 1.5 s,
13.0 s vs 1.2 s on 2 CPU cores).

:func:`compile_steps` returns the same ``step(state, stop, x, y, x_val, y_val) -> (state, stop,
EpochMetrics)`` as ``compile_step(make_step(make_epoch(…)))`` — the same minibatch order
(:func:`jaxbp.train.batch_index`), the same update (:func:`jaxbp.train.make_update`), the same
evaluation and early stopping (:func:`jaxbp.train.make_finish`) — as three kinds of programs:
the epoch's minibatch indices, one program per minibatch step that updates every seed in turn
(a Python loop over the seeds inside the program, not ``vmap``), and the evaluation. Dispatch is
asynchronous, so :func:`jaxbp.train.fit` still synchronises with the host once per epoch. The
results equal the one-program epoch's up to floating-point rounding (other fusion, summation
order of the epoch's mean loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import train as T
from jaxbp.model import Model


def _seed(tree, k: int):
    return jax.tree.map(lambda a: a[k], tree)


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def compile_steps(
    optimizer,
    model: Model,
    *,
    batch_size: int | None,
    l2: float = 0.0,
    patience: int = 0,
    uses_value_fn: bool = False,
):
    """The per-epoch step of ``compile_step(make_step(make_epoch(optimizer, model, …)))``, run
    as one program per minibatch (module docstring). ``state`` and ``stop`` carry a leading
    seed axis, as :func:`jaxbp.train.compile_step`'s do; the data are shared.

    Args:
      optimizer, model, batch_size, l2, uses_value_fn: as for :func:`jaxbp.train.make_epoch`.
      patience: as for :func:`jaxbp.train.make_step`.

    Returns:
      ``step(state, stop, x, y, x_val, y_val) -> (state, stop, EpochMetrics)``.
    """
    update = T.make_update(optimizer, model, batch_size=batch_size, uses_value_fn=uses_value_fn)
    finish = T.make_finish(model, l2=l2, patience=patience)

    @jax.jit
    def indices(state, x):
        return jax.vmap(lambda s: T.batch_index(s, x.shape[0], batch_size))(state)

    @jax.jit
    def minibatch(params, opt_state, sums, x, y, index, i, keys, epochs):
        seeds, _, b = index.shape
        m = x.shape[0]
        l2_batch = T.batch_l2(model, l2, b, m, x.dtype)
        out = []
        for k in range(seeds):  # one seed after another: no vmap of the convolutions
            rows = index[k, i]
            xb, yb = (x, y) if b == m else (x[rows], y[rows])
            key = T.step_key(keys[k], epochs[k], i) if model.stochastic else None
            p, o = _seed(params, k), _seed(opt_state, k)
            (p, o), (J, norm) = update(p, o, xb, yb, l2_batch, key)
            out.append((p, o, jnp.stack([J, norm])))
        params, opt_state, terms = _stack(out)
        return params, opt_state, sums + terms

    @jax.jit
    def evaluation(state, stop, params, opt_state, sums, steps, x, y, x_val, y_val):
        new = T.TrainState(params, opt_state, state.key, state.epoch + 1)
        means = sums / steps
        out = [
            finish(_seed(state, k), _seed(stop, k), _seed(new, k), means[k, 0], means[k, 1],
                   x, y, x_val, y_val)
            for k in range(state.epoch.shape[0])
        ]  # fmt: skip
        return _stack(out)

    def step(state, stop, x, y, x_val, y_val):
        index = indices(state, x)
        steps = index.shape[1]
        params, opt_state = state.params, state.opt_state
        sums = jnp.zeros((index.shape[0], 2), jax.tree.leaves(params)[0].dtype)
        for i in range(steps):
            params, opt_state, sums = minibatch(
                params, opt_state, sums, x, y, index, np.int32(i), state.key, state.epoch
            )
        return evaluation(state, stop, params, opt_state, sums, steps, x, y, x_val, y_val)

    return step
