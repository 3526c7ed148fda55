"""The layers' head (``jaxbp.layers.network``) on ``layers.mlp`` against the lecture-level API
(``jaxbp.value_and_grad`` and friends), for everything the lecture API accepts: label forms, x
dtypes, l2 checks, the custom_vjp's cotangents (x included: saliency), per-example gradients by
``vmap``, predictions — issue 25, step 2 of the one-network plan (the one head).

Float64: equal at 1e-12 relative, leaf by leaf. Float32: within the verifier's analytic float32
tolerance (both sides sum in other orders, see tests/test_layers_mlp.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import layers
from jaxbp.activations import ACTIVATIONS
from jaxbp.layers import network
from jaxbp.losses import OUTPUTS
from jaxbp.verify import tolerance

F64 = jnp.float64
F32 = jnp.float32
SIZES = (5, 7, 4, 3)
M = 9
K = SIZES[-1]
RTOL_F64 = 1e-12
RTOL_F32 = tolerance.default_rtol(F32)
L2S = (None, 0.0, 0.7)

LABEL_FORMS = {
    "softmax_ce": ("labels", "one-hot", "int-one-hot", "probabilities"),
    "sigmoid_bce": ("multi-hot", "bool-multi-hot"),
    "identity_mse": ("real",),
}
"""The target forms the lecture API accepts, per output (integer labels (m,): softmax_ce only)."""

FLOAT_FORM = {"softmax_ce": "probabilities", "sigmoid_bce": "multi-hot", "identity_mse": "real"}
"""A floating target form per output, one with a cotangent."""


def _targets(form, dtype, m=M, seed=2):
    key = jax.random.key(seed)
    labels = jnp.arange(m) % K
    if form == "labels":
        return labels.astype(jnp.int32)
    if form == "one-hot":
        return jax.nn.one_hot(labels, K, dtype=dtype)
    if form == "int-one-hot":
        return jax.nn.one_hot(labels, K, dtype=jnp.int32)
    if form == "probabilities":
        return jax.nn.softmax(jax.random.normal(key, (m, K), dtype))
    if form == "multi-hot":
        return jax.random.bernoulli(key, 0.4, (m, K)).astype(dtype)
    if form == "bool-multi-hot":
        return jax.random.bernoulli(key, 0.4, (m, K))
    return jax.random.normal(key, (m, K), dtype)


def _problem(dtype=F64, activation="tanh", x_dtype=None, sizes=SIZES, seed=0):
    params = jaxbp.init_params(jax.random.key(seed), sizes, scheme="ng", dtype=dtype)
    x = jax.random.normal(jax.random.key(seed + 1), (M, sizes[0]), x_dtype or dtype)
    net = layers.mlp(sizes, activation=activation, dtype=dtype)
    return net, params, layers.mlp_params(params), x


def _rel(h, r) -> float:
    h, r = np.asarray(h, np.float64), np.asarray(r, np.float64)
    scale = np.max(np.abs(r)) if r.size else 0.0
    diff = np.max(np.abs(h - r)) if r.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def _worst(new, old) -> float:
    """Largest leaf-wise relative difference; asserts the same structure and dtypes."""
    new_leaves, old_leaves = jax.tree.leaves(new), jax.tree.leaves(old)
    assert len(new_leaves) == len(old_leaves)
    for n, o in zip(new_leaves, old_leaves, strict=True):
        assert jnp.result_type(n) == jnp.result_type(o), (jnp.result_type(n), jnp.result_type(o))
        assert jnp.shape(n) == jnp.shape(o)
    return max(_rel(n, o) for n, o in zip(new_leaves, old_leaves, strict=True))


def _lecture(grads):
    return layers.lecture_params(grads)


SOURCES = ("value_and_grad", "autodiff_value_and_grad", "loss", "cost")


def _all_sources(net, params, net_params, x, y, activation, output, l2, names=SOURCES):
    """(name, layers' result, lecture API's result) for J (and grads) of each entry point."""
    kw_old = dict(activation=activation, output=output, l2=l2)
    kw_new = dict(output=output, l2=l2)

    def pair(fn, *args):
        (J, _), g = fn(*args, **kw_new)
        return J, _lecture(g)

    new = {
        "value_and_grad": lambda: pair(layers.value_and_grad, net, net_params, x, y),
        "autodiff_value_and_grad": lambda: pair(
            layers.autodiff_value_and_grad, net, net_params, x, y
        ),
        "loss": lambda: _lecture_pair(
            jax.value_and_grad(lambda p: layers.loss(net, p, x, y, **kw_new))(net_params)
        ),
        "cost": lambda: layers.cost(net, net_params, x, y, **kw_new),
    }
    old = {
        "value_and_grad": lambda: jaxbp.value_and_grad(params, x, y, **kw_old),
        "autodiff_value_and_grad": lambda: jaxbp.autodiff_value_and_grad(params, x, y, **kw_old),
        "loss": lambda: jax.value_and_grad(lambda p: jaxbp.loss(p, x, y, **kw_old))(params),
        "cost": lambda: jaxbp.cost(params, x, y, **kw_old),
    }
    return [(name, new[name](), old[name]()) for name in names]


def _lecture_pair(value_and_grads):
    J, g = value_and_grads
    return J, _lecture(g)


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_entry_point_equals_the_lecture_api(activation, output):
    net, params, net_params, x = _problem(F64, activation)
    y = _targets(LABEL_FORMS[output][0], F64)
    for l2 in L2S:
        for name, new, old in _all_sources(net, params, net_params, x, y, activation, output, l2):
            assert _worst(new, old) <= RTOL_F64, (name, l2)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_every_label_form_equals_the_lecture_api(output):
    net, params, net_params, x = _problem(F64, "tanh")
    for l2 in (None, 0.7):  # 0.0 is an ordinary λ: every activation's test covers it
        for form in LABEL_FORMS[output]:
            y = _targets(form, F64)
            for name, new, old in _all_sources(net, params, net_params, x, y, "tanh", output, l2):
                assert _worst(new, old) <= RTOL_F64, (name, form, l2)


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_float32_network_with_float64_int_and_float32_inputs(output):
    """x and y of any dtype: J and grads in the parameters' dtype, as the lecture API gives."""
    for x_dtype in (F32, F64, jnp.int32):
        net, params, net_params, x = _problem(F32, "relu", x_dtype=F64)
        x = (3 * x).astype(x_dtype)
        for form in dict.fromkeys((LABEL_FORMS[output][0], FLOAT_FORM[output])):
            for y_dtype in (F32, F64) if form == FLOAT_FORM[output] else (F32,):
                y = _targets(form, y_dtype)
                for name, new, old in _all_sources(
                    net, params, net_params, x, y, "relu", output, 0.7, ("value_and_grad", "loss")
                ):
                    assert jnp.result_type(jax.tree.leaves(new)[0]) == F32, name
                    assert _worst(new, old) <= RTOL_F32, (name, form, x_dtype, y_dtype)


