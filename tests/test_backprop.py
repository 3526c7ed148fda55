"""The δ recursion (B1–B4) against jax.grad: every activation × output × depth × transformation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import RTOL_F64, assert_tree_close, rtol_for

HIDDEN = (6, 4, 5, 3)
N_IN, K, M = 5, 3, 8


def make_problem(depth, output, dtype=jnp.float64, seed=0, m=M):
    """A (params, x, y) triple: depth hidden layers (0 = softmax/logistic regression)."""
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    sizes = [N_IN, *HIDDEN[:depth], K]
    params = jaxbp.init_params(k_p, sizes, dtype=dtype)
    x = 2 * jax.random.normal(k_x, (m, N_IN), dtype)
    if output == "softmax_ce":
        y = jax.random.randint(k_y, (m,), 0, K)
    elif output == "sigmoid_bce":
        y = jax.random.bernoulli(k_y, 0.5, (m, K)).astype(dtype)
    else:
        y = jax.random.normal(k_y, (m, K), dtype)
    return params, x, y


def _transformed(fn, transform, **kw):
    f = functools.partial(fn, **kw)
    if transform == "eager":
        return f
    if transform == "jit":
        return jax.jit(f)
    # vmap: two independent batches at once.
    vf = jax.vmap(f, in_axes=(None, 0, 0))
    return lambda p, x, y: vf(p, jnp.stack([x, x[::-1]]), jnp.stack([y, y[::-1]]))


@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
@pytest.mark.parametrize(
    "depth",
    [0, 1, 2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
@pytest.mark.parametrize("activation", sorted(jaxbp.ACTIVATIONS))
def test_hand_equals_autodiff_float64(activation, output, depth, transform):
    params, x, y = make_problem(depth, output)
    kw = dict(activation=activation, output=output, l2=0.7)
    J, grads = _transformed(jaxbp.value_and_grad, transform, **kw)(params, x, y)
    J_ad, grads_ad = _transformed(jaxbp.autodiff_value_and_grad, transform, **kw)(params, x, y)
    assert np.all(np.isfinite(J))
    np.testing.assert_allclose(J, J_ad, rtol=RTOL_F64)
    assert_tree_close(grads, grads_ad, RTOL_F64)


@pytest.mark.parametrize(
    "activation", ["sigmoid", "relu", "tanh", ("elu", "softplus", "leaky_relu")]
)
@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
def test_hand_equals_autodiff_float32(activation, output):
    params, x, y = make_problem(3, output, dtype=jnp.float32, seed=1)
    kw = dict(activation=activation, output=output, l2=0.1)
    J, grads = jaxbp.value_and_grad(params, x, y, **kw)
    J_ad, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, **kw)
    assert J.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    np.testing.assert_allclose(J, J_ad, rtol=rtol_for(jnp.float32))
    assert_tree_close(grads, grads_ad, rtol_for(jnp.float32))


def test_mixed_activations_per_layer():
    params, x, y = make_problem(4, "softmax_ce", seed=2)
    kw = dict(activation=["relu", "tanh", "elu", "sigmoid"], output="softmax_ce")
    _, grads = jaxbp.value_and_grad(params, x, y, **kw)
    _, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, **kw)
    assert_tree_close(grads, grads_ad, RTOL_F64)


def test_one_hidden_unit_and_batch_of_one():
    params = jaxbp.init_params(jax.random.key(3), [3, 1, 2], dtype=jnp.float64)
    x = jnp.array([[0.5, -1.0, 2.0]])
    y = jnp.array([1])
    _, grads = jaxbp.value_and_grad(params, x, y, activation="tanh", l2=0.3)
    _, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, activation="tanh", l2=0.3)
    assert_tree_close(grads, grads_ad, RTOL_F64)


def test_integer_labels_equal_one_hot():
    params, x, y = make_problem(2, "softmax_ce")
    J1, g1 = jaxbp.value_and_grad(params, x, y)
    J2, g2 = jaxbp.value_and_grad(params, x, jax.nn.one_hot(y, K, dtype=jnp.float64))
    np.testing.assert_array_equal(J1, J2)
    assert_tree_close(g1, g2, 0.0)


def test_l2_never_touches_biases():
    """The lecture's "if j = 0" rule: D = (1/m)Δ for the bias column, (1/m)(Δ + λΘ) elsewhere."""
    params, x, y = make_problem(2, "softmax_ce")
    lam = 3.0
    J0, g0 = jaxbp.value_and_grad(params, x, y, l2=0.0)
    J1, g1 = jaxbp.value_and_grad(params, x, y, l2=lam)
    for p, a, b in zip(params, g0, g1, strict=True):
        np.testing.assert_array_equal(a.b, b.b)
        np.testing.assert_allclose(b.W - a.W, lam / M * p.W, rtol=1e-12)
    penalty = lam / (2 * M) * sum(float(jnp.sum(p.W**2)) for p in params)
    np.testing.assert_allclose(J1 - J0, penalty, rtol=1e-12)


