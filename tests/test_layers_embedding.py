"""Embedding (eq. L16): y = W[x]; ∂E/∂W is the scatter-add of δ into the looked-up rows (summed
where an index repeats); no δ_in for integer x; out-of-range indices named or clamped."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import layers
from jaxbp.layers.embedding import Embedding

F64 = jnp.float64
VJP_RTOL = 1e-12
N_PAIRS = 2


@pytest.mark.parametrize(
    "x, transforms",
    [
        ([[0, 1, 1, 5], [2, 2, 0, 3], [5, 5, 5, 5]], ("eager", "vmap")),  # (m, T), repeats
        pytest.param([3, 0, 3], ("vmap",), marks=pytest.mark.slow),  # (m,): one index each
    ],
    ids=["sequences", "single"],
)
def test_check_layer_passes(x, transforms):
    layer = Embedding(6, 3, dtype=F64)
    x = jnp.asarray(x, jnp.int32)
    params, out_shape = layer.init(jax.random.key(0), x.shape[1:])
    assert out_shape == (*x.shape[1:], 3)
    report = layers.check_layer(layer, params, x, n_pairs=N_PAIRS, transforms=transforms)
    report.raise_if_failed()
    checked = {r.path for r in report.rows if r.status != "not applicable"}
    assert checked == {"params['W']"}  # the integer x is not differentiated...
    skipped = [r for r in report.rows if r.path == "x"]
    assert skipped and all(r.status == "not applicable" for r in skipped)  # ...and says so
    assert max(r.norm_rel for r in report.rows if r.oracle == "vjp") <= VJP_RTOL


def test_weight_gradient_is_the_scatter_add_of_delta():
    layer = Embedding(5, 2, dtype=F64)
    params, _ = layer.init(jax.random.key(0), (3,))
    x = jnp.array([[4, 1, 4], [1, 1, 0]])
    y, cache = layer.forward(params, x)
    assert jnp.array_equal(y, params["W"][x])
    dy = jax.random.normal(jax.random.key(1), (2, 3, 2), F64)
    grads, dx = layer.backward(params, cache, dy)
    assert dx is None
    want = np.zeros((5, 2))
    for i in range(2):
        for t in range(3):
            want[int(x[i, t])] += np.asarray(dy[i, t])  # Σ over positions that read row k
    assert jnp.allclose(grads["W"], want, rtol=1e-15, atol=0)
    assert jnp.array_equal(grads["W"][jnp.array([2, 3])], jnp.zeros((2, 2)))  # rows never looked up


@pytest.mark.parametrize(
    "bad, value, where",
    [(6, 6, r"\(1, 2\) \(example row 1\)"), (-1, -1, r"\(1, 2\) \(example row 1\)")],
    ids=["too-large", "negative"],
)
def test_out_of_range_index_is_named(bad, value, where):
    layer = Embedding(6, 3, dtype=F64)
    params, _ = layer.init(jax.random.key(0), (3,))
    x = jnp.array([[0, 1, 2], [3, 4, bad]])
    with pytest.raises(ValueError, match=rf"x holds index {value} at position {where}.*\[0, 6\)"):
        layer.forward(params, x)


def test_under_jit_indices_are_clamped_and_backward_stays_the_vjp():
    """Traced x cannot be checked: forward and backward both use the clamped rows."""
    layer = Embedding(4, 2, dtype=F64)
    params, _ = layer.init(jax.random.key(0), (3,))
    x = jnp.array([[0, 9, -2], [3, 3, 1]])  # 9 → row 3, −2 → row 0 (no wrap-around)
    f = jax.jit(lambda W, x: layer.forward({"W": W}, x)[0])
    y = f(params["W"], x)
    assert jnp.array_equal(y, params["W"][jnp.array([[0, 3, 0], [3, 3, 1]])])

    dy = jax.random.normal(jax.random.key(1), y.shape, F64)
    _, vjp = jax.vjp(lambda W: f(W, x), params["W"])
    (want,) = vjp(dy)
    _, cache = jax.jit(layer.forward)(params, x)
    grads, _ = jax.jit(layer.backward)(params, cache, dy)
    assert jnp.allclose(grads["W"], want, rtol=1e-15, atol=0)
    assert jnp.allclose(grads["W"][3], dy[0, 1] + dy[1, 0] + dy[1, 1], rtol=1e-15)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Embedding: num must be a positive int, got 0"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="Embedding: features must be a positive int, got 2.0"):
        Embedding(4, 2.0)
    layer = Embedding(4, 2, dtype=F64)
    params, _ = layer.init(jax.random.key(0), ())
    with pytest.raises(ValueError, match="x must be an integer array of indices, got dtype float"):
        layer.forward(params, jnp.array([0.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"x must have shape \(m, …\), got shape \(\); x is a batch"
    ):
        layer.forward(params, jnp.array(1))


def test_init_scale_and_penalised_name():
    params, out_shape = Embedding(1000, 16, dtype=F64).init(jax.random.key(0), ())
    assert out_shape == (16,) and list(params) == ["W"]  # W…: the L2 penalty applies
    assert abs(float(jnp.mean(jnp.sum(params["W"] ** 2, axis=1))) - 1.0) < 0.05  # ‖row‖² ≈ 1