@pytest.mark.parametrize("x_dtype", [F64, F32])
@pytest.mark.parametrize("output", list(OUTPUTS))
def test_loss_cotangents_of_params_and_x_equal_the_lecture_loss(output, x_dtype):
    """``jax.grad(loss, argnums=…)`` w.r.t. params and x (the saliency map of the README)."""
    net, params, net_params, x = _problem(F32 if x_dtype == F64 else F64, "sigmoid")
    x = x.astype(x_dtype)
    rtol = RTOL_F32 if F32 in (x_dtype, jnp.result_type(params[0].W)) else RTOL_F64
    for form in LABEL_FORMS[output]:
        y = _targets(form, F64)
        for l2 in L2S:
            new = jax.grad(layers.loss, argnums=(1, 2))(net, net_params, x, y, output=output, l2=l2)
            old = jax.grad(jaxbp.loss, argnums=(0, 1))(
                params, x, y, activation="sigmoid", output=output, l2=l2
            )
            new = (_lecture(new[0]), new[1])
            assert new[1].dtype == x.dtype  # the cotangent of x in x's own dtype
            assert _worst(new, old) <= rtol, (form, l2)
    # the cotangents of y and l2 (floating targets)
    y = _targets(FLOAT_FORM[output], F64)
    new = jax.grad(layers.loss, argnums=(3,))(net, net_params, x, y, output=output, l2=0.7)
    old = jax.grad(jaxbp.loss, argnums=(2,))(
        params, x, y, activation="sigmoid", output=output, l2=0.7
    )
    assert _worst(new, old) <= rtol
    dl2_new = jax.grad(lambda l2: layers.loss(net, net_params, x, y, output=output, l2=l2))(0.7)
    dl2_old = jax.grad(lambda l2: jaxbp.loss(params, x, y, activation="sigmoid", output=output,
                                             l2=l2))(0.7)  # fmt: skip
    assert _rel(dl2_new, dl2_old) <= rtol


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_per_example_gradients_by_vmap_equal_per_example_grads(output):
    net, params, net_params, x = _problem(F64, "elu")

    def grad_one(p, x_t, y_t):  # each row a batch of one
        return jax.grad(lambda q: layers.loss(net, q, x_t[None], y_t[None], output=output))(p)

    for form in LABEL_FORMS[output]:
        y = _targets(form, F64)
        new = jax.vmap(grad_one, in_axes=(None, 0, 0))(net_params, x, y)
        old = jaxbp.per_example_grads(params, x, y, activation="elu", output=output)
        assert _worst(new, old) <= RTOL_F64, form  # leaf for leaf: W, b of each dense layer
        # the same by the hand value_and_grad under vmap (no custom_vjp involved)
        by_hand = jax.vmap(
            lambda x_t, y_t: layers.value_and_grad(
                net, net_params, x_t[None], y_t[None], output=output
            )[1]
        )(x, y)
        assert _worst(by_hand, old) <= RTOL_F64, form


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("output", list(OUTPUTS))
def test_predict_proba_is_the_lecture_predict_and_predict_its_argmax(output, dtype):
    rtol = RTOL_F64 if dtype == F64 else RTOL_F32
    for activation in ACTIVATIONS:
        net, params, net_params, x = _problem(dtype, activation, x_dtype=F64)
        old = jaxbp.predict(params, x, activation=activation, output=output)
        new = network.predict_proba(net, net_params, x, output=output)
        assert new.dtype == old.dtype == dtype  # float64 rows into the network: its dtype
        assert _rel(new, old) <= rtol, activation
        labels = layers.predict(net, net_params, x)
        assert labels.shape == (M,)
        assert jnp.array_equal(labels, jnp.argmax(old, axis=-1))