def test_output_error_is_gradient_wrt_logits():
    """∂J/∂z^(L) by jax.grad (a zero probe added to the logits) equals (ŷ − y)/m."""
    params, x, y = make_problem(2, "softmax_ce")
    y1 = jax.nn.one_hot(y, K, dtype=jnp.float64)

    def J_of_probe(probe):
        cache = jaxbp.forward(params, x, activation="sigmoid")
        return jnp.mean(jaxbp.get_output("softmax_ce").cost(cache.z[-1] + probe, y1))

    auto = jax.grad(J_of_probe)(jnp.zeros((M, K)))
    y_hat = jaxbp.predict(params, x)
    np.testing.assert_allclose((y_hat - y1) / M, auto, rtol=1e-13, atol=1e-17)


def test_backward_deltas_equal_autodiff_wrt_each_z():
    """Every δ^(l) of the recursion equals ∂J/∂z^(l), obtained by autodiff through zero probes."""
    params, x, y = make_problem(3, "sigmoid_bce")
    act = "tanh"

    def J_of_probes(probes):
        a, L = x, len(params)
        for l, layer in enumerate(params):
            z = a @ layer.W.T + layer.b + probes[l]
            a = jaxbp.get_activation(act).f(z) if l < L - 1 else z
        return jnp.mean(jaxbp.get_output("sigmoid_bce").cost(a, y))

    probes = [jnp.zeros((M, layer.W.shape[0])) for layer in params]
    auto = jax.grad(J_of_probes)(probes)
    cache = jaxbp.forward(params, x, activation=act, output="sigmoid_bce")
    delta_out = (cache.a[-1] - y) / M
    result = jaxbp.backward(params, cache, delta_out, activation=act)
    for l in range(len(params)):
        np.testing.assert_allclose(result.deltas[l], auto[l], rtol=1e-12, atol=1e-17)


def test_symmetry_all_equal_weights_stay_equal():
    """With all-equal initial weights, hidden units stay identical under gradient descent; with
    the ng initialisation (symmetry breaking) they do not."""
    sizes = [4, 5, 3]
    x = jax.random.normal(jax.random.key(4), (20, 4), jnp.float64)
    y = jax.random.randint(jax.random.key(5), (20,), 0, 3)

    def descend(params):
        for _ in range(10):
            _, g = jaxbp.value_and_grad(params, x, y)
            params = jax.tree.map(lambda p, g: p - 0.5 * g, params, g)
        return params

    equal = tuple(
        jaxbp.Layer(jnp.full((o, i), 0.1), jnp.full((o,), 0.1))
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    )
    trained = descend(equal)
    W = np.asarray(trained[0].W)
    assert not np.allclose(W, 0.1)  # it did move
    np.testing.assert_allclose(W, np.broadcast_to(W[0], W.shape), rtol=1e-12)  # all rows alike
    broken = descend(jaxbp.init_params(jax.random.key(6), sizes, dtype=jnp.float64))
    Wb = np.asarray(broken[0].W)
    assert np.min(np.linalg.norm(Wb[:, None] - Wb[None], axis=-1) + np.eye(5)) > 1e-3


def test_input_delta_is_input_gradient():
    params, x, y = make_problem(2, "identity_mse")
    cache = jaxbp.forward(params, x, activation="softplus", output="identity_mse")
    result = jaxbp.backward(params, cache, (cache.a[-1] - y) / M, activation="softplus")
    auto = jax.grad(
        lambda x: jaxbp.cost(params, x, y, activation="softplus", output="identity_mse")
    )(x)
    np.testing.assert_allclose(result.input_delta, auto, rtol=1e-12, atol=1e-17)


