"""Output layers: softmax and its Jacobian (S1–S2), costs from logits (C1–C3), δ^(L) = ŷ − y (C4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import max_rel_error, rtol_for
from jaxbp.losses import OUTPUTS, get_output, log_softmax, softmax, softmax_jacobian


def _targets(name, key, shape, dtype):
    if name == "softmax_ce":
        return jax.nn.one_hot(
            jax.random.randint(key, shape[:1], 0, shape[1]), shape[1], dtype=dtype
        )
    if name == "sigmoid_bce":
        return jax.random.bernoulli(key, 0.4, shape).astype(dtype)
    return jax.random.normal(key, shape, dtype)


def test_softmax_is_a_distribution():
    z = jax.random.normal(jax.random.key(0), (5, 7)) * 10
    p = softmax(z)
    np.testing.assert_allclose(np.sum(p, axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p, jax.nn.softmax(z), rtol=1e-14)


def test_softmax_jacobian_matches_jacrev():
    z = jax.random.normal(jax.random.key(1), (6,), jnp.float64)
    assert max_rel_error(softmax_jacobian(z), jax.jacrev(softmax)(z)) <= 1e-14


def test_softmax_jacobian_batched_cases():
    z = jax.random.normal(jax.random.key(2), (3, 4), jnp.float64)
    J = softmax_jacobian(z)
    p = softmax(z)
    assert J.shape == (3, 4, 4)
    # The lecture's two cases: ŷ_i(1 − ŷ_i) on the diagonal, −ŷ_i ŷ_j off it.
    np.testing.assert_allclose(jnp.diagonal(J, axis1=1, axis2=2), p * (1 - p), rtol=1e-14)
    np.testing.assert_allclose(J[:, 0, 1], -p[:, 0] * p[:, 1], rtol=1e-14)
    np.testing.assert_allclose(J, jax.vmap(jax.jacrev(softmax))(z), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_output_error_is_y_hat_minus_y(name):
    """∂cost/∂z^(L) by jax.grad equals the lecture's δ^(L) = ŷ − y."""
    out = get_output(name)
    z = jax.random.normal(jax.random.key(3), (4, 5), jnp.float64) * 3
    y = _targets(name, jax.random.key(4), (4, 5), jnp.float64)
    auto = jax.grad(lambda z: jnp.sum(out.cost(z, y)))(z)
    assert max_rel_error(out.delta(out.link(z), y), auto) <= 1e-14


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_target_grad_matches_autodiff(name):
    out = get_output(name)
    z = jax.random.normal(jax.random.key(5), (4, 5), jnp.float64)
    y = _targets(name, jax.random.key(6), (4, 5), jnp.float64)
    auto = jax.grad(lambda y: jnp.sum(out.cost(z, y)))(y)
    assert max_rel_error(out.target_grad(z, y), auto) <= 1e-14


def test_costs_equal_the_lecture_formulas():
    z = jax.random.normal(jax.random.key(7), (6, 4), jnp.float64)
    y_cat = _targets("softmax_ce", jax.random.key(8), (6, 4), jnp.float64)
    y_bin = _targets("sigmoid_bce", jax.random.key(9), (6, 4), jnp.float64)
    p, s = np.asarray(jax.nn.softmax(z)), np.asarray(jax.nn.sigmoid(z))
    np.testing.assert_allclose(
        get_output("softmax_ce").cost(z, y_cat), -np.sum(y_cat * np.log(p), axis=1), rtol=1e-13
    )
    np.testing.assert_allclose(
        get_output("sigmoid_bce").cost(z, y_bin),
        -np.sum(y_bin * np.log(s) + (1 - y_bin) * np.log(1 - s), axis=1),
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        get_output("identity_mse").cost(z, y_bin),
        0.5 * np.sum((z - y_bin) ** 2, axis=1),
        rtol=1e-14,
    )


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_stable_at_huge_logits_float32(name):
    out = get_output(name)
    z = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], jnp.float32)
    y = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], jnp.float32)
    cost = out.cost(z, y)
    grad = jax.grad(lambda z: jnp.sum(out.cost(z, y)))(z)
    assert np.all(np.isfinite(cost)) and np.all(np.isfinite(grad))
    assert np.all(np.isfinite(out.delta(out.link(z), y)))
    # Row 0 puts its target on a logit 2e4 below the top one: the cost is that margin, not inf
    # (sigmoid_bce adds softplus(0) = log 2 for the third, zero, logit).
    expected = {
        "softmax_ce": 2e4,
        "sigmoid_bce": 2e4 + np.log(2.0),
        "identity_mse": 1e8 + 1e4 + 0.5,
    }
    np.testing.assert_allclose(cost[0], expected[name], rtol=rtol_for(jnp.float32))


def test_log_softmax_matches_jax():
    z = jnp.array([[1e4, 0.0, -1e4]], jnp.float64)
    np.testing.assert_allclose(log_softmax(z), jax.nn.log_softmax(z))


def test_unknown_output_lists_valid():
    with pytest.raises(ValueError, match="output: unknown name 'hinge'.*softmax_ce"):
        get_output("hinge")


def test_public_reexports():
    assert jaxbp.softmax is softmax and jaxbp.softmax_jacobian is softmax_jacobian
