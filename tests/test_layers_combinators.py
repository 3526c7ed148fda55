"""Sequential (the chained δ recursion, eq. L5) and Residual (eq. L6)."""

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers.base import Layer

F64 = jnp.float64


def _mlp():
    return layers.Sequential(
        layers.Dense(5, dtype=F64),
        layers.Tanh(),
        layers.Residual(layers.Sequential(layers.Dense(5, dtype=F64), layers.Softplus())),
        layers.Dense(3, dtype=F64),
    )


def test_sequential_backward_is_the_chained_delta_recursion():
    model = _mlp()
    params, shape = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (6, 4), F64)
    report = layers.check_layer(model, params, x)
    assert report.ok, report
    assert shape == (3,) and len(params) == 4
    assert report.failed == []


def test_residual_adds_the_identity_path():
    inner = layers.Dense(4, dtype=F64)
    res = layers.Residual(inner)
    params, _ = res.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (2, 4), F64)
    dy = jnp.ones((2, 4), F64)
    y, cache = res.forward(params, x)
    assert jnp.allclose(y, x + inner.forward(params, x)[0], rtol=0, atol=0)
    _, dx = res.backward(params, cache, dy)
    _, dx_inner = inner.backward(params, cache, dy)
    assert jnp.array_equal(dx, dy + dx_inner)


def test_residual_refuses_a_shape_change():
    with pytest.raises(ValueError, match=r"Dense\(3\) maps shape \(4,\) to \(3,\)"):
        layers.Residual(layers.Dense(3)).init(jax.random.key(0), (4,))


def test_sequential_rejects_non_layers_and_emptiness():
    with pytest.raises(ValueError, match="needs at least one layer"):
        layers.Sequential()
    with pytest.raises(
        TypeError, match="argument 1 must be a jaxbp.layers.Layer, got builtin_function_or_method"
    ):
        layers.Sequential(layers.Relu(), max)


def test_sequential_splits_its_key_among_layers():
    seen = []

    def recorder():
        def forward(params, x, *, key=None, train=False):
            seen.append(key)
            return x, None

        return Layer(lambda k, s: ((), s), forward, lambda p, c, dy: ((), dy))

    model = layers.Sequential(recorder(), recorder())
    model.forward(((), ()), jnp.ones((1, 2)), key=jax.random.key(0))
    assert len(seen) == 2 and not jnp.array_equal(
        jax.random.key_data(seen[0]), jax.random.key_data(seen[1])
    )
    seen.clear()
    model.forward(((), ()), jnp.ones((1, 2)))
    assert seen == [None, None]


def test_update_state_reaches_every_layer():
    def counting():
        return Layer(
            lambda k, s: ({"n": jnp.zeros(())}, s),
            lambda p, x, *, key=None, train=False: (x, 1.0),
            lambda p, c, dy: ({"n": jnp.zeros(())}, dy),
            lambda p, c: {"n": p["n"] + c},
        )

    model = layers.Sequential(counting(), layers.Residual(counting()))
    params, _ = model.init(jax.random.key(0), (2,))
    _, cache = model.forward(params, jnp.ones((1, 2)))
    new = model.update_state(params, cache)
    assert [float(p["n"]) for p in new] == [1.0, 1.0]
