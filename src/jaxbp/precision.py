"""Mixed precision for the hand-derived gradient: bf16 products, float32 accumulation and
master parameters.

With ``precision="bf16"`` (:func:`jaxbp.value_and_grad`, ``jaxbp train --precision bf16``, the
data-parallel gradient) every matrix product of the forward pass and of the δ recursion takes
bfloat16 operands — a bf16 copy of the parameters, the inputs, the cached hidden activations
a^(l) and each δ — and *accumulates and returns float32* (:func:`dot`:
``preferred_element_type=float32``: the AMX / AVX512-BF16 / tensor-core instruction, which on
an AMX CPU runs several times faster than a float32 product, while a product left in bf16 is
slower than float32 there). Everything else stays float32: z = dot(a, Wᵀ) + b, the
activations and f′, the cost and the output error δ^(L) = ŷ − y (formed from float32 logits: a
softmax of bf16 logits would lose the small probabilities), each Δ = Σ δ aᵀ and the bias sums,
the 1/m, the (λ/m)W term, the optimizer update and its state, on the float32 master copy.
``"float32"`` means: compute in the parameters' dtype.

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


def dot(a, b):
    """a @ b — with two bfloat16 operands accumulated in and returned as float32.

    The one product of the forward pass and the δ recursion (:func:`jaxbp.forward.affine`,
    :func:`jaxbp.backprop.backward`, :func:`jaxbp.backprop.weight_gradient`). Every other dtype:
    ``a @ b`` as written.
    """
    if a.dtype == jnp.bfloat16 and b.dtype == jnp.bfloat16:
        return jnp.matmul(a, b, preferred_element_type=jnp.float32)
    return a @ b
