"""Reshape (eq. L4): rows (m, n) into examples (m, *shape), δ reshaped back; input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import layers

F64 = jnp.float64


def x_of(shape):
    return jax.random.normal(jax.random.key(1), shape, F64)


@pytest.mark.parametrize(
    ("in_shape", "shape"),
    [((64,), (8, 8, 1)), ((2, 3, 2), (12,))],
    ids=["digits", "image-to-rows"],
)
def test_reshape_check_layer_passes(in_shape, shape):
    layer = layers.Reshape(shape)
    params, out_shape = layer.init(jax.random.key(0), in_shape)
    want = (shape,) if isinstance(shape, int) else shape
    assert params == () and out_shape == want
    x = x_of((3, *in_shape))
    y, _ = layer.forward(params, x)
    assert y.shape == (3, *want)
    assert jnp.array_equal(y, x.reshape(3, *want))  # row-major, values unmoved
    # every transform (eager, vmap) once, on digits' rows; the rule's own rows elsewhere
    transforms = ("eager", "vmap") if in_shape == (64,) else ()
    report = layers.check_layer(layer, params, x, n_pairs=2, transforms=transforms)
    assert report.ok, report


def test_reshape_backward_is_dy_reshaped_back():
    layer = layers.Reshape((2, 3))
    x = x_of((4, 6))
    _, cache = layer.forward((), x)
    dy = jnp.arange(24.0, dtype=F64).reshape(4, 2, 3)
    grads, dx = layer.backward((), cache, dy)
    assert grads == ()
    assert dx.shape == x.shape and jnp.array_equal(dx, dy.reshape(4, 6))


@pytest.mark.parametrize(
    ("in_shape", "shape"), [((12,), (3, 4)), ((6,), 6)], ids=["rows-to-matrix", "int"]
)
def test_reshape_forward_and_shapes(in_shape, shape):
    layer = layers.Reshape(shape)
    want = (shape,) if isinstance(shape, int) else shape
    assert layer.init(jax.random.key(0), in_shape) == ((), want)
    x = x_of((3, *in_shape))
    assert jnp.array_equal(layer.forward((), x)[0], x.reshape(3, *want))


def test_reshape_in_a_network_on_digit_rows():
    """Rows of 64 features → 8×8×1 images → pool → Dense: the hand backward equals jax.vjp."""
    net = layers.Sequential(
        layers.Reshape((8, 8, 1)), layers.AvgPool2D(2), layers.Flatten(), layers.Dense(3, dtype=F64)
    )
    params, out_shape = net.init(jax.random.key(0), (64,))
    assert out_shape == (3,)
    x, dy = x_of((2, 64)), jax.random.normal(jax.random.key(2), (2, 3), F64)
    y, cache = net.forward(params, x)
    grads, dx = net.backward(params, cache, dy)
    y_ref, vjp = jax.vjp(lambda p, x: net.forward(p, x)[0], params, x)
    grads_ref, dx_ref = vjp(dy)
    assert jnp.array_equal(y, y_ref)
    assert jnp.allclose(dx, dx_ref, rtol=1e-13, atol=1e-15)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
        assert jnp.allclose(g, r, rtol=1e-13, atol=1e-15)


def test_reshape_is_jit_and_vmap_safe():
    layer = layers.Reshape((2, 2))
    x = x_of((3, 4))

    @jax.jit
    def step(x, dy):
        y, cache = layer.forward((), x)
        return y, layer.backward((), cache, dy)[1]

    y, dx = step(x, jnp.ones((3, 2, 2), F64))
    assert y.shape == (3, 2, 2) and dx.shape == (3, 4)


@pytest.mark.parametrize("shape", [(), (8, 0), (8, -1), "64", (2.0, 3), None, (True, 2)], ids=repr)
def test_reshape_rejects_a_bad_shape(shape):
    with pytest.raises(ValueError, match=r"Reshape: shape must be a tuple of positive ints, got"):
        layers.Reshape(shape)


def test_reshape_takes_numpy_ints_and_names_its_shape():
    layer = layers.Reshape(np.array([8, 8, 1]))
    assert layer.name == "Reshape((8, 8, 1))"
    assert layers.Reshape([3]).name == "Reshape((3,))"


def test_reshape_init_checks_the_number_of_values():
    with pytest.raises(
        ValueError,
        match=r"Reshape\(\(8, 8, 1\)\): in_shape \(63,\) has 63 values per example, shape "
        r"\(8, 8, 1\) needs 64",
    ):
        layers.Reshape((8, 8, 1)).init(jax.random.key(0), (63,))
    with pytest.raises(ValueError, match=r"Reshape\(\(4,\)\): in_shape axes must be positive"):
        layers.Reshape((4,)).init(jax.random.key(0), (0, 4))


def test_reshape_forward_names_x_the_layer_and_both_shapes():
    layer = layers.Reshape((8, 8, 1))
    with pytest.raises(
        ValueError,
        match=r"Reshape\(\(8, 8, 1\)\): x must have 64 values per example .*shape \(8, 8, 1\)\), "
        r"got shape \(5, 63\)",
    ):
        layer.forward((), jnp.zeros((5, 63)))
    with pytest.raises(
        ValueError, match=r"Reshape\(\(8, 8, 1\)\): x must have shape \(m, …\), got "
    ):
        layer.forward((), jnp.zeros(()))
    with pytest.raises(TypeError, match=r"Reshape\(\(8, 8, 1\)\): x must be an array, got list"):
        layer.forward((), [[0.0] * 64])


def test_reshape_backward_names_dy_and_both_shapes():
    layer = layers.Reshape((2, 3))
    _, cache = layer.forward((), jnp.zeros((4, 6)))
    with pytest.raises(
        ValueError,
        match=r"Reshape\(\(2, 3\)\): dy must have shape \(4, 2, 3\), got shape \(4, 6\); dy = ∂E/∂y",
    ):
        layer.backward((), cache, jnp.zeros((4, 6)))