def test_value_and_grad_accepts_list_of_pairs():
    params, x, y = make_problem(1, "softmax_ce")
    as_lists = [list(layer) for layer in params]
    J, g = jaxbp.value_and_grad(as_lists, x, y)
    np.testing.assert_array_equal(J, jaxbp.value_and_grad(params, x, y)[0])


@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
def test_finite_at_logits_of_1e4_float32(output):
    """Cost and gradients stay finite when the network's logits reach ±1e4 in float32."""
    W = jnp.array([[1e4, 0.0], [-1e4, 0.0], [0.0, 1.0]], jnp.float32)
    params = (jaxbp.Layer(W, jnp.zeros(3, jnp.float32)),)
    x = jnp.array([[1.0, 0.0], [-1.0, 2.0]], jnp.float32)  # logits ±1e4
    y = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], jnp.float32)
    for fn in (jaxbp.value_and_grad, jaxbp.autodiff_value_and_grad):
        J, g = fn(params, x, y, activation="sigmoid", output=output)
        assert np.isfinite(J) and all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
    J, g = jaxbp.value_and_grad(params, x, y, output=output)
    _, g_ad = jaxbp.autodiff_value_and_grad(params, x, y, output=output)
    assert_tree_close(g, g_ad, rtol_for(jnp.float32))


@pytest.mark.parametrize(
    "m, n_in, n_out, transposed",
    [
        (64, 32, 10, True),  # a long batch, a small δ: δᵀ formed first on CPU
        (256, 784, 512, False),  # the batch shorter than the widths: as written
        (2048, 300, 300, False),  # δ over TRANSPOSE_MAX_BYTES: as written
        (1, 4, 3, False),
    ],
)
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_weight_gradient_is_the_batch_sum_of_outer_products(m, n_in, n_out, transposed, dtype):
    """Δ = δᵀ a = Σ_i δ_i a_iᵀ (eq. B3) in either layout, and the layout is the documented one."""
    from jaxbp.backprop import TRANSPOSE_MAX_BYTES, weight_gradient

    delta = jax.random.normal(jax.random.key(0), (m, n_out), dtype)
    a = jax.random.normal(jax.random.key(1), (m, n_in), dtype)
    with jax.default_matmul_precision("highest"):  # no TF32 on GPUs: a float32 product
        got = jax.jit(weight_gradient)(delta, a)
    want = np.einsum("mo,mi->oi", np.asarray(delta, np.float64), np.asarray(a, np.float64))
    scale = np.abs(np.asarray(delta, np.float64)).T @ np.abs(np.asarray(a, np.float64))
    assert got.shape == (n_out, n_in) and got.dtype == dtype
    assert np.all(
        np.abs(np.asarray(got, np.float64) - want) <= 4 * m * jnp.finfo(dtype).eps * scale
    )
    hlo = jax.jit(weight_gradient).lower(delta, a).as_text()
    fits = m * n_out * jnp.dtype(dtype).itemsize <= TRANSPOSE_MAX_BYTES
    expect_barrier = transposed and fits and jax.default_backend() == "cpu"
    assert ("optimization_barrier" in hlo) == expect_barrier


def test_weight_gradient_under_grad_jvp_and_vmap():
    """The CPU layout changes nothing for transformations: derivatives and batching of Δ = δᵀ a
    equal those of the plain product."""
    from jaxbp.backprop import weight_gradient

    delta = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
    a = jax.random.normal(jax.random.key(1), (16, 3), jnp.float64)

    def plain(d, x):
        return d.T @ x

    sq = [lambda d, x, f=f: jnp.sum(f(d, x) ** 2) for f in (weight_gradient, plain)]
    assert_tree_close(
        jax.grad(sq[0], (0, 1))(delta, a), jax.grad(sq[1], (0, 1))(delta, a), RTOL_F64
    )
    tangents = (jnp.ones_like(delta), -a)
    np.testing.assert_allclose(
        jax.jvp(sq[0], (delta, a), tangents)[1], jax.jvp(sq[1], (delta, a), tangents)[1], rtol=1e-12
    )
    batch = jnp.stack([delta, 2 * delta, -delta])
    assert_tree_close(
        jax.vmap(weight_gradient, (0, None))(batch, a),
        jax.vmap(plain, (0, None))(batch, a),
        RTOL_F64,
    )
