"""The manual-vs-autodiff check with the batch sharded over devices.

:func:`sharded_check` runs :func:`jaxbp.verify.check` with, on one side, the data-parallel
hand-derived gradient (per-shard δ recursion, psum of Δ, D = Δ/m + (λ/m)W) and, on the other,
``jax.grad`` / ``jax.jvp`` / finite differences of the plain cost J(Θ) — the batch placed on the
mesh for both, so the autodiff oracles run sharded too (GSPMD partitions them).

With ``precision="bf16"`` the hand side computes in bfloat16 while the oracles stay in the
parameters' float32; the tolerance is then :func:`jaxbp.distributed.bf16_grad_rtol` (4 · L ·
ε_bf16, docs/distributed.md) for every oracle, instead of the float32 defaults.
"""

from __future__ import annotations

import functools

from jaxbp.cost import cost
from jaxbp.distributed.data_parallel import data_parallel_value_and_grad
from jaxbp.distributed.mesh import check_mesh, shard_batch
from jaxbp.precision import bf16_grad_rtol, check_precision
from jaxbp.validation import check_call
from jaxbp.verify import check


def sharded_check(
    mesh,
    params,
    x,
    y,
    *,
    activation="sigmoid",
    output="softmax_ce",
    l2=0.0,
    precision="float32",
    modes=("rev", "fwd", "fd"),
    rtol=None,
    **check_kwargs,
):
    """Verifies the data-parallel hand-derived gradient against autodiff, batch sharded.

    Args:
      mesh: a mesh with a ``"data"`` axis; m must be a multiple of its size.
      params, x, y, activation, output, l2: as :func:`jaxbp.value_and_grad`.
      precision: the hand side's compute precision (``"float32"`` or ``"bf16"``).
      modes, rtol, **check_kwargs: as :func:`jaxbp.verify.check`; ``rtol=None`` uses the
        verifier's dtype defaults for float32, and :func:`bf16_grad_rtol` for bf16.

    Returns:
      The verifier's :class:`~jaxbp.verify.Report`.
    """
    check_mesh(mesh)
    check_precision(precision)
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    xs, ys, _ = shard_batch(mesh, x, y)
    if rtol is None and precision == "bf16":
        rtol = bf16_grad_rtol(len(params))
    grad_fn = functools.partial(
        _hand, mesh=mesh, activation=activation, output=output, l2=l2, precision=precision
    )
    loss_fn = functools.partial(cost, activation=activation, output=output, l2=l2)
    axes = ", ".join(f"{name}={size}" for name, size in mesh.shape.items())
    title = f"sharded gradient check (mesh {axes}, hand-side compute {precision})"
    return check(
        grad_fn, loss_fn, params, xs, ys, modes=modes, rtol=rtol, title=title, **check_kwargs
    )


def _hand(params, x, y, *, mesh, activation, output, l2, precision):
    return data_parallel_value_and_grad(
        mesh, params, x, y, activation=activation, output=output, l2=l2, precision=precision
    )
