"""``layers.mlp``: the lecture's MLP as a Sequential of Dense and activation layers, equal to the
lecture-level API (``jaxbp.value_and_grad``, ``jaxbp.predict``, ``jaxbp.init_params``) — issue 25,
step 1 of the one-network plan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import layers
from jaxbp.activations import ACTIVATIONS
from jaxbp.losses import OUTPUTS, get_output
from jaxbp.params import SCHEMES
from jaxbp.verify import check_network, tolerance

F64 = jnp.float64
F32 = jnp.float32
SIZES = (5, 7, 4, 3)
M = 11
K = SIZES[-1]


def _problem(dtype, output, activation="relu", sizes=SIZES, seed=0):
    """Lecture params, x, y and the mlp's params converted from the same lecture params."""
    params = jaxbp.init_params(jax.random.key(seed), sizes, scheme="ng", dtype=dtype)
    x = jax.random.normal(jax.random.key(seed + 1), (M, sizes[0]), dtype)
    if output == "softmax_ce":
        y = jax.nn.one_hot(jnp.arange(M) % sizes[-1], sizes[-1], dtype=dtype)
    elif output == "sigmoid_bce":  # multi-hot targets
        y = jax.random.bernoulli(jax.random.key(seed + 2), 0.4, (M, sizes[-1])).astype(dtype)
    else:
        y = jax.random.normal(jax.random.key(seed + 2), (M, sizes[-1]), dtype)
    net = layers.mlp(sizes, activation=activation, dtype=dtype)
    return net, params, layers.mlp_params(params), x, y


def _rel(h, r) -> float:
    """max |h − r| / max |r| over a leaf (0 where both are 0)."""
    h, r = np.asarray(h, np.float64), np.asarray(r, np.float64)
    scale = np.max(np.abs(r))
    diff = np.max(np.abs(h - r))
    return float(diff / scale) if scale > 0 else float(diff)


def _worst(net, params, net_params, x, y, activation, output, l2):
    """The largest relative difference, over J, every gradient leaf, the output ŷ, between the
    mlp (layers' head) and the lecture-level API."""
    J_old, g_old = jaxbp.value_and_grad(params, x, y, activation=activation, output=output, l2=l2)
    (J_new, _), g_new = layers.value_and_grad(net, net_params, x, y, output=output, l2=l2)
    g_new = layers.lecture_params(g_new)  # back to Layer(W, b), leaf for leaf
    assert jax.tree.structure(g_new) == jax.tree.structure(g_old)
    diffs = {"J": _rel(J_new, J_old)}
    for l, (new, old) in enumerate(zip(g_new, g_old, strict=True)):
        assert new.W.dtype == old.W.dtype == x.dtype
        diffs[f"[{l}].W"] = _rel(new.W, old.W)
        diffs[f"[{l}].b"] = _rel(new.b, old.b)
    # jaxbp.predict gives ŷ = g(z^(L)) (probabilities); the mlp's forward gives the logits z^(L)
    # and layers.predict the argmax label of each row
    y_hat_old = jaxbp.predict(params, x, activation=activation, output=output)
    z, _ = net.forward(net_params, x)
    diffs["ŷ"] = _rel(get_output(output).link(z), y_hat_old)
    labels = layers.predict(net, net_params, x)
    assert jnp.array_equal(labels, jnp.argmax(y_hat_old, axis=-1))
    return diffs


@pytest.mark.parametrize("l2", [None, 0.0, 0.7], ids=["no-l2", "l2=0", "l2=0.7"])
@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_mlp_equals_the_lecture_api_in_float64(activation, output, l2):
    net, params, net_params, x, y = _problem(F64, output, activation)
    diffs = _worst(net, params, net_params, x, y, activation, output, l2)
    assert max(diffs.values()) <= 1e-12, diffs


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_a_list_of_hidden_activations_equals_the_lecture_api(output):
    sizes = (5, 7, 6, 4, 3)
    activation = ["tanh", "relu", "sigmoid"]
    net, params, net_params, x, y = _problem(F64, output, activation, sizes=sizes)
    assert [s.name for s in net.sublayers[1::2]] == activation
    diffs = _worst(net, params, net_params, x, y, activation, output, 0.7)
    assert max(diffs.values()) <= 1e-12, diffs


