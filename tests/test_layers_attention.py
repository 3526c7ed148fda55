"""SelfAttention (eqs. L17–L19): the hand-derived backward — softmax Jacobian inside the matrix
products, three projection paths into δ_in — against jax.vjp and finite differences; exact zeros
through causally masked scores; the softmax-Jacobian mutation caught and named.

Biases are perturbed away from their initial zeros so that their gradients meet non-trivial
values (at zero bias the forward is the same function; only the checks would be weaker).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers.attention import SelfAttention

F64 = jnp.float64
VJP_RTOL = 1e-12
N_PAIRS = 2
PATHS = {f"params['{k}']" for k in ("Wq", "bq", "Wk", "Wv", "bv", "Wo", "bo")} | {"x"}
slow = pytest.mark.slow


def make(heads, features, t, d_in, *, causal, m=2, seed=0):
    layer = SelfAttention(heads, features, causal=causal, dtype=F64)
    params, out_shape = layer.init(jax.random.key(seed), (t, d_in))
    assert out_shape == (t, features)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = jax.tree.unflatten(
        tree,
        [
            leaf + 0.5 * jax.random.normal(k, leaf.shape, F64)
            for leaf, k in zip(leaves, keys, strict=True)
        ],
    )
    x = jax.random.normal(jax.random.key(seed + 2), (m, t, d_in), F64)
    return layer, params, x


# (heads, features, T, d_in, causal, transforms)
CASES = [
    # The eager row compiles every primitive separately (seconds): the slow pass runs it.
    pytest.param(2, 4, 4, 3, True, ("vmap",), id="2heads-causal"),
    pytest.param(1, 4, 3, 4, False, (), id="1head"),
    pytest.param(2, 4, 1, 3, True, ("vmap",), id="T1-causal", marks=slow),  # P = 1
    pytest.param(2, 4, 5, 3, False, ("eager", "vmap"), id="2heads", marks=slow),
    pytest.param(1, 6, 5, 2, True, ("eager", "vmap"), id="1head-causal", marks=slow),
    pytest.param(1, 4, 1, 4, False, ("eager", "vmap"), id="T1", marks=slow),
    pytest.param(4, 8, 3, 5, True, ("vmap",), id="4heads-causal", marks=slow),
]


@pytest.mark.parametrize("heads, features, t, d_in, causal, transforms", CASES)
def test_check_layer_passes(heads, features, t, d_in, causal, transforms):
    layer, params, x = make(heads, features, t, d_in, causal=causal)
    report = layers.check_layer(layer, params, x, n_pairs=N_PAIRS, transforms=transforms)
    report.raise_if_failed()
    assert {r.path for r in report.rows} == PATHS
    assert max(r.norm_rel for r in report.rows if r.oracle == "vjp") <= VJP_RTOL


def test_one_position_is_a_dense_value_path():
    """T = 1: P = 1 exactly, so y = (x W_vᵀ + b_v) W_oᵀ + b_o and nothing flows through S —
    the hand backward gives exact zeros for Q's and K's projections (jax.vjp only rounding)."""
    layer, params, x = make(2, 4, 1, 3, causal=False, m=3)
    y, cache = jax.jit(layer.forward)(params, x)
    dense = (x @ params["Wv"].T + params["bv"]) @ params["Wo"].T + params["bo"]
    assert jnp.allclose(y, dense, rtol=1e-14, atol=1e-14)
    dy = jax.random.normal(jax.random.key(4), y.shape, F64)
    grads, dx = jax.jit(layer.backward)(params, cache, dy)
    for k in ("Wq", "bq", "Wk"):
        assert jnp.all(grads[k] == 0.0), k
    d_v = dy @ params["Wo"]
    assert jnp.allclose(dx, d_v @ params["Wv"], rtol=1e-14, atol=1e-14)
    assert jnp.allclose(grads["Wv"], jnp.einsum("mtf,mti->fi", d_v, x), rtol=1e-14, atol=1e-14)
    want_grads, want_dx = jax.jit(
        lambda p, x, c: jax.vjp(lambda p, x: layer.forward(p, x)[0], p, x)[1](c)
    )(params, x, dy)
    assert jnp.allclose(dx, want_dx, rtol=1e-13, atol=1e-13)
    for k in want_grads:
        assert jnp.allclose(grads[k], want_grads[k], rtol=1e-13, atol=1e-13), k


def test_no_error_flows_through_masked_scores():
    """Position 0 attends to itself only: an error on y_0 alone reaches x_0 alone, exactly. Every
    masked score would otherwise leak a δ (here P_0s = 0 for s > 0, and dS_00 = 0 at P_00 = 1)."""
    layer, params, x = make(2, 4, 4, 3, causal=True)
    forward = jax.jit(layer.forward)
    y, cache = forward(params, x)
    dy = jnp.zeros_like(y).at[:, 0].set(jax.random.normal(jax.random.key(5), y[:, 0].shape, F64))
    grads, dx = jax.jit(layer.backward)(params, cache, dy)
    assert jnp.all(dx[:, 1:] == 0.0)
    assert jnp.any(dx[:, 0] != 0)
    assert jnp.all(grads["Wq"] == 0.0) and jnp.all(grads["Wk"] == 0.0)  # P_00 = 1: S is inert
    # and the forward: later positions do not change earlier outputs
    y2, _ = forward(params, x.at[:, 2:].add(1.0))
    assert jnp.array_equal(y2[:, :2], y[:, :2])


def test_causal_equals_full_attention_on_the_last_position_and_at_t1():
    """The last position sees every key in both modes; with T = 1 the modes coincide."""
    causal, params, x = make(2, 4, 3, 3, causal=True)
    full = SelfAttention(2, 4, dtype=F64)

    @jax.jit
    def outputs(params, x):
        return [layer.forward(params, a)[0] for layer in (causal, full) for a in (x, x[:, :1])]

    y_causal, y1_causal, y_full, y1_full = outputs(params, x)
    assert jnp.allclose(y_causal[:, -1], y_full[:, -1], rtol=1e-14, atol=1e-14)
    assert not jnp.allclose(y_causal[:, 0], y_full[:, 0])
    assert jnp.array_equal(y1_causal, y1_full)


def test_a_key_bias_would_be_inert():
    """Why there is no bk: adding q_t · b to every score of row t leaves softmax unchanged."""
    layer, params, x = make(2, 4, 4, 3, causal=False)
    b = jax.random.normal(jax.random.key(9), (4,), F64)
    # x W_kᵀ + b = (x, 1) (W_k, b)ᵀ: emulate the bias with a constant input feature
    ones = jnp.ones((*x.shape[:-1], 1), F64)
    with_bias = {
        **params,
        "Wq": jnp.concatenate([params["Wq"], params["bq"][:, None]], axis=1),
        "Wk": jnp.concatenate([params["Wk"], b[:, None]], axis=1),
        "Wv": jnp.concatenate([params["Wv"], params["bv"][:, None]], axis=1),
        "bq": jnp.zeros(4, F64),
        "bv": jnp.zeros(4, F64),
    }
    y, _ = layer.forward(params, x)
    y_b, _ = layer.forward(with_bias, jnp.concatenate([x, ones], axis=-1))
    assert jnp.allclose(y, y_b, rtol=1e-13, atol=1e-13)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="heads must divide features, got heads=3 and features=4"):
        SelfAttention(3, 4)
    with pytest.raises(ValueError, match="SelfAttention: heads must be a positive int, got 0"):
        SelfAttention(0, 4)
    with pytest.raises(ValueError, match="SelfAttention: features must be a positive int"):
        SelfAttention(1, -4)
    with pytest.raises(ValueError, match="causal must be a bool, got 1"):
        SelfAttention(1, 4, causal=1)
    with pytest.raises(ValueError, match=r"in_shape must have 2 axes"):
        SelfAttention(1, 4).init(jax.random.key(0), (3,))
    layer, params, x = make(1, 4, 3, 3, causal=False)
    with pytest.raises(ValueError, match=r"x must have shape \(m, T, 3\), got shape \(3, 3\)"):
        layer.forward(params, x[0])
    with pytest.raises(ValueError, match=r"\(m, T, 3\), got shape \(2, 3, 4\); d_in = 3"):
        layer.forward(params, jnp.ones((2, 3, 4), F64))


# --- mutation: the softmax Jacobian's diagonal only ------------------------------------------

HEADS, FEATURES = 2, 4


def backward_with(softmax_vjp):
    """The hand backward with δ_S = softmax_vjp(P, δ_P) in place of eq. L18's."""
    right = SelfAttention(HEADS, FEATURES, causal=True, dtype=F64).backward
    d_h = FEATURES // HEADS

    def backward(params, cache, dy):
        x, q, k, v, p, o = cache
        grads, _ = right(params, cache, dy)  # Wo, bo, Wv, bv are unaffected: keep them
        d_o = (dy @ params["Wo"]).reshape(*dy.shape[:-1], HEADS, d_h)
        d_v = jnp.einsum("mhts,mthd->mshd", p, d_o)
        d_s = softmax_vjp(p, jnp.einsum("mthd,mshd->mhts", d_o, v))
        d_q = jnp.einsum("mhts,mshd->mthd", d_s, k).reshape(x.shape[:-1] + (FEATURES,)) / d_h**0.5
        d_k = jnp.einsum("mhts,mthd->mshd", d_s, q).reshape(x.shape[:-1] + (FEATURES,)) / d_h**0.5
        d_v = d_v.reshape(x.shape[:-1] + (FEATURES,))
        grads = {
            **grads,
            "Wq": jnp.einsum("mtf,mti->fi", d_q, x),
            "bq": jnp.sum(d_q, axis=(0, 1)),
            "Wk": jnp.einsum("mtf,mti->fi", d_k, x),
        }
        dx = d_q @ params["Wq"] + d_k @ params["Wk"] + d_v @ params["Wv"]
        return grads, dx

    return backward


