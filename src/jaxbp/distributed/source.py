"""Data parallelism as a drop-in gradient source for the trainer (:mod:`jaxbp.train`).

:func:`data_parallel_source` returns a function with the signature of :func:`jaxbp.value_and_grad`
— ``(params, x, y, *, activation, output, l2) -> (J, grads)`` — that splits the batch it is given
over the mesh's ``"data"`` axis. The trainer's epoch (``lax.scan`` over minibatches, ``vmap``
over seeds, ``jit``) calls it unchanged: the full training set is replicated on every device,
each minibatch is gathered from it, and the source cuts the minibatch into per-device row blocks
— a local slice, no communication — before the one ``psum`` of Δ.

- ``manual`` (the δ recursion): ``shard_map`` with the explicit ``psum``
  (:func:`jaxbp.distributed.data_parallel_grad_fn`); ``precision="bf16"`` available.
- any other source (``jax.grad``, the graph view): the minibatch is constrained to the row
  sharding and GSPMD partitions the source's own computation, inserting the all-reduce itself.

Batch divisibility, in the trainer: a minibatch of B rows with B % D ≠ 0 is handled explicitly —
padded inside the compiled step with D − (B mod D) zero rows whose mask is 0, so their δ^(L) is
zero and the gradient is exactly that of the B real rows (docs/distributed.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbp.backprop import value_and_grad as manual_value_and_grad
from jaxbp.cost import NO_PENALTY
from jaxbp.distributed.data_parallel import data_parallel_grad_fn
from jaxbp.distributed.mesh import DATA_AXIS, MODEL_AXIS, axis_size, check_mesh
from jaxbp.precision import check_precision
from jaxbp.validation import check_call


def data_parallel_source(mesh, *, precision: str = "float32", base=None):
    """A ``value_and_grad`` that runs data-parallel on ``mesh``.

    Args:
      mesh: a mesh with a ``"data"`` axis (no ``"model"`` axis of size > 1).
      precision: ``"float32"`` or ``"bf16"`` (bf16: only for the hand-derived gradient).
      base: the single-device gradient source; ``None`` or :func:`jaxbp.value_and_grad` selects
        the explicit shard_map + psum path, anything else is partitioned by GSPMD.

    Returns:
      ``value_and_grad(params, x, y, *, activation="sigmoid", output="softmax_ce", l2=None)``
      (``l2=None``: :data:`jaxbp.cost.NO_PENALTY`), pure and traceable (jit, vmap, scan).

    Raises:
      ValueError: bf16 with a base other than the hand-derived gradient; a model axis.
    """
    check_mesh(mesh)
    check_precision(precision)
    if axis_size(mesh, MODEL_AXIS) > 1:
        raise ValueError(
            f"mesh: the trainer's gradient source is data-parallel only; got a {MODEL_AXIS!r} "
            f"axis of size {axis_size(mesh, MODEL_AXIS)}"
        )
    manual = base is None or base is manual_value_and_grad
    if not manual and precision != "float32":
        raise ValueError(
            f"precision: {precision!r} is implemented for the hand-derived gradient only "
            "(grad source 'manual'); use precision 'float32' with other sources"
        )
    devices = axis_size(mesh, DATA_AXIS)
    rows = NamedSharding(mesh, P(DATA_AXIS))

    def value_and_grad(params, x, y, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY):
        if not manual:
            x = jax.lax.with_sharding_constraint(x, rows)
            y = jax.lax.with_sharding_constraint(y, rows)
            return base(params, x, y, activation=activation, output=output, l2=l2)
        l2 = 0.0 if l2 is NO_PENALTY else l2  # no penalty term: the same values as λ = 0
        params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
        dtype = params[0].W.dtype
        m = x.shape[0]
        extra = -m % devices
        mask = jnp.ones((m,), dtype)
        if extra:  # zero-weight padding up to a multiple of the device count
            x, y, mask = (jnp.pad(v, [(0, extra)] + [(0, 0)] * (v.ndim - 1)) for v in (x, y, mask))
        fn = data_parallel_grad_fn(mesh, activation, output, precision)
        return fn(params, x, y, mask, jnp.asarray(l2, dtype))

    return value_and_grad
