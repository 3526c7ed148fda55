"""Throughput of data-parallel training against the number of devices.

Each measurement: one mesh of n devices, the same global batch split n ways, ``steps`` training
steps (forward, δ recursion, psum of Δ, SGD update) after one compiling warm-up step; the best of
``repeats`` timings is kept. Examples per second = batch · steps / seconds. At most
``MAX_IN_FLIGHT`` steps are queued at a time (XLA's CPU collectives can deadlock on a long queue).

Read the numbers for what they are. CPU "devices" made with
``--xla_force_host_platform_device_count`` are slices of the *same* cores: on a 2-core machine,
8 devices do the same arithmetic on the same 2 cores plus the shard bookkeeping and the
all-reduce, so throughput stays flat or drops — the table measures the overhead of sharding, not
a speed-up. Real scaling needs real devices (several GPUs, or hosts via jax.distributed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import jax
import numpy as np
import optax

from jaxbp.distributed.data_parallel import (
    MAX_IN_FLIGHT,
    init_opt_state,
    make_train_step,
    place_params,
)
from jaxbp.distributed.mesh import data_mesh, shard_batch
from jaxbp.params import init_params
from jaxbp.precision import check_precision


def bench_scaling(
    device_counts: Sequence[int],
    *,
    sizes: Sequence[int],
    batch: int,
    steps: int,
    activation="sigmoid",
    output="softmax_ce",
    precision="float32",
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Training throughput of the data-parallel hand-derived gradient for each device count.

    Args:
      device_counts: e.g. ``(1, 2, 4, 8)``; each at most ``len(jax.devices())`` and dividing
        ``batch``.
      sizes: layer widths, input first.
      batch: the global batch (split over the devices).
      steps: timed steps per repeat.
      activation, output, precision: as :func:`jaxbp.distributed.make_train_step`.
      repeats: timings per device count; the fastest is reported.
      seed: PRNG seed for the parameters and the synthetic data.

    Returns:
      One dict per device count: ``devices``, ``platform``, ``device_kind``, ``batch``,
      ``per_device_batch``, ``steps``, ``seconds`` (best repeat), ``examples_per_s``,
      ``speedup`` (vs the first count), ``efficiency`` (speedup / device ratio), ``compile_s``,
      ``cpu_cores``, ``forced_cpu_devices`` (True when the devices are CPU slices sharing cores).

    Raises:
      ValueError: an empty or bad count, a count above the available devices, a batch that a
        count does not divide, non-positive steps or repeats.
    """
    counts = tuple(device_counts)
    if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
        raise ValueError(f"device_counts: expected positive ints, got {device_counts!r}")
    for name, v in (("batch", batch), ("steps", steps), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    check_precision(precision)
    bad = [n for n in counts if batch % n]
    if bad:
        raise ValueError(
            f"batch: {batch} does not split evenly over {bad} device(s); choose a batch that is "
            "a multiple of every device count (docs/distributed.md, batch divisibility)"
        )
    available = len(jax.devices())
    if max(counts) > available:
        data_mesh(max(counts))  # raises the ValueError naming the flag that forces CPU devices

    key_params, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
    sizes = tuple(sizes)
    params0 = init_params(key_params, sizes)
    x = np.asarray(jax.random.normal(key_x, (batch, sizes[0]), params0[0].W.dtype))
    y = np.asarray(jax.random.randint(key_y, (batch,), 0, sizes[-1]))
    optimizer = optax.sgd(0.1)
    platform = jax.devices()[0].platform
    rows = []
    for n in counts:
        mesh = data_mesh(n)
        step = make_train_step(
            mesh, optimizer, activation=activation, output=output, precision=precision
        )
        params = place_params(mesh, params0)
        opt_state = init_opt_state(mesh, optimizer, params)
        xs, ys, mask = shard_batch(mesh, x, y)
        t0 = time.perf_counter()
        params, opt_state, J = step(params, opt_state, xs, ys, mask)
        jax.block_until_ready(params)
        compile_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for t in range(steps):
                params, opt_state, J = step(params, opt_state, xs, ys, mask)
                if (t + 1) % MAX_IN_FLIGHT == 0:  # bounded queue: see MAX_IN_FLIGHT
                    jax.block_until_ready(params)
            jax.block_until_ready((params, J))
            best = min(best, time.perf_counter() - t0)
        rows.append(
            {
                "devices": n,
                "platform": platform,
                "device_kind": jax.devices()[0].device_kind,
                "batch": batch,
                "per_device_batch": batch // n,
                "steps": steps,
                "seconds": best,
                "examples_per_s": batch * steps / best,
                "compile_s": compile_s,
                "cpu_cores": os.cpu_count(),
                "forced_cpu_devices": platform == "cpu" and n > 1,
            }
        )
    base = rows[0]
    for row in rows:
        row["speedup"] = row["examples_per_s"] / base["examples_per_s"]
        row["efficiency"] = row["speedup"] / (row["devices"] / base["devices"])
    return rows


def scaling_markdown(rows: Sequence[dict]) -> str:
    """The rows of :func:`bench_scaling` as a Markdown table (for docs and the CLI)."""
    lines = [
        "| devices | per-device batch | examples/s | speedup | efficiency |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['per_device_batch']} | {r['examples_per_s']:,.0f} "
            f"| {r['speedup']:.2f}× | {r['efficiency']:.0%} |"
        )
    return "\n".join(lines)
