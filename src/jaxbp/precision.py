"""Mixed precision for the hand-derived gradient: bf16 products, float32 accumulation and
master parameters.

With ``precision="bf16"`` (:func:`jaxbp.value_and_grad`, ``jaxbp train --precision bf16``, the
data-parallel gradient) every matrix product of the forward pass and of the δ recursion takes
bfloat16 operands — a bf16 copy of the parameters, the inputs, the cached hidden activations
a^(l) and each δ — and *accumulates and returns float32* (``preferred_element_type=float32``: the
AMX / AVX512-BF16 / tensor-core instruction, which on an AMX CPU runs 4-6 times faster than a
float32 product, while a product left in bf16 is slower than float32 there). Everything else
stays float32: z = a Wᵀ + b, the activations and f′, the cost and the output error δ^(L) = ŷ − y
(formed from float32 logits: a softmax of bf16 logits would lose the small probabilities), each
Δ = Σ δ aᵀ and the bias sums, the 1/m, the (λ/m)W term, the optimizer update and its state, on
the float32 master copy. ``"float32"`` means: compute in the parameters' dtype.

The three products of a layer are :func:`dot` (δ^(l+1) W, eq. B2), :func:`dot_nt` (a Wᵀ,
eq. F2) and :func:`dot_tn` (δᵀ a, eq. B3), each one ``lax.dot_general`` with the contraction in
its dimension numbers. How they are written matters on XLA:CPU: it keeps a bf16 product in bf16
only when its left operand is contracted along its last axis and both are row-major in memory;
any other product — ``a @ W.T`` as JAX hands it over, a transpose with a column-major layout,
included — is upcast to float32 and runs at the float32 rate (docs/benchmarks.md, "bf16 on
AMX").

Tolerance (docs/distributed.md, "Mixed precision"): bfloat16 keeps 8 significant bits,
ε_bf16 = 2⁻⁷. Each weight layer's products round their operands to relative ε_bf16/2, and the
errors compound through the recursion, so the bf16 gradient matches the float32 one to a
relative (Frobenius, per leaf) error of :data:`BF16_GRAD_RTOL` = 4 · L · ε_bf16 for a network of
L weight layers — the bound used by the tests and by the sharded verifier for bf16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PRECISIONS = ("float32", "bf16")
"""Compute precisions: the parameters' own dtype, or bfloat16 with float32 accumulation."""

BF16_EPS = float(jnp.finfo(jnp.bfloat16).eps)
"""ε of bfloat16, 2⁻⁷ = 0.0078125."""


def check_precision(precision: str) -> str:
    """Validates a precision name; returns it."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision: unknown {precision!r}; valid precisions are {', '.join(PRECISIONS)}"
        )
    return precision


def compute_dtype(precision: str, param_dtype):
    """The dtype the forward pass and the δ recursion run in."""
    check_precision(precision)
    return jnp.dtype(jnp.bfloat16) if precision == "bf16" else jnp.dtype(param_dtype)


def bf16_grad_rtol(n_layers: int) -> float:
    """Relative per-leaf tolerance of a bf16 gradient against float32: 4 · L · ε_bf16."""
    return 4.0 * n_layers * BF16_EPS


def cast_tree(tree, dtype):
    """Every floating leaf of ``tree`` cast to ``dtype`` (integer leaves, e.g. labels, kept)."""

    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def _mixed(a, b) -> bool:
    return a.dtype == jnp.bfloat16 and b.dtype == jnp.bfloat16


def _dot_general(a, b, contract: tuple[int, int]):
    """``lax.dot_general`` contracting ``a``'s axis ``contract[0]`` with ``b``'s ``contract[1]``;
    two bfloat16 operands accumulate in and return float32, every other dtype as JAX promotes."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    if not _mixed(a, b):
        dtype = jnp.result_type(a, b)
        a, b = a.astype(dtype), b.astype(dtype)
    preferred = jnp.float32 if _mixed(a, b) else None
    dims = (((contract[0] % a.ndim,), (contract[1] % b.ndim,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=preferred)


def dot(a, b):
    """a b: ``a``'s last axis contracted with ``b``'s first (the δ recursion's δ^(l+1) W).

    Two bfloat16 operands are accumulated in and returned as float32 (module docstring); every
    other dtype is ``a @ b``.
    """
    return _dot_general(a, b, (-1, 0))


def dot_nt(a, b):
    """a bᵀ: the last axes of both contracted (the forward pass's a Wᵀ, eq. F2).

    Written as one ``dot_general`` with the contraction in its dimension numbers, never as
    ``a @ b.T``: XLA receives a transpose from JAX with a column-major layout, and on an XLA:CPU
    build with YNNPACK a bfloat16 product whose operand is not row-major is not offloaded — it is
    upcast to float32 and runs at the float32 rate (docs/benchmarks.md, "bf16 on AMX").
    """
    return _dot_general(a, b, (-1, -1))


def dot_tn(a, b):
    """aᵀ b: the first axes of both contracted — Σ_i a_i b_iᵀ over a batch of rows (eq. B3).

    XLA:CPU's YNNPACK kernels take bfloat16 products only with the contracted axis of the left
    operand last, so for two bfloat16 operands on a CPU, aᵀ is first written to memory in row
    order (:func:`row_major_transpose`) and the product taken as ``aᵀ @ b`` (5-7x faster than the
    float32 fallback XLA otherwise takes; docs/benchmarks.md). Other platforms and dtypes: one
    ``dot_general`` contracting axis 0 of both.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if not _mixed(a, b):
        return _dot_general(a, b, (0, 0))
    return jax.lax.platform_dependent(
        a,
        b,
        cpu=lambda a, b: _dot_general(row_major_transpose(a), b, (-1, 0)),
        default=lambda a, b: _dot_general(a, b, (0, 0)),
    )


def row_major_transpose(a):
    """aᵀ of a matrix, materialised in row-major order.

    JAX hands XLA a transpose as a layout change (a column-major view of ``a``), which XLA:CPU's
    library kernels refuse for bfloat16. Flattening the transpose behind an
    ``optimization_barrier`` forces XLA to write aᵀ out row by row; the reshape back is free.
    """
    n, k = a.shape
    return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(k, n)
