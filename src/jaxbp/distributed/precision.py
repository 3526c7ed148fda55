"""Mixed precision for the hand-derived gradient: bf16 compute, float32 master parameters.

With ``precision="bf16"`` the forward pass and the δ recursion run on bfloat16 copies of the
parameters and inputs, while everything that accumulates or persists stays in the parameters'
own dtype (float32): the cost and the output error δ^(L) = ŷ − y are formed from the logits cast
back up (a softmax of bf16 logits would lose the small probabilities), each shard's Δ = Σ δ aᵀ is
cast up before the cross-device sum, and the 1/m, the (λ/m)W term, the optimizer update and its
state all use the float32 master copy. ``"float32"`` means: compute in the parameters' dtype.

Tolerance (docs/distributed.md, "Mixed precision"): bfloat16 keeps 8 significant bits,
ε_bf16 = 2⁻⁷. Each weight layer's matmuls and activation round to relative ε_bf16/2, and the
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
