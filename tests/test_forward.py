"""Forward propagation (F1–F3) against the lecture's bias-column form z = Θ [1; a]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.activations import get_activation

KEY = jax.random.key(0)


def _lecture_forward(thetas, x, activations, link):
    """Column-vector form of the lecture, one example at a time, in numpy."""
    outs = []
    for row in np.asarray(x):
        a = row
        for l, theta in enumerate(thetas):
            z = np.asarray(theta) @ np.concatenate([[1.0], a])  # z^(l+1) = Θ^(l) [1; a^(l)]
            a = np.asarray(
                activations[l](jnp.asarray(z)) if l < len(activations) else link(jnp.asarray(z))
            )
        outs.append(a)
    return np.stack(outs)


@pytest.mark.parametrize("activation", ["sigmoid", ("relu", "tanh")])
@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
def test_forward_matches_lecture(activation, output):
    params = jaxbp.init_params(KEY, [4, 6, 5, 3], dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (7, 4), jnp.float64)
    cache = jaxbp.forward(params, x, activation=activation, output=output)
    names = [activation] * 2 if isinstance(activation, str) else list(activation)
    fs = [get_activation(n).f for n in names]
    expected = _lecture_forward(jaxbp.to_theta(params), x, fs, jaxbp.get_output(output).link)
    np.testing.assert_allclose(cache.a[-1], expected, rtol=1e-13, atol=1e-15)
    assert len(cache.z) == 3 and len(cache.a) == 4
    np.testing.assert_array_equal(cache.a[0], x)
    np.testing.assert_allclose(
        jaxbp.predict(params, x, activation=activation, output=output), cache.a[-1]
    )


def test_predict_is_a_distribution_and_accepts_one_example():
    params = jaxbp.init_params(KEY, [4, 3], dtype=jnp.float64)  # softmax regression
    x = jax.random.normal(KEY, (5, 4), jnp.float64)
    p = jaxbp.predict(params, x)
    np.testing.assert_allclose(np.sum(p, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(jaxbp.predict(params, x[2]), p[2], rtol=1e-15)


def test_predict_under_jit_and_vmap():
    params = jaxbp.init_params(KEY, [4, 5, 3], dtype=jnp.float64)
    x = jax.random.normal(KEY, (6, 4), jnp.float64)
    f = jax.jit(lambda p, x: jaxbp.predict(p, x, activation="tanh"))
    np.testing.assert_allclose(
        f(params, x), jaxbp.predict(params, x, activation="tanh"), rtol=1e-15
    )
    per_row = jax.vmap(lambda r: jaxbp.predict(params, r, activation="tanh"))(x)
    np.testing.assert_allclose(per_row, jaxbp.predict(params, x, activation="tanh"), rtol=1e-14)


def test_forward_casts_inputs_to_parameter_dtype():
    params = jaxbp.init_params(KEY, [4, 3], dtype=jnp.float32)
    cache = jaxbp.forward(params, jnp.ones((2, 4), jnp.float64))
    assert cache.a[0].dtype == jnp.float32 and cache.a[-1].dtype == jnp.float32
