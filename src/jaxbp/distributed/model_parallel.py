"""Model parallelism for wide layers: each W split by output rows over a ``"model"`` axis.

With M devices on the ``"model"`` axis, a wide layer's W^(l) (n_out, n_in) and b^(l) are cut into
M blocks of n_out/M rows; device k holds rows k·n_out/M … (k+1)·n_out/M − 1. A layer whose n_out
is not a multiple of M (typically a 10-class output layer) stays replicated. Each device runs the
lecture's equations on its rows, with two collectives (docs/distributed.md, "Model parallel"):

Forward (F2, F3): z_k = W_k a + b_k is device k's block of z — no communication. The next layer
needs all of a = f(z), so the blocks are joined: a = all_gather_k f(z_k). The logits are gathered
the same way before the softmax.

Backward:
  Δ_k = δ_kᵀ a                           (B3: device k's rows of Δ, from its block δ_k of δ and
                                          the full a kept from the forward pass — no communication)
  Wᵀδ = Σ_k W_kᵀ δ_k                      (B2's (Θ^(l))ᵀ δ^(l+1): a sum over the blocks of rows,
                                          so a ``psum`` over ``"model"``; when the layer below is
                                          split too, each device needs only its own columns of that
                                          sum: ``psum_scatter``, half the traffic)
  δ_k^(l) = (Wᵀδ)_k ⊙ f′(z_k^(l))          (B2 on device k's block)

The all-gather of the forward pass and the reduce-scatter of the backward pass are each other's
transposes. With a ``"data"`` axis as well, the per-device Δ are then summed over ``"data"``
exactly as in :mod:`jaxbp.distributed.data_parallel`, and D = Δ/m + (λ/m)W.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbp.activations import resolve
from jaxbp.distributed.mesh import (
    DATA_AXIS,
    MODEL_AXIS,
    axis_size,
    check_mesh,
    place,
    replicate,
    shard_batch,
)
from jaxbp.forward import affine, as_targets
from jaxbp.losses import get_output
from jaxbp.params import Layer, Params
from jaxbp.precision import cast_tree, check_precision, compute_dtype
from jaxbp.validation import check_call

Array = jax.Array


def layer_plan(widths, model_size: int) -> tuple[bool, ...]:
    """Which layers are split: those whose n_out is a multiple of the model-axis size.

    Args:
      widths: each layer's n_out (``W.shape[0]``), or the params themselves.
      model_size: devices on the ``"model"`` axis.
    """
    widths = tuple(int(w.W.shape[0]) if isinstance(w, Layer) else int(w) for w in widths)
    return tuple(model_size > 1 and n % model_size == 0 for n in widths)


def _layer_specs(plan) -> tuple[Layer, ...]:
    return tuple(
        Layer(P(MODEL_AXIS, None), P(MODEL_AXIS)) if split else Layer(P(), P()) for split in plan
    )


def shard_params(mesh, params: Params) -> Params:
    """Places params on ``mesh``: split layers by rows over ``"model"``, the rest replicated."""
    check_mesh(mesh)
    params = tuple(Layer(*layer) for layer in params)
    plan = layer_plan(params, axis_size(mesh, MODEL_AXIS))
    out = []
    for layer, spec in zip(params, _layer_specs(plan), strict=True):
        out.append(
            Layer(*(place(v, NamedSharding(mesh, s)) for v, s in zip(layer, spec, strict=True)))
        )
    return tuple(out)


def _my_columns(v: Array, model_size: int) -> Array:
    """This device's block of columns of a replicated (m, n) array."""
    n = v.shape[1] // model_size
    return jax.lax.dynamic_slice_in_dim(v, jax.lax.axis_index(MODEL_AXIS) * n, n, axis=1)


def _gather(v: Array) -> Array:
    """Joins the devices' column blocks: (m, n/M) → (m, n)."""
    return jax.lax.all_gather(v, MODEL_AXIS, axis=1, tiled=True)


