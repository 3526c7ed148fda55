"""The hand-derived step against ``jax.grad``'s inside the runner's epoch — what ``jaxbp train``
runs: ``jaxbp.train.make_epoch``, one jitted program per epoch, a ``lax.scan`` over shuffled
minibatches (row gather, step, optimizer update), the state donated between epochs
(docs/benchmarks.md, "Inside the training loop").

``jaxbp bench`` times one step per jitted call, as issue 5 defines it; here the same networks and
batch sizes are timed per step of an epoch of several minibatches, gradient sources ``manual``
and ``autodiff``, interleaved:

    PYTHONPATH=src python benchmarks/epoch_step.py --configs tiny,course,mnist,wide,deep
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import optax

from jaxbp import train as T
from jaxbp.bench import CONFIGS
from jaxbp.bench.timing import interleaved, paired_ratio

SOURCES = ("manual", "autodiff")


def epoch_runner(source: str, config, n_batches: int):
    """``run(n)``: n epochs of ``n_batches`` SGD steps on random data of the configuration."""
    sizes, b = list(config.sizes), config.batch
    m = b * n_batches
    x = jax.random.normal(jax.random.key(0), (m, sizes[0]), jnp.float32)
    labels = jax.random.randint(jax.random.key(1), (m,), 0, sizes[-1])
    y = jax.nn.one_hot(labels, sizes[-1], dtype=jnp.float32)
    optimizer = optax.sgd(0.1)
    epoch = T.make_epoch(
        optimizer,
        T.gradient_source(source),
        batch_size=None if n_batches == 1 else b,
        activation="sigmoid",
        output="softmax_ce",
        l2=0.0,
    )
    epoch = jax.jit(epoch, donate_argnums=0)
    state = [T.init_state(jax.random.key(2), sizes, optimizer, scheme="glorot")]
    state[0], _ = epoch(state[0], x, y)

    def run(n: int) -> None:
        out = None
        for _ in range(n):
            state[0], out = epoch(state[0], x, y)
        jax.block_until_ready(out)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,course,mnist,wide,deep")
    parser.add_argument("--batches", type=int, default=8, help="minibatches per epoch")
    parser.add_argument("--budget", type=float, default=4.0)
    args = parser.parse_args()
    print(
        "| config | minibatches per epoch | manual ms/step | jax.grad ms/step | manual / jax.grad |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        config = CONFIGS[name]
        n = 1 if name == "course" else args.batches  # course: the full batch of 5000
        t = interleaved({s: epoch_runner(s, config, n) for s in SOURCES}, budget_s=args.budget)
        ms = {s: t[s].median * 1e3 / n for s in SOURCES}
        ratio = paired_ratio(t["manual"], t["autodiff"])
        print(f"| {name} | {n} | {ms['manual']:.4g} | {ms['autodiff']:.4g} | {ratio:.3f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
