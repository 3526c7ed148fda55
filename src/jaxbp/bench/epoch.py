"""The training step inside the runner's epoch — what ``jaxbp train`` runs.

``jaxbp bench`` times one training step per jitted call, as issue 5 defines it. ``jaxbp train``
runs :func:`jaxbp.train.make_epoch` instead: one jitted program per epoch, a ``lax.scan`` over
shuffled minibatches (row gather, step, optimizer update), the state donated from one epoch to
the next. :func:`bench_epoch` times that program for the hand-derived (``manual``) and
``jax.grad`` (``autodiff``) gradient sources on a configuration's network and batch size,
interleaved, and reports the time per step and the paired ratio (docs/benchmarks.md, "Inside the
training loop").
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp.bench.configs import Config
from jaxbp.bench.timing import interleaved, paired_ratio

SOURCES = ("manual", "autodiff")
"""The gradient sources compared, by their names in :data:`jaxbp.sources.SOURCES`."""

MINIBATCHES = 8
"""Minibatches per timed epoch."""


def prepare_epoch(
    source: str,
    config: Config,
    *,
    minibatches: int = MINIBATCHES,
    dtype=jnp.float32,
    activation="sigmoid",
    lr: float = 0.1,
    precision: str | None = None,
    seed: int = 0,
):
    """Compiles one epoch of ``minibatches`` SGD steps on random data of ``config``'s shape.

    Returns:
      ``(run, params)``: ``run(n)`` runs n epochs and blocks on the last; ``params()`` the
      current parameters as NumPy arrays (to check that both sources train alike).
    """
    from jaxbp import train as T

    sizes, b = list(config.sizes), config.batch
    m = b * minibatches
    k_x, k_y, k_init = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k_x, (m, sizes[0]), dtype)
    y = jax.nn.one_hot(jax.random.randint(k_y, (m,), 0, sizes[-1]), sizes[-1], dtype=dtype)
    optimizer = optax.sgd(lr)
    epoch = T.make_epoch(
        optimizer,
        T.gradient_source(source),
        batch_size=b,
        activation=activation,
        output="softmax_ce",
        l2=0.0,
    )
    epoch = jax.jit(epoch, donate_argnums=0)
    state = [T.init_state(k_init, sizes, optimizer, scheme="glorot", dtype=dtype)]
    ctx = jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()

    def run(n: int) -> None:
        out = None
        with ctx:
            for _ in range(n):
                state[0], out = epoch(state[0], x, y)
        jax.block_until_ready(out)

    run(1)  # compile

    def params():
        return jax.tree.map(np.asarray, state[0].params)

    return run, params


def bench_epoch(
    config: Config,
    *,
    minibatches: int = MINIBATCHES,
    dtype=jnp.float32,
    activation="sigmoid",
    lr: float = 0.1,
    precision: str | None = None,
    budget_s: float = 3.0,
    sample_s: float = 0.02,
    seed: int = 0,
) -> dict:
    """Times the epoch of both :data:`SOURCES` in shuffled rounds.

    Returns:
      ``{"minibatches", "manual_ms", "autodiff_ms", "ratio"}``: milliseconds per step (epoch
      median / minibatches) and the paired median of manual / autodiff epoch times.
    """
    kw = dict(minibatches=minibatches, dtype=dtype, activation=activation, lr=lr)
    runs = {s: prepare_epoch(s, config, precision=precision, seed=seed, **kw)[0] for s in SOURCES}
    t = interleaved(runs, budget_s=budget_s, sample_s=sample_s)
    return {
        "minibatches": minibatches,
        **{f"{s}_ms": t[s].median * 1e3 / minibatches for s in SOURCES},
        "ratio": paired_ratio(t["manual"], t["autodiff"]),
    }