def _model_parallel_body(params, x, y, mask, l2, *, plan, activation, output, precision):
    """The per-device program of :func:`model_parallel_value_and_grad`."""
    n_layers = len(params)
    acts = resolve(activation, n_layers - 1)
    out = get_output(output)
    model_size = jax.lax.axis_size(MODEL_AXIS)
    param_dtype = params[0].W.dtype
    dtype = compute_dtype(precision, param_dtype)
    p = cast_tree(params, dtype)

    # Forward (F1–F3): a_in[l] is the full input of layer l; z_k, h_k this device's blocks.
    a = x.astype(dtype)
    a_in, z_k, h_k = [a], [], []
    logits = None
    for l, layer in enumerate(p):
        z = affine(layer.W, layer.b, a)
        if l < n_layers - 1:
            h = acts[l].f(z)
            a = _gather(h) if plan[l] else h
            z_k.append(z)
            h_k.append(h)
            a_in.append(a)
        else:
            logits = (_gather(z) if plan[l] else z).astype(param_dtype)

    y = as_targets(y, logits.shape[-1], param_dtype)
    mask = mask.astype(param_dtype)
    cost_sum = jnp.sum(out.cost(logits, y) * mask)
    delta = (out.delta(out.link(logits), y) * mask[:, None]).astype(dtype)  # B1, unscaled
    if plan[-1]:
        delta = _my_columns(delta, model_size)

    grads: list[Layer] = [None] * n_layers  # type: ignore[list-item]
    for l in reversed(range(n_layers)):
        grads[l] = Layer(delta.T @ a_in[l], jnp.sum(delta, axis=0))  # B3: this device's rows
        if l == 0:
            break
        back = delta @ p[l].W  # B2's (Θ^(l))ᵀ δ: a partial sum over this device's rows if split
        if plan[l]:
            if plan[l - 1]:
                back = jax.lax.psum_scatter(back, MODEL_AXIS, scatter_dimension=1, tiled=True)
            else:
                back = jax.lax.psum(back, MODEL_AXIS)
        elif plan[l - 1]:
            back = _my_columns(back, model_size)
        delta = back * acts[l - 1].f_prime(z_k[l - 1], h_k[l - 1])  # B2

    Delta = cast_tree(tuple(grads), param_dtype)
    cost_sum, Delta, m = jax.lax.psum((cost_sum, Delta, jnp.sum(mask)), DATA_AXIS)
    m = m.astype(param_dtype)
    # (λ/2m) Σ W²: a split W's squares are summed on its M devices, then over "model".
    squares = [jnp.sum(layer.W * layer.W) for layer in params]
    split_sq = sum(
        (s for s, split in zip(squares, plan, strict=True) if split), jnp.zeros((), param_dtype)
    )
    whole_sq = sum(
        (s for s, split in zip(squares, plan, strict=True) if not split), jnp.zeros((), param_dtype)
    )
    penalty = (l2 / (2 * m)) * (jax.lax.psum(split_sq, MODEL_AXIS) + whole_sq)
    J = cost_sum / m + penalty
    D = tuple(
        Layer(d.W / m + (l2 / m) * w.W, d.b / m) for d, w in zip(Delta, params, strict=True)
    )  # B4
    return J, D


@functools.lru_cache(maxsize=64)
def model_parallel_grad_fn(mesh, widths, activation, output, precision="float32"):
    """The jitted ``(params, x, y, mask, l2) -> (J, D)`` for arrays placed on ``mesh``.

    ``params`` placed by :func:`shard_params`, the batch by :func:`shard_batch`; ``D`` comes back
    placed like ``params``, ``J`` replicated.
    """
    check_mesh(mesh)
    check_precision(precision)
    plan = layer_plan(widths, axis_size(mesh, MODEL_AXIS))
    specs = _layer_specs(plan)
    rows = P(DATA_AXIS)
    body = functools.partial(
        _model_parallel_body,
        plan=plan,
        activation=activation,
        output=output,
        precision=precision,
    )
    # check_vma=False: a replicated layer's values are computed from all-gathered / psummed
    # arrays and are identical on every "model" device by construction, which the varying-axes
    # type check cannot infer through all_gather; the equivalence tests check the result.
    return jax.jit(
        jax.shard_map(
            body,
            mesh=mesh,
            in_specs=(specs, rows, rows, rows, P()),
            out_specs=(P(), specs),
            check_vma=False,
        )
    )


def model_parallel_value_and_grad(
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
    """J(Θ) and D^(l) with wide W split by rows over ``"model"`` (and the batch over ``"data"``).

    Same contract and (up to summation order) same result as :func:`jaxbp.value_and_grad`.

    Args:
      mesh: a ``("data", "model")`` mesh (:func:`jaxbp.distributed.model_mesh`).
      params, x, y, activation, output, l2, precision, pad: as
        :func:`jaxbp.distributed.data_parallel_value_and_grad`.

    Returns:
      ``(J, grads)``: grads with the structure of params, each split layer's leaves split by
      rows over ``"model"`` (:func:`layer_plan` says which).
    """
    check_mesh(mesh)
    if MODEL_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: needs a {MODEL_AXIS!r} axis (see jaxbp.distributed.model_mesh), "
            f"got axes {mesh.axis_names}"
        )
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    check_precision(precision)
    xs, ys, mask = shard_batch(mesh, x, y, pad=pad)
    widths = tuple(int(layer.W.shape[0]) for layer in params)
    fn = model_parallel_grad_fn(mesh, widths, activation, output, precision)
    l2 = replicate(mesh, jnp.asarray(l2, params[0].W.dtype))
    return fn(shard_params(mesh, params), xs, ys, mask, l2)