def test_a_single_example_is_a_batch_of_one_given_as_such():
    """The lecture API takes x of shape (n,) as one example; the head takes batches only (a
    Layer does not know its input shape: for an Embedding, (n,) is a batch of n indices), and
    ``x[None]`` gives the lecture API's single-example results."""
    net, params, net_params, x = _problem(F64, "relu")
    for output in OUTPUTS:
        y = _targets(LABEL_FORMS[output][0], F64)
        kw = dict(output=output, l2=0.7)
        J_old, g_old = jaxbp.value_and_grad(params, x[0], y[0], activation="relu", **kw)
        (J_new, _), g_new = layers.value_and_grad(net, net_params, x[:1], y[:1], **kw)
        assert _worst((J_new, _lecture(g_new)), (J_old, g_old)) <= RTOL_F64
        old = jaxbp.predict(params, x[0], activation="relu", output=output)
        new = network.predict_proba(net, net_params, x[None, 0], output=output)[0]
        assert _rel(new, old) <= RTOL_F64
    with pytest.raises(ValueError, match=r"Dense\(7\): x must have shape \(m, …, 5\), got shape"):
        layers.value_and_grad(net, net_params, x[0], y[0], output="identity_mse")


def _message(call) -> tuple[type, str]:
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return info.type, str(info.value)


def test_label_errors_are_the_lecture_apis():
    net, params, net_params, x = _problem(F64)
    labels = _targets("labels", F64)
    one_hot = _targets("one-hot", F64)
    cases = [
        (labels, "sigmoid_bce"),  # integer labels only for softmax_ce
        (labels, "identity_mse"),
        (labels + 2, "softmax_ce"),  # label 3 at row 1 out of range [0, 3)
        (labels - 1, "softmax_ce"),  # label −1 at row 0
        (labels[:4], "softmax_ce"),  # 4 labels for 9 rows
        (one_hot[:4], "softmax_ce"),  # 4 rows for 9 rows
        (labels.astype(F64), "softmax_ce"),  # float (m,): neither labels nor targets
        (labels > 0, "softmax_ce"),  # bool (m,)
        (one_hot[..., None], "sigmoid_bce"),  # 3-D
        (one_hot[:, 0], "identity_mse"),
    ]
    for y, output in cases:
        old = _message(lambda y=y, o=output: jaxbp.value_and_grad(params, x, y, output=o))
        for fn in (layers.value_and_grad, layers.autodiff_value_and_grad, layers.cost, layers.loss):
            new = _message(lambda fn=fn, y=y, o=output: fn(net, net_params, x, y, output=o))
            assert new == old, (fn.__name__, output)
    # the width: the same words; the lecture API then names its last W, the head the logits
    old = _message(lambda: jaxbp.value_and_grad(params, x, one_hot[:, :2]))
    new = _message(lambda: layers.loss(net, net_params, x, one_hot[:, :2], output="softmax_ce"))
    prefix = "y: width 2 differs from the output layer's width 3 ("
    assert old[1].startswith(prefix) and new[1].startswith(prefix)
    assert new[1].endswith("(the network's logits have shape (9, 3))")
    with pytest.raises(TypeError, match=r"y: must be an array of \(m, K\) targets .* got list"):
        layers.value_and_grad(net, net_params, x, [0, 1, 2], output="softmax_ce")