# Both sides compute the same expressions in float32 and differ only in the order of their sums
# (the lecture code's weight gradient sums the batch in another layout on CPU, and its δ is
# multiplied through another chain of products): a few float32 ulps per sum, growing with the
# depth. The verifier's analytic float32 tolerance, ANALYTIC_ULPS = 256 eps, covers that with room.
RTOL_F32 = tolerance.default_rtol(F32)


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_mlp_equals_the_lecture_api_in_float32(activation, output):
    net, params, net_params, x, y = _problem(F32, output, activation)
    diffs = _worst(net, params, net_params, x, y, activation, output, 0.7)
    assert max(diffs.values()) <= RTOL_F32, diffs


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_init_draws_exactly_what_init_params_draws(scheme, dtype):
    key = jax.random.key(42)
    net = layers.mlp(SIZES, scheme=scheme, dtype=dtype)
    got, out_shape = net.init(key, (SIZES[0],))
    want = layers.mlp_params(jaxbp.init_params(key, SIZES, scheme=scheme, dtype=dtype))
    assert out_shape == (K,)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype == dtype
        assert np.array_equal(np.asarray(g), np.asarray(w))  # bitwise: same seed, same network
    # and the network it draws runs: the Sequential's own forward on its own params
    assert net.forward(got, jnp.zeros((2, SIZES[0]), dtype))[0].shape == (2, K)


def test_the_default_scheme_is_he_and_leading_axes_pass_through():
    key = jax.random.key(3)
    got, out_shape = layers.mlp(SIZES).init(key, (2, SIZES[0]))
    assert out_shape == (2, K)
    want = jaxbp.init_params(key, SIZES, scheme="he")
    assert all(np.array_equal(g["W"], w.W) for g, w in zip(got[::2], want, strict=True))


def test_conversion_round_trips_exactly():
    params = jaxbp.init_params(jax.random.key(0), SIZES, scheme="ng", dtype=F64)
    net_params = layers.mlp_params(params)
    assert [type(p) for p in net_params] == [dict, tuple, dict, tuple, dict]
    assert all(p == () for p in net_params[1::2])
    back = layers.lecture_params(net_params)
    assert isinstance(back, tuple) and all(isinstance(p, jaxbp.Layer) for p in back)
    for old, new in zip(params, back, strict=True):
        assert new.W is old.W and new.b is old.b  # the same arrays: nothing copied or cast
    assert layers.lecture_params(list(net_params)) == back  # a list, as read from a file
    again = layers.mlp_params(back)
    assert all(
        a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(net_params), strict=True)
    )
    # a single-layer network (no activation layer) too
    one = jaxbp.init_params(jax.random.key(1), (4, 2))
    assert layers.lecture_params(layers.mlp_params(one))[0].W is one[0].W


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_check_network_passes_on_the_mlp(output):
    net, _, net_params, x, y = _problem(F64, output, ["tanh", "relu"])
    report = check_network(net, net_params, x, y, output=output, l2=0.7)
    assert report.ok, report
    assert report.failed_layers == []
    assert sorted(set(report.layer_of.values())) == [0, 1, 2, 3, 4]


def _dropped_f_prime(layer):  # an activation handing δ down without ⊙ f′(z)
    return layer._replace(backward=lambda params, cache, dy: ((), dy))


def _bias_gradient_of_one_example(layer):  # Σ_i δ_i forgotten: the first row only
    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return {**grads, "b": dy[0]}, dx

    return layer._replace(backward=backward)


def _delta_without_theta(layer):  # δ handed down without (Θ)ᵀ: dx = δ Θ replaced by δ Θ with
    def backward(params, cache, dy):  # its first input column dropped
        grads, dx = layer.backward(params, cache, dy)
        return grads, dx.at[:, 0].set(0.0)

    return layer._replace(backward=backward)


