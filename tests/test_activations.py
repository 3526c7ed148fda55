"""f′ hand-derived vs jax.grad(f), for every activation (eqs. A1–A7)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import max_rel_error, rtol_for
from jaxbp import activations
from jaxbp.activations import ACTIVATIONS, KINKED, get_activation, resolve

GRID = jnp.concatenate(
    [jnp.linspace(-8.0, 8.0, 401, dtype=jnp.float64), jnp.array([0.0, -0.0, 30.0, -30.0])]
)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_prime_matches_autodiff(name, dtype):
    act = get_activation(name)
    z = GRID.astype(dtype)
    a = act.f(z)
    hand = act.f_prime(z, a)
    auto = jax.vmap(jax.grad(act.f))(z)
    assert hand.dtype == z.dtype
    assert max_rel_error(hand, auto) <= rtol_for(dtype)


@pytest.mark.parametrize("name", sorted(KINKED))
def test_kink_convention_matches_jax_grad(name):
    act = get_activation(name)
    z = jnp.zeros((), jnp.float64)
    assert float(act.f_prime(z, act.f(z))) == float(jax.grad(act.f)(z))


def test_sigmoid_prime_at_zero_is_quarter():
    z = jnp.zeros(3)
    assert np.all(np.asarray(activations.sigmoid_prime(z, activations.sigmoid(z))) == 0.25)


def test_sigmoid_prime_uses_cached_activation():
    # f′ = a(1 − a) is computed from a alone: z is ignored.
    a = jnp.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(activations.sigmoid_prime(jnp.full(3, jnp.nan), a), a * (1 - a))


def test_elu_large_negative_is_finite():
    z = jnp.array([-1e4, 1e4], jnp.float32)
    a = activations.elu(z)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(jax.vmap(jax.grad(activations.elu))(z)))


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="activation: unknown name 'swish'.*sigmoid.*identity"):
        get_activation("swish")


def test_resolve_one_name_or_one_per_layer():
    assert [a.name for a in resolve("tanh", 3)] == ["tanh"] * 3
    assert [a.name for a in resolve(("relu", "elu"), 2)] == ["relu", "elu"]
    assert resolve("relu", 0) == ()
    with pytest.raises(ValueError, match="got 1 names.*for 2 hidden layer"):
        resolve(("relu",), 2)
