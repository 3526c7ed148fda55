"""Several processes (hosts), one program: ``jax.distributed`` set up from flags or environment.

Every process runs the same command. After :func:`initialize`, ``jax.devices()`` lists the devices
of *all* processes, a :func:`jaxbp.distributed.data_mesh` spans them, and the data-parallel
``psum`` of Δ runs across hosts (NCCL on GPUs, Gloo on CPUs, ICI/DCN on TPUs). Each process
loads the same data set and places only its own row blocks (:func:`jaxbp.distributed.place`);
parameters start from the same key, so they are identical everywhere without a broadcast.

Settings, each from its argument or else its environment variable:

======================  =========================  ==========================================
argument                environment                meaning
======================  =========================  ==========================================
coordinator_address     JAX_COORDINATOR_ADDRESS    host:port of process 0's coordinator
num_processes           JAX_NUM_PROCESSES          number of processes (usually one per host)
process_id              JAX_PROCESS_ID             this process's index, 0 … num_processes − 1
======================  =========================  ==========================================

None of them set: a single process, nothing to initialise — unless ``auto_detect=True``, which
lets JAX read a cluster's own environment (SLURM, Open MPI, Cloud TPU). Some but not all set: a
``ValueError`` naming what is missing. The recipe for a GPU cluster is in docs/distributed.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")


class MultiHostSpec(NamedTuple):
    """A resolved multi-process setting."""

    coordinator_address: str  # "host:port" of process 0
    num_processes: int
    process_id: int


class ProcessInfo(NamedTuple):
    """Where this process stands after :func:`initialize`."""

    process_id: int
    num_processes: int
    local_devices: int  # devices this process drives
    global_devices: int  # devices of all processes together


def _as_int(name: str, value, env_name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected an integer (argument or {env_name}), got {value!r}"
        ) from None


def resolve_multihost(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> MultiHostSpec | None:
    """Combines arguments and environment into a validated setting; ``None`` if none is given.

    Raises:
      ValueError: only some of the three given; a malformed address; num_processes < 1;
        process_id outside [0, num_processes).
    """
    env = os.environ if environ is None else environ
    values = {
        "coordinator_address": coordinator_address or env.get(ENV_COORDINATOR) or None,
        "num_processes": num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES),
        "process_id": process_id if process_id is not None else env.get(ENV_PROCESS_ID),
    }
    given = [k for k, v in values.items() if v not in (None, "")]
    if not given:
        return None
    missing = [k for k in values if k not in given]
    if missing:
        env_names = {
            "coordinator_address": ENV_COORDINATOR,
            "num_processes": ENV_NUM_PROCESSES,
            "process_id": ENV_PROCESS_ID,
        }
        raise ValueError(
            f"{missing[0]}: multi-process setup needs all of coordinator_address, num_processes "
            f"and process_id; got {', '.join(given)} but not {', '.join(missing)} "
            f"(set by argument or {', '.join(env_names[k] for k in missing)})"
        )
    address = str(values["coordinator_address"])
    match = _ADDRESS.match(address)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(
            f"coordinator_address: expected host:port (e.g. 10.0.0.1:1234), got {address!r}"
        )
    n = _as_int("num_processes", values["num_processes"], ENV_NUM_PROCESSES)
    pid = _as_int("process_id", values["process_id"], ENV_PROCESS_ID)
    if n < 1:
        raise ValueError(f"num_processes: must be ≥ 1, got {n}")
    if not 0 <= pid < n:
        raise ValueError(f"process_id: must be in [0, {n}) for {n} processes, got {pid}")
    return MultiHostSpec(address, n, pid)


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids=None,
    timeout_s: int = 300,
    auto_detect: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ProcessInfo:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``).

    Must run before any other JAX operation. With nothing set (and ``auto_detect=False``) it
    initialises nothing and describes the single process.

    Args:
      coordinator_address, num_processes, process_id: see the module docstring; each falls back
        to its environment variable.
      local_device_ids: the local accelerators this process drives (default: all visible).
      timeout_s: how long to wait for every process to join before failing.
      auto_detect: with nothing set, let JAX detect SLURM / Open MPI / Cloud TPU settings.
      environ: the environment to read (default ``os.environ``).

    Returns:
      A :class:`ProcessInfo`.
    """
    spec = resolve_multihost(coordinator_address, num_processes, process_id, environ=environ)
    if spec is not None:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=int(timeout_s),
        )
    elif auto_detect:
        jax.distributed.initialize(
            local_device_ids=local_device_ids, initialization_timeout=int(timeout_s)
        )
    return process_info()


def process_info() -> ProcessInfo:
    """This process's index, the process count and the device counts."""
    return ProcessInfo(
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    )


def is_main_process() -> bool:
    """True on process 0: the one that writes files (summary, checkpoints, plots)."""
    return jax.process_index() == 0


def host_copy(tree):
    """A numpy copy of each leaf of a *replicated* global array tree, readable on any process
    (from this process's first local replica; no communication)."""

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                raise ValueError(
                    f"tree: leaf of shape {leaf.shape} is sharded across processes; only "
                    "replicated arrays can be read on one host"
                )
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(leaf)

    return jax.tree.map(one, tree)


def shutdown() -> None:
    """Leaves the multi-process run (``jax.distributed.shutdown``); a no-op for one process."""
    if jax.process_count() > 1:
        jax.distributed.shutdown()
