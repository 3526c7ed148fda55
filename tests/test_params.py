"""Parameter pytree: initialisation with symmetry breaking, course Θ layout, flat unrolling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.params import Layer, check_params, from_flat, from_theta, to_flat, to_theta

KEY = jax.random.key(0)


@pytest.mark.parametrize("scheme", ["ng", "glorot", "he"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_shapes_and_dtype(scheme, dtype):
    params = jaxbp.init_params(KEY, [7, 5, 3], scheme=scheme, dtype=dtype)
    assert isinstance(params, tuple) and all(isinstance(p, Layer) for p in params)
    assert [p.W.shape for p in params] == [(5, 7), (3, 5)]
    assert [p.b.shape for p in params] == [(5,), (3,)]
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert paths == ["[0].W", "[0].b", "[1].W", "[1].b"]


def test_ng_is_uniform_within_epsilon():
    params = jaxbp.init_params(KEY, [400, 25, 10], dtype=jnp.float64)
    for p, (n_in, n_out) in zip(params, [(400, 25), (25, 10)], strict=True):
        eps = math.sqrt(6) / math.sqrt(n_in + n_out)
        assert float(jnp.max(jnp.abs(p.W))) <= eps and float(jnp.max(jnp.abs(p.b))) <= eps
    # Uniform on [−ε, ε] has variance ε²/3.
    eps0 = math.sqrt(6) / math.sqrt(425)
    assert abs(float(jnp.var(params[0].W)) - eps0**2 / 3) < 0.05 * eps0**2 / 3


def test_he_and_glorot_statistics():
    he = jaxbp.init_params(KEY, [1000, 500], scheme="he", dtype=jnp.float64)[0]
    assert abs(float(jnp.std(he.W)) - math.sqrt(2 / 1000)) < 0.01 * math.sqrt(2 / 1000)
    assert not np.any(np.asarray(he.b))
    gl = jaxbp.init_params(KEY, [1000, 500], scheme="glorot", dtype=jnp.float64)[0]
    assert float(jnp.max(jnp.abs(gl.W))) <= math.sqrt(6 / 1500)


def test_init_breaks_symmetry_and_depends_on_key():
    params = jaxbp.init_params(KEY, [6, 8, 3])
    W = np.asarray(params[0].W)
    assert len({tuple(r) for r in W}) == W.shape[0]  # no two hidden units alike
    same = jaxbp.init_params(KEY, [6, 8, 3])
    other = jaxbp.init_params(jax.random.key(1), [6, 8, 3])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True)
    )
    assert not np.array_equal(params[0].W, other[0].W)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(sizes=[3]), ValueError, "sizes: need at least"),
        (dict(sizes=[3, 0]), ValueError, "sizes: entry 1 must be a positive integer, got 0"),
        (dict(sizes=[3, 2.5]), ValueError, "entry 1"),
        (
            dict(sizes=[3, 2], scheme="xavier"),
            ValueError,
            "scheme: unknown 'xavier'.*ng, glorot, he",
        ),
        (dict(sizes=[3, 2], dtype=jnp.int32), TypeError, "dtype: .*int32"),
    ],
)
def test_init_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        jaxbp.init_params(KEY, **kwargs)


def test_theta_round_trip_and_layout():
    params = jaxbp.init_params(KEY, [4, 3, 2], dtype=jnp.float64)
    thetas = to_theta(params)
    assert [t.shape for t in thetas] == [(3, 5), (2, 4)]
    np.testing.assert_array_equal(thetas[0][:, 0], params[0].b)  # bias column first
    np.testing.assert_array_equal(thetas[0][:, 1:], params[0].W)
    back = from_theta(thetas)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True)
    )


def test_flat_round_trip_and_column_major_order():
    params = from_theta(
        [jnp.array([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]), jnp.array([[7.0, 8.0, 9.0]])]
    )
    # Octave: [Theta1(:); Theta2(:)] walks each matrix column by column.
    np.testing.assert_array_equal(to_flat(params), np.arange(1.0, 10.0))
    back = from_flat(to_flat(params), [2, 2, 1])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True)
    )


def test_flat_round_trip_random():
    params = jaxbp.init_params(KEY, [5, 4, 4, 3], dtype=jnp.float64)
    flat = to_flat(params)
    assert flat.shape == (4 * 6 + 4 * 5 + 3 * 5,)
    back = from_flat(flat, [5, 4, 4, 3])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True)
    )


def test_to_theta_works_on_grads():
    params = jaxbp.init_params(KEY, [4, 3, 2], dtype=jnp.float64)
    x = jax.random.normal(KEY, (5, 4))
    _, grads = jaxbp.value_and_grad(params, x, jnp.array([0, 1, 1, 0, 1]))
    assert [t.shape for t in to_theta(grads)] == [(3, 5), (2, 4)]


def test_layers_that_do_not_chain_name_the_layer():
    bad = (Layer(jnp.zeros((3, 4)), jnp.zeros(3)), Layer(jnp.zeros((2, 5)), jnp.zeros(2)))
    with pytest.raises(
        ValueError, match=r"layer 1 W has shape \(2, 5\).*expects 5 inputs.*layer 0 outputs 3"
    ):
        check_params(bad)
    with pytest.raises(ValueError, match=r"layer 0 b must have shape \(3,\)"):
        check_params((Layer(jnp.zeros((3, 4)), jnp.zeros(4)),))
    with pytest.raises(TypeError, match="params: expected a non-empty tuple"):
        check_params(())


def test_from_flat_bad_length_and_from_theta_bad_shape():
    with pytest.raises(
        ValueError, match=r"flat: sizes \(2, 2, 1\) need a vector of length 9, got shape \(8,\)"
    ):
        from_flat(jnp.zeros(8), [2, 2, 1])
    with pytest.raises(ValueError, match=r"thetas: entry 0 must be 2-D"):
        from_theta([jnp.zeros(3)])


def test_course_ex4_weights(shared_data):
    """The course's trained 400-25-10 weights load into the pytree and round-trip exactly."""
    from scipy.io import loadmat

    mat = loadmat(shared_data / "ex4" / "ex4weights.mat")
    params = from_theta([jnp.asarray(mat["Theta1"]), jnp.asarray(mat["Theta2"])])
    assert jaxbp.layer_sizes(params) == (400, 25, 10)
    flat = to_flat(params)
    assert flat.shape == (10285,)
    np.testing.assert_array_equal(flat[:10], mat["Theta1"].ravel(order="F")[:10])
    back = to_theta(from_flat(flat, [400, 25, 10]))
    np.testing.assert_array_equal(back[1], mat["Theta2"])