def test_l2_is_checked_as_the_lecture_api_checks_it():
    net, params, net_params, x = _problem(F64)
    y = _targets("labels", F64)
    for l2 in (-1.0, -1, float("nan"), float("inf"), jnp.ones(2), jnp.asarray(-0.5)):
        old = _message(lambda l2=l2: jaxbp.value_and_grad(params, x, y, l2=l2))
        assert old[1].startswith("l2: ")
        for fn in (layers.value_and_grad, layers.autodiff_value_and_grad, layers.cost, layers.loss):
            new = _message(
                lambda fn=fn, l2=l2: fn(net, net_params, x, y, output="softmax_ce", l2=l2)
            )
            assert new == old, fn.__name__
        assert _message(lambda l2=l2: layers.penalty(net_params, l2, M)) == old
    # traced under jit: only its shape is checked, as the lecture API does (a negative λ runs)
    for l2 in (0.7, -1.0):
        old = jax.jit(lambda l2: jaxbp.value_and_grad(params, x, y, activation="tanh", l2=l2))(l2)
        new = jax.jit(
            lambda l2: layers.value_and_grad(net, net_params, x, y, output="softmax_ce", l2=l2)
        )(l2)
        assert _worst((new[0][0], _lecture(new[1])), old) <= RTOL_F64


def test_l2_and_targets_take_the_networks_dtype():
    """A float64 λ (or float64 targets) with float32 parameters: J and every gradient stay
    float32 (the lecture's loss casts λ likewise; its value_and_grad lets a float64 λ array
    promote J and the W gradients, not the b ones)."""
    net, params, net_params, x = _problem(F32)
    y = _targets("one-hot", F64)
    l2 = jnp.asarray(0.7, F64)
    (J, _), grads = layers.value_and_grad(net, net_params, x, y, output="softmax_ce", l2=l2)
    assert J.dtype == F32
    assert all(g.dtype == F32 for g in jax.tree.leaves(grads))
    old = jaxbp.loss(params, x, y, activation="tanh", l2=l2)
    assert old.dtype == F32
    assert layers.loss(net, net_params, x, y, output="softmax_ce", l2=l2).dtype == F32


def test_x_errors_name_x():
    net, params, net_params, x = _problem(F64)
    y = _targets("labels", F64)
    old = _message(lambda: jaxbp.value_and_grad(params, x[:0], y[:0]))
    assert _message(lambda: layers.value_and_grad(net, net_params, x[:0], y[:0],
                                                  output="softmax_ce")) == old  # fmt: skip
    assert _message(lambda: layers.predict(net, net_params, x[:0])) == old
    with pytest.raises(TypeError, match=r"x: must be an array, one example per row, got list"):
        layers.cost(net, net_params, x.tolist(), y, output="softmax_ce")
    with pytest.raises(ValueError, match=r"x: must be a batch \(m, …\), .* got shape \(\)"):
        layers.predict(net, net_params, jnp.asarray(1.0))


def test_integer_inputs_of_an_embedding_are_not_cast():
    """The cast is for floating x only: an Embedding's indices go in as they are."""
    net = layers.Sequential(layers.Embedding(6, 4), layers.Flatten(), layers.Dense(K))
    params, _ = net.init(jax.random.key(0), (2,))
    x = jnp.arange(2 * M).reshape(M, 2) % 6
    y = _targets("labels", F32)
    (J, _), grads = layers.value_and_grad(net, params, x, y, output="softmax_ce", l2=0.1)
    (J_ad, _), grads_ad = layers.autodiff_value_and_grad(
        net, params, x, y, output="softmax_ce", l2=0.1
    )
    assert J.dtype == F32
    assert _worst((J, grads), (J_ad, grads_ad)) <= RTOL_F32
    _, vjp = jax.vjp(lambda p, x: layers.loss(net, p, x, y, output="softmax_ce"), params, x)
    assert _worst(vjp(jnp.ones((), F32))[0], layers.value_and_grad(net, params, x, y,
                                                                    output="softmax_ce")[1]) <= RTOL_F32  # fmt: skip
    assert vjp(jnp.ones((), F32))[1].dtype == jax.dtypes.float0  # no cotangent for indices
    assert network.network_dtype(params) == F32
    assert network.network_dtype(()) is None
