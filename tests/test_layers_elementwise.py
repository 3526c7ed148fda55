"""Activation layers: δ_z = δ_a ⊙ f′(z), the second half of the δ recursion (eq. B2)."""

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.activations import ACTIVATIONS


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_layer_backward_matches_autodiff(name):
    layer = layers.Elementwise(name)
    params, shape = layer.init(jax.random.key(0), (2, 3))
    # |z| ≥ 0.1: finite differences never straddle relu's kink
    z = jax.random.normal(jax.random.key(1), (3, 2, 3), jnp.float64)
    z = jnp.where(jnp.abs(z) < 0.1, 0.5, z)
    report = layers.check_layer(layer, params, z)
    assert report.ok, report
    assert params == () and shape == (2, 3)


def test_named_constructors_are_the_registry_activations():
    made = [layers.Sigmoid(), layers.Tanh(), layers.Relu(), layers.LeakyRelu()]
    made += [layers.Softplus(), layers.Elu(), layers.Identity()]
    assert sorted(layer.name for layer in made) == sorted(ACTIVATIONS)


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown name 'swish'; valid names are sigmoid"):
        layers.Elementwise("swish")
