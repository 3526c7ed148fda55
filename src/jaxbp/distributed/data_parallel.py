"""Data parallelism for the hand-derived gradient: the batch split over devices, one ``psum``.

The lecture's gradient is a sum over examples followed by one scaling (docs/derivation.md):

  Δ^(l) = Σ_{i=1…m} δ^(l+1)_i a^(l)_iᵀ        (B3)
  D^(l) = (1/m) Δ^(l) + (λ/m) Θ^(l)            (B4, λ off the bias column)

A sum over m rows is a sum over shards of sums over each shard's rows. So every device runs the
unchanged δ recursion (:func:`jaxbp.backward`) on its own rows, seeded with the *unscaled* output
error δ^(L) = ŷ − y, which gives its partial Δ_s; one ``psum`` over the ``"data"`` axis adds the
partials into Δ on every device; and only then is Δ divided by the *global* m and the (λ/m)W term
added — once, on replicated values, so λ is not counted once per device. J is assembled the same
way from the psum of the per-example costs.

Why ``shard_map`` with an explicit ``psum`` rather than ``jit`` with input shardings: under
``jit`` + shardings, GSPMD would insert an all-reduce into the contraction δᵀa over the sharded
batch axis by itself, and it gives the same numbers (the tests check both). But the
communication would then be implicit — chosen by the partitioner, and not visible in the code.
With ``shard_map`` the per-device program *is* the lecture's algorithm on m/D rows, and the only
communication is the one line that sums Δ: exactly the Σ over examples of eq. B3 split at the
shard boundaries. It also guarantees the cost of a step: one all-reduce of |Θ| numbers,
independent of the batch size.

Parameters and optimizer state are replicated; each step's update is computed identically on
every device from the identical, reduced gradient, so replicas never drift apart.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxbp.backprop import add_l2_grad, backward
from jaxbp.cost import l2_penalty
from jaxbp.distributed.mesh import (
    DATA_AXIS,
    MODEL_AXIS,
    axis_size,
    check_divisible,
    check_mesh,
    replicate,
    shard_batch,
)
from jaxbp.forward import as_targets, forward
from jaxbp.losses import get_output
from jaxbp.params import Params
from jaxbp.per_sample import _per_example_grads
from jaxbp.precision import cast_tree, check_precision, compute_dtype
from jaxbp.validation import check_call

Array = jax.Array

MAX_IN_FLIGHT = 4
"""Steps dispatched before waiting for the results. XLA's in-process CPU collectives (forced CPU
devices) can deadlock in the all-reduce rendezvous when many executions are queued at once — seen
with a few hundred queued steps on 8 forced devices and 2 cores (jax 0.10.2) — so step loops wait
every few steps; on accelerators this costs next to nothing."""


@functools.partial(jax.jit, static_argnames=("activation", "output", "precision"))
def shard_sums(params: Params, x, y, mask, *, activation, output, precision="float32"):
    """One shard's unscaled sums: Σ_i mask_i cost_i and Δ_s = Σ_i δ^(l+1)_i a^(l)_iᵀ (eq. B3).

    Runs on the device's own rows only; no communication. The seed is δ^(L) = ŷ − y, *not*
    divided by m: the division waits until the shards' sums have been added. Rows with mask 0
    (padding) get δ^(L) = 0, and since the recursion is linear in each row's δ^(L), they
    contribute nothing to any Δ.

    Args:
      params: tuple of ``Layer(W, b)`` (the master copy, e.g. float32).
      x: (m_s, n) this shard's rows.
      y: (m_s, K) targets or (m_s,) integer labels.
      mask: (m_s,) 1 for real rows, 0 for padding.
      activation, output: as :func:`jaxbp.value_and_grad`.
      precision: ``"float32"`` (the parameters' dtype) or ``"bf16"`` (see precision.py).

    Returns:
      ``(cost_sum, Delta)``, both in the parameters' dtype.
    """
    out = get_output(output)
    param_dtype = params[0].W.dtype
    dtype = compute_dtype(precision, param_dtype)
    compute_params = cast_tree(params, dtype)
    cache = forward(compute_params, x, activation=activation, output=output)
    logits = cache.z[-1].astype(param_dtype)
    y = as_targets(y, logits.shape[-1], param_dtype)
    y_hat = cache.a[-1] if dtype == param_dtype else out.link(logits)
    mask = mask.astype(param_dtype)
    cost_sum = jnp.sum(out.cost(logits, y) * mask)
    delta_out = out.delta(y_hat, y) * mask[:, None]  # B1, unscaled; padding rows → 0
    Delta = backward(compute_params, cache, delta_out.astype(dtype), activation=activation).grads
    return cost_sum, cast_tree(Delta, param_dtype)


def _data_parallel_body(params, x, y, mask, l2, *, activation, output, precision):
    """The per-device program of :func:`data_parallel_value_and_grad`."""
    cost_sum, Delta = shard_sums(
        params, x, y, mask, activation=activation, output=output, precision=precision
    )
    # The one communication: Σ over shards of the per-shard sums (eq. B3 split by rows).
    cost_sum, Delta, m = jax.lax.psum((cost_sum, Delta, jnp.sum(mask)), DATA_AXIS)
    m = m.astype(cost_sum.dtype)
    J = cost_sum / m + l2_penalty(params, l2, m)
    D = add_l2_grad(jax.tree.map(lambda d: d / m, Delta), params, l2, m)  # B4, global m
    return J, D


@functools.lru_cache(maxsize=64)
def data_parallel_grad_fn(mesh, activation, output, precision="float32"):
    """The jitted ``(params, x, y, mask, l2) -> (J, D)`` for arrays already placed on ``mesh``.

    ``params`` replicated, ``x``/``y``/``mask`` sharded by rows (:func:`shard_batch`); ``J`` and
    ``D`` come back replicated. Cached per (mesh, names, precision), so it compiles once.
    """
    check_mesh(mesh)
    check_precision(precision)
    body = functools.partial(
        _data_parallel_body, activation=activation, output=output, precision=precision
    )
    rows = P(DATA_AXIS)
    return jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=(P(), rows, rows, rows, P()), out_specs=(P(), P()))
    )


def data_parallel_value_and_grad(
    mesh,
    params: Params,
    x,
    y,
    *,
    activation="sigmoid",
    output="softmax_ce",
    l2=0.0,
    precision="float32",
    pad=False,
):
    """J(Θ) and D^(l) with the batch split over the mesh's ``"data"`` axis (eqs. B1–B4).

    Same contract and (up to summation order) same result as :func:`jaxbp.value_and_grad`.

    Args:
      mesh: a mesh with a ``"data"`` axis (:func:`jaxbp.distributed.data_mesh`).
      params, x, y, activation, output, l2: as :func:`jaxbp.value_and_grad`; x and y are the
        global batch (in multi-process runs every process passes the same global batch).
      precision: ``"float32"`` or ``"bf16"`` (bf16 compute, float32 accumulation).
      pad: how to handle m % D ≠ 0 — ``False``: ``ValueError``; ``True``: zero-weight padding.

    Returns:
      ``(J, grads)``, replicated over the mesh.

    Example:
      >>> mesh = jaxbp.distributed.data_mesh(4)
      >>> J, grads = jaxbp.distributed.data_parallel_value_and_grad(mesh, params, x, labels)
    """
    check_mesh(mesh)
    if axis_size(mesh, MODEL_AXIS) > 1:
        raise ValueError(
            f"mesh: has a {MODEL_AXIS!r} axis of size {axis_size(mesh, MODEL_AXIS)}; use "
            "jaxbp.distributed.model_parallel_value_and_grad for model parallelism"
        )
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    check_precision(precision)
    xs, ys, mask = shard_batch(mesh, x, y, pad=pad)
    fn = data_parallel_grad_fn(mesh, activation, output, precision)
    return fn(replicate(mesh, params), xs, ys, mask, jnp.asarray(l2, params[0].W.dtype))


def sharded_per_example_grads(
    mesh, params: Params, x, y, *, activation="sigmoid", output="softmax_ce"
) -> Params:
    """Per-example gradients δ^(l+1)_i a^(l)_iᵀ with the batch split over the ``"data"`` axis.

    Each device runs :func:`jaxbp.per_example_grads`' computation on its own rows; nothing is
    communicated, and the result stays sharded by rows.

    Returns:
      The pytree of :func:`jaxbp.per_example_grads` (leading batch axis m), sharded along it.

    Raises:
      ValueError: m not a multiple of the data-axis size (per-example results have no padding).
    """
    check_mesh(mesh)
    params, x, y, activation, output = check_call(params, x, y, activation, output)
    check_divisible(int(x.shape[0]), mesh)
    xs, ys, _ = shard_batch(mesh, x, y)
    return _per_example_fn(mesh, activation, output)(replicate(mesh, params), xs, ys)


@functools.lru_cache(maxsize=64)
def _per_example_fn(mesh, activation, output):
    body = functools.partial(_per_example_grads, activation=activation, output=output)
    rows = P(DATA_AXIS)
    return jax.jit(
        jax.shard_map(
            lambda p, x, y: body(p, x, y),
            mesh=mesh,
            in_specs=(P(), rows, rows),
            out_specs=rows,
        )
    )


def make_train_step(
    mesh,
    optimizer: optax.GradientTransformation,
    *,
    activation="sigmoid",
    output="softmax_ce",
    l2=0.0,
    precision="float32",
):
    """A jitted training step on ``mesh`` with the hand-derived, device-reduced gradient.

    The gradient is data-parallel (:func:`data_parallel_grad_fn`), or model-parallel
    (:func:`jaxbp.distributed.model_parallel_grad_fn`) when the mesh has a ``"model"`` axis of
    size > 1. The optimizer update runs on the reduced gradient, so with replicated parameters
    every device applies the same update.

    Returns:
      ``step(params, opt_state, x, y, mask) -> (params, opt_state, J)``, for params from
      :func:`place_params`, ``opt_state`` from :func:`init_opt_state` and a batch from
      :func:`jaxbp.distributed.shard_batch`.
    """
    check_mesh(mesh)
    check_precision(precision)
    if not isinstance(activation, str):
        activation = tuple(activation)
    if axis_size(mesh, MODEL_AXIS) > 1:
        from jaxbp.distributed.model_parallel import model_parallel_grad_fn

        def gradient(params, x, y, mask, l2_):  # the layer widths decide which W are split
            widths = tuple(int(layer.W.shape[0]) for layer in params)
            fn = model_parallel_grad_fn(mesh, widths, activation, output, precision)
            return fn(params, x, y, mask, l2_)

    else:
        gradient = data_parallel_grad_fn(mesh, activation, output, precision)

    @jax.jit
    def step(params, opt_state, x, y, mask):
        J, grads = gradient(params, x, y, mask, jnp.asarray(l2, params[0].W.dtype))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, J

    return step


def place_params(mesh, params: Params) -> Params:
    """Parameters placed for :func:`make_train_step`: replicated, or each wide W split by rows
    over the ``"model"`` axis when the mesh has one (:func:`jaxbp.distributed.shard_params`)."""
    check_mesh(mesh)
    if axis_size(mesh, MODEL_AXIS) > 1:
        from jaxbp.distributed.model_parallel import shard_params

        return shard_params(mesh, params)
    return replicate(mesh, params)


def init_opt_state(mesh, optimizer: optax.GradientTransformation, params: Params):
    """``optimizer.init`` for placed parameters; the state is placed like the parameters it
    mirrors (replicated for data parallelism)."""
    state = jax.jit(optimizer.init)(params)
    return state if axis_size(mesh, MODEL_AXIS) > 1 else replicate(mesh, state)


def data_parallel_train(
    mesh,
    params: Params,
    x,
    y,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int | None = None,
    activation="sigmoid",
    output="softmax_ce",
    l2=0.0,
    precision="float32",
    pad=False,
):
    """A fixed training run: ``steps`` updates on cyclic minibatches (rows t·B … t·B + B − 1,
    wrapping) or on the full batch (``batch_size=None``).

    The deterministic schedule makes runs on different device counts comparable (the tests
    check that 1, 2, 4 and 8 devices end at the same parameters).

    Returns:
      ``(params, losses)``: the final parameters (on the mesh) and J before each step.
    """
    check_mesh(mesh)
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an int ≥ 0, got {steps!r}")
    m = int(x.shape[0])
    if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= m):
        raise ValueError(f"batch_size: expected an int in [1, {m}] or None, got {batch_size!r}")
    step = make_train_step(
        mesh, optimizer, activation=activation, output=output, l2=l2, precision=precision
    )
    params = place_params(mesh, params)
    opt_state = init_opt_state(mesh, optimizer, params)
    batches = _cyclic_batches(mesh, x, y, m if batch_size is None else batch_size, steps, pad)
    losses = []
    for t in range(steps):
        params, opt_state, J = step(params, opt_state, *batches[t % len(batches)])
        losses.append(J)
        if (t + 1) % MAX_IN_FLIGHT == 0:
            jax.block_until_ready(params)
    return params, [float(J) for J in losses]


def _cyclic_batches(mesh, x, y, batch_size, steps, pad):
    """The distinct minibatches of the cyclic schedule, each placed on the mesh once."""
    m = int(x.shape[0])
    n_distinct = max(1, min(steps, m // math.gcd(m, batch_size)))
    x, y = np.asarray(x), np.asarray(y)
    out = []
    for t in range(n_distinct):
        rows = (np.arange(batch_size) + t * batch_size) % m
        out.append(shard_batch(mesh, x[rows], y[rows], pad=pad))
    return out
