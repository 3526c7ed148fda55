"""Device meshes, and placing a batch and the parameters on them.

A data-parallel mesh has one axis, ``"data"``: the batch is split into equal row blocks along it,
one block per device, and everything else (parameters, optimizer state) is replicated. A
model-parallel mesh adds a ``"model"`` axis, along which each wide ``W`` is split by rows (n_out).

Batch-divisibility policy (docs/distributed.md): a batch of m rows on D data devices needs
m % D == 0. By default a batch that does not divide is a ``ValueError`` naming m and D. With
``pad=True`` the batch is handled explicitly instead: it is padded with zero rows up to the next
multiple of D, and the returned ``mask`` (1 for real rows, 0 for padding) zeroes the padding's
output error δ^(L), so the padding contributes nothing to Δ = Σ δ aᵀ or to J, and the global m
is Σ mask — the gradient is exactly that of the m real rows.

Multi-host: every process passes the same *global* arrays (each loads the full data set, as the
runner does); :func:`place` builds the global ``jax.Array`` from each process's own row blocks
(``jax.make_array_from_callback``), so no process ever sends its data to another.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
"""Mesh axis along which the batch is split (data parallelism)."""

MODEL_AXIS = "model"
"""Mesh axis along which each wide W is split by output rows (model parallelism)."""


def _pick_devices(devices) -> list:
    """``None`` → every device (all processes); an int n → the first n; a sequence → as given."""
    available = jax.devices()
    if devices is None:
        return list(available)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1 or n > len(available):
            raise ValueError(
                f"devices: asked for {n} device(s), but {len(available)} are available "
                f"({available[0].platform}); on CPU, start with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={max(n, 1)} "
                "(jaxbp.distributed.request_cpu_devices) before JAX initialises"
            )
        return list(available[:n])
    if isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0:
        return list(devices)
    raise TypeError(
        f"devices: expected None, a positive int or a non-empty sequence of jax devices, "
        f"got {devices!r}"
    )


def data_mesh(devices=None) -> Mesh:
    """A one-axis ``("data",)`` mesh over ``devices`` (default: every device of every process).

    Args:
      devices: ``None`` (all), a count n (the first n of ``jax.devices()``), or a device list.

    Raises:
      ValueError: more devices asked for than exist — with the flag that forces CPU devices.
    """
    devs = _pick_devices(devices)
    return Mesh(np.array(devs), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def model_mesh(model: int, data: int = 1, devices=None) -> Mesh:
    """A two-axis ``("data", "model")`` mesh of ``data × model`` devices.

    Args:
      model: devices each wide W is split over (its n_out rows in ``model`` equal blocks).
      data: devices the batch is split over (1: no data parallelism).
      devices: ``None`` (the first data·model devices) or a device list of that length.
    """
    for name, n in (("model", model), ("data", data)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name}: expected a positive int, got {n!r}")
    devs = _pick_devices(data * model if devices is None else devices)
    if len(devs) != data * model:
        raise ValueError(
            f"devices: a {data}×{model} (data × model) mesh needs {data * model} devices, "
            f"got {len(devs)}"
        )
    return Mesh(
        np.array(devs).reshape(data, model),
        (DATA_AXIS, MODEL_AXIS),
        axis_types=(AxisType.Auto, AxisType.Auto),
    )


def axis_size(mesh: Mesh, name: str) -> int:
    """Size of mesh axis ``name``; 1 if the mesh has no such axis."""
    return int(mesh.shape[name]) if name in mesh.axis_names else 1


def check_mesh(mesh) -> Mesh:
    """Validates that ``mesh`` is a ``jax.sharding.Mesh`` with a ``"data"`` axis."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: needs a {DATA_AXIS!r} axis (see jaxbp.distributed.data_mesh), "
            f"got axes {mesh.axis_names}"
        )
    extra = set(mesh.axis_names) - {DATA_AXIS, MODEL_AXIS}
    if extra:
        raise ValueError(
            f"mesh: unknown axis name(s) {sorted(extra)}; jaxbp uses {DATA_AXIS!r} and "
            f"{MODEL_AXIS!r}, got axes {mesh.axis_names}"
        )
    return mesh


def check_divisible(m: int, mesh: Mesh) -> None:
    """Raises the policy's ``ValueError`` when m rows do not split evenly over the data axis."""
    d = axis_size(mesh, DATA_AXIS)
    if m % d:
        raise ValueError(
            f"x: batch of {m} rows does not split evenly over {d} data-parallel devices "
            f"({m} % {d} = {m % d}); use a batch size that is a multiple of {d}, or pass "
            "pad=True to pad with zero-weight rows (docs/distributed.md, batch divisibility)"
        )


def place(value, sharding: NamedSharding) -> jax.Array:
    """A global array with ``sharding`` from a host value every process holds in full.

    Single process: ``jax.device_put``. Several processes: each builds only its addressable
    blocks from its own copy (``jax.make_array_from_callback``) — no data crosses hosts.
    """
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = place(jax.random.key_data(value), sharding)  # typed keys: place the raw bits
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def replicate(mesh: Mesh, tree):
    """Every leaf of ``tree`` replicated on every device of ``mesh`` (parameters, opt state)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda leaf: place(leaf, sharding), tree)


def shard_batch(mesh: Mesh, x, y, *, pad: bool = False):
    """Splits a global batch by rows over the mesh's data axis.

    Args:
      mesh: a mesh with a ``"data"`` axis.
      x: (m, n) inputs.
      y: (m, K) targets or (m,) integer labels.
      pad: handle m % D ≠ 0 by zero-row padding with a zero mask (see the module docstring);
        ``False`` raises ``ValueError`` instead.

    Returns:
      ``(x, y, mask)`` as global arrays sharded along rows; ``mask`` is (m_padded,) in x's float
      dtype (float32 for integer x), 1 for real rows and 0 for padding.
    """
    check_mesh(mesh)
    m = int(np.shape(x)[0])
    if int(np.shape(y)[0]) != m:
        raise ValueError(f"y: {np.shape(y)[0]} rows for {m} rows of x; x and y row counts differ")
    d = axis_size(mesh, DATA_AXIS)
    x_dtype = jnp.result_type(x)
    mask_dtype = x_dtype if jnp.issubdtype(x_dtype, jnp.floating) else jnp.float32
    mask = np.ones((m,), mask_dtype)
    if m % d:
        if not pad:
            check_divisible(m, mesh)
        extra = d - m % d
        x = np.concatenate([np.asarray(x), np.zeros((extra, *np.shape(x)[1:]), x_dtype)])
        y = np.concatenate(
            [np.asarray(y), np.zeros((extra, *np.shape(y)[1:]), np.asarray(y).dtype)]
        )
        mask = np.concatenate([mask, np.zeros((extra,), mask_dtype)])
    rows = NamedSharding(mesh, P(DATA_AXIS))
    return place(x, rows), place(y, rows), place(mask, rows)
