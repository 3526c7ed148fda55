"""Multi-head scaled dot-product self-attention, forward and hand-derived backward.

Forward, for a batch of sequences x: (m, T, d_in), H heads of d_h = features/H each
(docs/derivation.md, eq. L17)::

    Q = x W_qᵀ + b_q,  K = x W_kᵀ,  V = x W_vᵀ + b_v      (m, T, features) → (m, T, H, d_h)
    S = Q Kᵀ / √d_h                  per example and head: S_ts = q_t · k_s / √d_h   (T, T)
        causal: S_ts = −∞ for s > t  (position t attends to positions ≤ t only)
    P = softmax(S) over the keys s   P_ts = e^{S_ts} / Σ_r e^{S_tr}
    O = P V                          O_t = Σ_s P_ts v_s, heads merged back to (m, T, features)
    y = O W_oᵀ + b_o                 W_o: (features, features)

Backward, for δ = ∂E/∂y. The output projection is a dense layer (eqs. L1–L3): ∂E/∂W_o = δᵀ O,
∂E/∂b_o = Σ δ, δ_O = δ W_o, split into heads. Then, per example and head (eq. L18):

- O = P V is a matrix product, so δ_V = Pᵀ δ_O and δ_P = δ_O Vᵀ.
- P = softmax(S) row by row. The softmax Jacobian (eq. S2) is ∂P_tj/∂S_tk = P_tj(δ_jk − P_tk),
  and rows do not mix, so

      δ_S[t, k] = Σ_j δ_P[t, j] ∂P_tj/∂S_tk = Σ_j δ_P[t, j] P_tj (δ_jk − P_tk)
                = P_tk δ_P[t, k] − P_tk Σ_j δ_P[t, j] P_tj
      δ_S = P ⊙ (δ_P − rowsum(δ_P ⊙ P))

  — the T × T Jacobian of each row applied without ever being formed. Its off-diagonal part,
  the − P_tk Σ_j … term, is what makes every score of a row compete; keeping the diagonal only
  (P ⊙ (1 − P) ⊙ δ_P) is the classic mistake, caught in ``tests/test_layers_attention.py``.
  Masked entries have P_tk = e^{−∞} = 0 exactly, so δ_S is exactly 0 there: no error flows
  through a masked score (the mask is a constant; it has no derivative of its own).

- S = Q Kᵀ/√d_h (eq. L19): δ_Q = δ_S K/√d_h and δ_K = δ_Sᵀ Q/√d_h.

Finally the three projections are dense layers of the same x, so their errors add where they
meet (the lecture's fan-out): ∂E/∂W_q = δ_Qᵀ x, ∂E/∂b_q = Σ δ_Q (likewise K, V), and

    δ_in = δ_Q W_q + δ_K W_k + δ_V W_v.

No key bias b_k: it would add q_t · b_k/√d_h to every score of row t, the same for every key
s, and softmax is invariant to a shift of its row, so y does not depend on b_k at all and
∂E/∂b_k ≡ 0 (Σ_s δ_S[t, s] = 0 for every row). Such a parameter never trains, and its computed
gradient is pure rounding noise, compared with jax.vjp's rounding noise by any checker. (Whisper
leaves it out for the same reason; PyTorch and flax carry it, inert.)

Everything is an ``einsum`` over the batch and head axes at once; no Python loop over examples
or heads.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbp.layers import init as init_lib
from jaxbp.layers.base import (
    Layer,
    check_array,
    check_dy,
    check_params,
    check_shape,
    positive_int,
    register,
    shape_text,
)
from jaxbp.losses import softmax

PROJECTIONS = ("q", "k", "v")
BIASED = ("q", "v")  # no key bias: softmax cancels it (module docstring)


@register("SelfAttention")
def SelfAttention(heads: int, features: int, *, causal: bool = False, dtype=jnp.float32) -> Layer:
    """Multi-head self-attention on (m, T, d_in) sequences (eqs. L17–L19).

    Params: ``Wq, Wk, Wv`` (features, d_in), ``Wo`` (features, features) — Glorot-initialised
    and named ``W…`` so that the L2 penalty falls on them — and biases ``bq, bv, bo``
    (features,), starting at zero (no ``bk``: y does not depend on a key bias). Output shape (T, features).

    Args:
      heads: the number of heads H; must divide ``features``.
      features: the width of Q, K, V and of the output.
      causal: mask the scores of later positions (s > t) with −∞.
      dtype: the parameters' dtype.

    Raises:
      ValueError: ``heads`` or ``features`` not a positive int, or ``features % heads != 0``;
        (from ``forward``) an ``x`` not (m, T, d_in) with the d_in of ``params['Wq']``, or
        ``params`` of the wrong shapes; (from ``backward``) a ``dy`` not (m, T, features).
    """
    positive_int(heads, "heads", "SelfAttention")
    positive_int(features, "features", "SelfAttention")
    if features % heads:
        raise ValueError(
            f"SelfAttention: heads must divide features, got heads={heads} and features={features}"
        )
    if not isinstance(causal, bool):
        raise ValueError(f"SelfAttention: causal must be a bool, got {causal!r}")
    d_h = features // heads
    inv_sqrt = 1 / math.sqrt(d_h)
    name = f"SelfAttention({heads}, {features}{', causal' if causal else ''})"

    def init(key, in_shape):
        t, d_in = check_shape(in_shape, 2, name)
        keys = jax.random.split(key, 4)
        params = {}
        for p, k in zip(PROJECTIONS, keys[:3], strict=True):
            params[f"W{p}"] = init_lib.weight(k, (features, d_in), d_in, features, "glorot", dtype)
            if p in BIASED:
                params[f"b{p}"] = jnp.zeros((features,), dtype)
        params["Wo"] = init_lib.weight(
            keys[3], (features, features), features, features, "glorot", dtype
        )
        params["bo"] = jnp.zeros((features,), dtype)
        return params, (t, features)

    def split(a):  # (m, T, features) → (m, T, H, d_h)
        return a.reshape(*a.shape[:-1], heads, d_h)

    def merge(a):  # (m, T, H, d_h) → (m, T, features)
        return a.reshape(*a.shape[:-2], features)

    def check(params):
        """d_in, once the parameters' shapes agree on it (and on ``features``)."""
        check_params(params, {"Wq": (features, "d_in")}, name)
        d_in = params["Wq"].shape[1]
        patterns = {f"W{p}": (features, d_in) for p in PROJECTIONS}
        patterns |= {f"b{p}": (features,) for p in BIASED}
        check_params(params, {**patterns, "Wo": (features, features), "bo": (features,)}, name)
        return d_in

    def forward(params, x, *, key=None, train=False):
        del key, train
        d_in = check(params)
        note = f"d_in = {d_in}, from params['Wq'] of shape {shape_text(params['Wq'].shape)}"
        check_array(x, "x", ("m", "T", d_in), name, note)
        q, k, v = (
            split(x @ params[f"W{p}"].T + (params[f"b{p}"] if p in BIASED else 0))
            for p in PROJECTIONS
        )
        s = jnp.einsum("mthd,mshd->mhts", q, k) * inv_sqrt  # S = QKᵀ/√d_h
        if causal:
            t = x.shape[1]
            allowed = jnp.tril(jnp.ones((t, t), bool))  # s ≤ t
            s = jnp.where(allowed, s, -jnp.inf)
        p = softmax(s)  # over the keys (last axis)
        o = merge(jnp.einsum("mhts,mshd->mthd", p, v))  # O = PV
        y = o @ params["Wo"].T + params["bo"]
        return y, (x, q, k, v, p, o)

    def backward(params, cache, dy):
        check(params)
        x, q, k, v, p, o = cache
        check_dy(dy, (*x.shape[:2], features), name)
        grads = {
            "Wo": jnp.einsum("mtf,mtg->fg", dy, o),  # δᵀ O
            "bo": jnp.sum(dy, axis=(0, 1)),
        }
        d_o = split(dy @ params["Wo"])  # δ_O
        d_v = jnp.einsum("mhts,mthd->mshd", p, d_o)  # δ_V = Pᵀ δ_O
        d_p = jnp.einsum("mthd,mshd->mhts", d_o, v)  # δ_P = δ_O Vᵀ
        # δ_S = P ⊙ (δ_P − rowsum(δ_P ⊙ P)): the softmax Jacobian inside the product (eq. L18);
        # exactly 0 at masked scores, where P = 0.
        d_s = p * (d_p - jnp.sum(d_p * p, axis=-1, keepdims=True))
        d_q = jnp.einsum("mhts,mshd->mthd", d_s, k) * inv_sqrt  # δ_S K/√d_h
        d_k = jnp.einsum("mhts,mthd->mshd", d_s, q) * inv_sqrt  # δ_Sᵀ Q/√d_h   (eq. L19)
        dx = 0
        for name_, delta in zip(PROJECTIONS, (d_q, d_k, d_v), strict=True):
            delta = merge(delta)
            grads[f"W{name_}"] = jnp.einsum("mtf,mti->fi", delta, x)
            if name_ in BIASED:
                grads[f"b{name_}"] = jnp.sum(delta, axis=(0, 1))
            dx = dx + delta @ params[f"W{name_}"]  # the three paths' errors add
        return {key: grads[key] for key in params}, dx

    return Layer(init, forward, backward, name=name)