@pytest.mark.parametrize(
    ("index", "bug", "rows"),
    [
        (3, _dropped_f_prime, {"dx"}),
        (2, _bias_gradient_of_one_example, {"params['b']"}),
        (4, _delta_without_theta, {"dx"}),
    ],
    ids=["dropped f′ in [3] relu", "db of one example in [2] Dense", "dx in [4] Dense"],
)
def test_check_network_names_a_planted_bug_at_its_index(index, bug, rows):
    net, _, net_params, x, y = _problem(F64, "softmax_ce", ["tanh", "relu"])
    subs = list(net.sublayers)
    subs[index] = bug(subs[index])
    buggy = layers.Sequential(*subs)
    report = check_network(buggy, net_params, x, y)
    assert not report.ok
    assert report.failed_layers == [index]
    prefix = f"[{index}] {subs[index].name}: "
    failed = {f.path.removeprefix(prefix) for f in report.failures if f.layer == index}
    assert rows <= failed, failed


def test_bad_arguments_are_named_with_their_values():
    with pytest.raises(ValueError, match=r"mlp: sizes needs at least an input and an output"):
        layers.mlp([5])
    with pytest.raises(ValueError, match=r"mlp: sizes entry 1 must be a positive integer, got 0"):
        layers.mlp([5, 0, 3])
    with pytest.raises(ValueError, match=r"mlp: sizes entry 2 must be a positive integer, got 2.5"):
        layers.mlp([5, 4, 2.5])
    with pytest.raises(ValueError, match=r"mlp: sizes must be a sequence of widths .* got 5"):
        layers.mlp(5)
    with pytest.raises(ValueError, match=r"mlp: activation: unknown name 'swish'"):
        layers.mlp(SIZES, activation="swish")
    with pytest.raises(ValueError, match=r"mlp: activation: got 1 names \('tanh',\) for 2 hidden"):
        layers.mlp(SIZES, activation=["tanh"])
    with pytest.raises(ValueError, match=r"mlp: activation: unknown name 'swish'"):
        layers.mlp(SIZES, activation=["tanh", "swish"])
    with pytest.raises(TypeError, match=r"mlp: activation must be a name or a sequence .* int 3"):
        layers.mlp(SIZES, activation=3)
    with pytest.raises(
        ValueError, match=r"mlp: scheme must be one of ng, glorot, he, got 'xavier'"
    ):
        layers.mlp(SIZES, scheme="xavier")
    with pytest.raises(TypeError, match=r"mlp: dtype must be a floating dtype, got .*int32"):
        layers.mlp(SIZES, dtype=jnp.int32)
    with pytest.raises(ValueError, match=r"mlp: in_shape must end in the input width sizes\[0\]"):
        layers.mlp(SIZES).init(jax.random.key(0), (4,))
    net_params = layers.mlp(SIZES).init(jax.random.key(0), (SIZES[0],))[0]
    with pytest.raises(ValueError, match=r"net_params: an mlp has an odd number of layers.* 4"):
        layers.lecture_params(net_params[:4])
    with pytest.raises(
        TypeError, match=r"net_params: entry 1 \(an activation layer\) must be \(\)"
    ):
        layers.lecture_params((net_params[0], net_params[0], net_params[2]))
    with pytest.raises(ValueError, match=r"net_params: entry 2 .* must have keys 'W', 'b', got"):
        layers.lecture_params((net_params[0], (), {"W": net_params[2]["W"]}))
    with pytest.raises(TypeError, match=r"net_params: must be a tuple .* got dict"):
        layers.lecture_params(net_params[0])
    with pytest.raises(
        ValueError, match=r"params: layer 2 W has shape \(4, 7\), so it expects 7 inputs"
    ):
        layers.lecture_params((net_params[0], (), net_params[2], (), net_params[2]))
    with pytest.raises(TypeError, match=r"params: expected a non-empty tuple of Layer"):
        layers.mlp_params(())