def right_softmax_vjp(p, d_p):
    return p * (d_p - jnp.sum(d_p * p, axis=-1, keepdims=True))


def diagonal_only(p, d_p):
    return p * (1 - p) * d_p  # ∂P_ij/∂S_ij only: the −P_ij P_ik off the diagonal dropped


def identity_jacobian(p, d_p):
    return p * d_p  # the softmax differentiated as if it were exp, its normalisation forgotten


def test_mutation_harness_reproduces_the_right_backward():
    layer, params, x = make(HEADS, FEATURES, 4, 3, causal=True)
    y, cache = layer.forward(params, x)
    dy = jax.random.normal(jax.random.key(3), y.shape, F64)
    want_grads, want_dx = layer.backward(params, cache, dy)
    grads, dx = backward_with(right_softmax_vjp)(params, cache, dy)
    assert jnp.allclose(dx, want_dx, rtol=1e-14, atol=1e-14)
    for k in want_grads:
        assert jnp.allclose(grads[k], want_grads[k], rtol=1e-14, atol=1e-14), k


@pytest.mark.parametrize(
    "wrong",
    [diagonal_only, pytest.param(identity_jacobian, marks=slow)],
    ids=["diagonal-only", "normalisation-forgotten"],
)
def test_mutation_is_caught_and_named(wrong):
    layer, params, x = make(HEADS, FEATURES, 4, 3, causal=True)
    report = layers.check_layer(
        layer._replace(backward=backward_with(wrong)), params, x, n_pairs=N_PAIRS, transforms=()
    )
    assert report.ok is False
    # exactly the leaves downstream of δ_S: Q's and K's projections and the input
    assert report.failed == ["params['Wk']", "params['Wq']", "params['bq']", "x"]
    failing = {r.oracle for r in report.rows if not r.ok}
    assert "vjp" in failing and "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd" in failing
    with pytest.raises(AssertionError, match="failed at 4 leaf"):
        report.raise_if_failed()
