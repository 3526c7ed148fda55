"""The timing harness: interleaved rounds, medians, paired ratios.

Every method to be compared is a ``run(n)`` callable that performs n training steps and returns
once the last one has finished (``block_until_ready`` for JAX) — or, for a peer in a worker
process of its own (:mod:`jaxbp.bench.peers`), returns the seconds per step it measured there.
The harness

1. calibrates, per method, how many steps make one sample of at least ``sample_s`` seconds (so
   that timer, dispatch and synchronisation costs are spread over many of the 40 µs steps of a
   tiny network, as in a training loop);
2. runs rounds: in round r every still-active method takes one sample, in an order shuffled
   afresh each round (seeded), so that no method always runs first or always right after the
   same neighbour — a library whose threads keep spinning for a while after its own step
   (OpenBLAS under scikit-learn spins ~0.1 s) slows whichever sample comes next, and that must
   not always be the same method;
3. stops a method after ``min_rounds`` once its samples have used ``budget_s``, or at
   ``max_rounds``.

Machine drift (another process starting, the clock throttling) then hits all methods of a
round alike: the ratio of two methods is taken per round and its median reported
(:func:`paired_ratio`), which cancels drift slower than a round.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

Runner = Callable[[int], "float | None"]


class Timing(NamedTuple):
    """Per-step times of one method.

    Attributes:
      samples: seconds per step, one per round the method took part in.
      rounds: the round index of each sample.
      inner: steps per sample.
    """

    samples: tuple[float, ...]
    rounds: tuple[int, ...]
    inner: int

    @property
    def median(self) -> float:
        """Median seconds per step."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over median (0 with fewer than 4 samples)."""
        if len(self.samples) < 4:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median


def sample(run: Runner, n: int) -> float:
    """Seconds per step of ``n`` steps of ``run``.

    A runner that returns a number has timed itself: that number is its seconds per step (a peer
    in a worker process times its n steps there, so that the pipe's round trip is not counted).
    """
    t0 = time.perf_counter()
    own = run(n)
    elapsed = (time.perf_counter() - t0) / n
    return elapsed if own is None else float(own)


def calibrate(run: Runner, sample_s: float, max_inner: int = 100_000) -> int:
    """Steps per sample so that one sample takes at least ``sample_s`` seconds (≥ 1).

    Doubles n until n steps take a quarter of ``sample_s`` (one step's time is no guide for a
    40 µs step: a lone call pays the whole dispatch and synchronisation), then scales up.
    """
    run(1)  # the first call after compiling can take milliseconds more than any other
    n = 1
    while True:
        per_step = sample(run, n)
        if per_step * n >= sample_s / 4 or n >= max_inner:
            break
        n *= 2
    return max(1, min(max_inner, math.ceil(sample_s / max(per_step, 1e-9))))


def interleaved(
    runs: Mapping[str, Runner],
    *,
    budget_s: float,
    sample_s: float = 0.02,
    min_rounds: int = 3,
    max_rounds: int = 200,
    seed: int = 0,
) -> dict[str, Timing]:
    """Times every runner in shuffled rounds (module docstring).

    Args:
      runs: name → ``run(n)``; each has already been compiled and warmed up once.
      budget_s: seconds of samples per method after which it stops (once ``min_rounds`` are in).
      sample_s: minimum duration of one sample.
      min_rounds: rounds every method takes part in, whatever its cost.
      max_rounds: rounds after which every method stops.
      seed: seed of the per-round orders.

    Returns:
      name → :class:`Timing`.
    """
    if not runs:
        return {}
    if budget_s <= 0 or sample_s <= 0 or min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(
            f"budget_s/sample_s/min_rounds/max_rounds: got {budget_s}, {sample_s}, "
            f"{min_rounds}, {max_rounds}"
        )
    names = list(runs)
    inner = {name: calibrate(runs[name], sample_s) for name in names}
    for name in names:  # one full-size sample to warm caches and thread pools, discarded
        sample(runs[name], inner[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    rounds: dict[str, list[int]] = {name: [] for name in names}
    spent = dict.fromkeys(names, 0.0)
    rng = random.Random(seed)
    for r in range(max_rounds):
        active = [n for n in names if r < min_rounds or spent[n] < budget_s]
        if not active:
            break
        rng.shuffle(active)
        for name in active:
            t = sample(runs[name], inner[name])
            samples[name].append(t)
            rounds[name].append(r)
            spent[name] += t * inner[name]
    return {name: Timing(tuple(samples[name]), tuple(rounds[name]), inner[name]) for name in names}


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over the rounds both took part in of (a's time / b's time) — drift cancels."""
    b_by_round = dict(zip(b.rounds, b.samples, strict=True))
    ratios = [
        t / b_by_round[r] for r, t in zip(a.rounds, a.samples, strict=True) if r in b_by_round
    ]
    if not ratios:
        return a.median / b.median
    return statistics.median(ratios)
