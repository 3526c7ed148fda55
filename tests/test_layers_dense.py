"""Dense layer (eqs. L1–L3): the hand-derived backward against jax.vjp and finite differences."""

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers

F64 = jnp.float64


@pytest.mark.parametrize("in_shape", [(4,), (3, 4)], ids=["rows", "sequence"])
def test_dense_backward_matches_autodiff(in_shape):
    layer = layers.Dense(3, dtype=F64)
    params, out_shape = layer.init(jax.random.key(0), in_shape)
    x = jax.random.normal(jax.random.key(1), (5, *in_shape), F64)
    report = layers.check_layer(layer, params, x)
    assert report.ok, report
    assert out_shape == (*in_shape[:-1], 3)
    assert layer.forward(params, x)[0].shape == (5, *out_shape)
    worst = max(r.max_rel for r in report.rows if r.oracle == "vjp")
    assert worst < 1e-12


def test_dense_weight_gradient_is_the_accumulated_outer_product():
    """Δ = Σ_i δ_i a_iᵀ and (Θᵀ δ) row-wise — the lecture's accumulation, by hand (eq. L1)."""
    layer = layers.Dense(2, dtype=F64)
    params, _ = layer.init(jax.random.key(0), (3,))
    x = jnp.arange(6.0, dtype=F64).reshape(2, 3)
    dy = jnp.array([[1.0, -2.0], [0.5, 3.0]], F64)
    _, cache = layer.forward(params, x)
    grads, dx = layer.backward(params, cache, dy)
    outer = sum(jnp.outer(dy[i], x[i]) for i in range(2))
    assert jnp.array_equal(grads["W"], outer)
    assert jnp.array_equal(grads["b"], dy[0] + dy[1])
    assert jnp.allclose(dx, jnp.stack([params["W"].T @ dy[i] for i in range(2)]), rtol=1e-15)


def test_dense_rejects_bad_arguments():
    with pytest.raises(ValueError, match="features must be a positive int, got 0"):
        layers.Dense(0)
    with pytest.raises(ValueError, match="scheme must be one of he, glorot, got 'ng'"):
        layers.Dense(3, scheme="ng")
    with pytest.raises(ValueError, match=r"Dense: in_shape needs a feature axis, got \(\)"):
        layers.Dense(3).init(jax.random.key(0), ())
