"""check_network: each layer's hand backward fed the exact upstream δ, so that one wrong layer is
named and no other (issue 25, item 4)."""

import json

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.verify import check_network

F64 = jnp.float64
M = 8  # examples per batch
K = 3  # classes


def _targets(dtype, m=M):
    return jax.nn.one_hot(jnp.arange(m) % K, K, dtype=dtype)


def _problem(net, in_shape, dtype, seed=0):
    params, _ = net.init(jax.random.key(seed), in_shape)
    x = jax.random.normal(jax.random.key(seed + 1), (M, *in_shape), dtype)
    return params, x, _targets(dtype)


def _layer_failures(report):
    return {f.layer for f in report.failures if f.layer is not None}


# --- planted bugs: each built as layer._replace(backward=buggy) -----------------------------------
def transposed_weight_gradient(layer):
    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return {**grads, "W": grads["W"].T}, dx

    return layer._replace(backward=backward)


def wrong_sign_in_dx(layer):
    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return grads, -dx

    return layer._replace(backward=backward)


def bias_gradient_divided_by_m(layer):  # a stray 1/m: the layer's backward must return sums
    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return {**grads, "b": grads["b"] / dy.shape[0]}, dx

    return layer._replace(backward=backward)


def dropped_f_prime(layer):  # an activation handing δ down without ⊙ f′(z)
    return layer._replace(backward=lambda params, cache, dy: ((), dy))


BUGS = {
    # name: (the layer at index 3, the bug, the rows of layer 3 that must fail)
    "transposed dW": (lambda dt: layers.Dense(6, dtype=dt), transposed_weight_gradient,
                      {"params['W']"}),
    "1/m on db": (lambda dt: layers.Dense(6, dtype=dt), bias_gradient_divided_by_m,
                  {"params['b']"}),
    "sign of dx": (lambda dt: layers.Dense(6, dtype=dt), wrong_sign_in_dx, {"dx"}),
    "dropped f′": (lambda dt: layers.Tanh(), dropped_f_prime, {"dx"}),
}  # fmt: skip


def six_layers(dtype, fourth):
    return layers.Sequential(
        layers.Dense(6, dtype=dtype),
        layers.Relu(),
        layers.Dense(6, dtype=dtype),
        fourth,
        layers.Sigmoid(),
        layers.Dense(K, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", [jnp.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_planted_bug_in_the_fourth_layer_is_named_and_no_other(bug, dtype):
    make, plant, wrong = BUGS[bug]
    net = six_layers(dtype, plant(make(dtype)))
    params, x, y = _problem(net, (5,), dtype)

    report = check_network(net, params, x, y)

    assert not report.ok
    assert _layer_failures(report) == {3}, report.message()
    assert report.failed_layers == [3]
    label = f"[3] {make(dtype).name}"
    assert report.meta["first_divergent"] == label
    # the parameter rows and the dx row tell a wrong ∂E/∂params from a wrong δ handed down
    failed_rows = {f.path.removeprefix(f"{label}: ") for f in report.failures if f.layer == 3}
    assert failed_rows == wrong
    assert {f.oracle for f in report.failures if f.layer == 3} == {"vjp", "fd"}
    # every other layer, fed the exact δ, passes every row
    for row in report.rows:
        if report.layer_of.get(row.path) not in (3, None):
            assert row.ok, row
    # the chained gradient shows where the error spread: layer 3's own leaf, or every layer below
    network = {f.path for f in report.failures if f.layer is None}
    assert network and all(p.startswith("network: params[") for p in network)


def test_a_correct_mlp_passes_with_every_layer_named():
    net = six_layers(F64, layers.Dense(6, dtype=F64))
    params, x, y = _problem(net, (5,), F64)
    report = check_network(net, params, x, y, l2=0.3)
    assert report.ok, report
    assert report.failures == [] and report.failed_layers == []
    assert [m["layer"] for m in report.meta["layers"]] == list(range(6))
    names = [m["name"] for m in report.meta["layers"]]
    assert names[0] == "[0] Dense(6)" and names[1] == "[1] relu"
    oracles = {r.oracle for r in report.rows}
    assert oracles == {"vjp", "fd", "probe", "rev"}
    assert any(r.path == "head: δ^(L) = (ŷ − y)/m" for r in report.rows)
    assert {r.path for r in report.rows if r.oracle == "rev"} >= {
        "network: J",
        "network: params[0]['W']",
        "network: params[5]['b']",
    }
    # the float64 vjp rows agree to the float64 tolerance
    assert max(r.max_rel for r in report.rows if r.oracle == "vjp") < 1e-12


def test_a_small_cnn_passes():
    net = layers.Sequential(
        layers.Conv2D(3, 3, padding="SAME", dtype=F64),
        layers.Relu(),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(K, dtype=F64),
    )
    params, x, y = _problem(net, (6, 6, 1), F64)
    report = check_network(net, params, x, y)
    assert report.ok, report
    assert report.meta["layers"][2]["name"] == "[2] MaxPool2D((2, 2), VALID)"
    # a ReLU before a max pool leaves ties of zeros in windows: fd may see a kink, never fails
    assert all(r.status in ("pass", "non-smooth") for r in report.rows)


def normalised_residual_net(tanh):
    return layers.Sequential(
        layers.Dense(6, dtype=F64),
        layers.BatchNorm(dtype=F64),
        layers.Relu(),
        layers.Dropout(0.3),
        layers.Residual(
            layers.Sequential(layers.Dense(6, dtype=F64), tanh, layers.Dense(6, dtype=F64))
        ),
        layers.LayerNorm(dtype=F64),
        layers.Dense(K, dtype=F64),
    )


def test_batchnorm_dropout_residual_and_layernorm_pass_and_nested_layers_get_tuple_paths():
    net = normalised_residual_net(layers.Tanh())
    params, x, y = _problem(net, (5,), F64)
    report = check_network(net, params, x, y, key=jax.random.key(7), l2=0.1)
    assert report.ok, report
    ids = [m["layer"] for m in report.meta["layers"]]
    assert ids == [0, 1, 2, 3, (4, 0), (4, 1), (4, 2), 5, 6]
    assert report.meta["layers"][5]["name"] == "[4, 1] tanh in Sequential › Residual"
    # BatchNorm's running statistics are not trained gradients: skipped, never compared
    state = [r for r in report.rows if "['state']" in r.path]
    assert state and {r.status for r in state} == {"skipped"}
    # a bias before BatchNorm has an exactly vanishing gradient, judged on its layer's scale
    bias = [r for r in report.rows if r.path == "[0] Dense(6): params['b']" and r.oracle == "vjp"]
    assert bias[0].ok


def test_a_wrong_layer_inside_a_residual_block_is_named_by_its_tuple_path():
    def net(tanh):
        block = layers.Sequential(layers.Dense(6, dtype=F64), tanh, layers.Dense(6, dtype=F64))
        return layers.Sequential(
            layers.Dense(6, dtype=F64), layers.Residual(block), layers.Dense(K, dtype=F64)
        )

    params, x, y = _problem(net(layers.Tanh()), (5,), F64)
    bad = check_network(net(dropped_f_prime(layers.Tanh())), params, x, y)
    assert _layer_failures(bad) == {(1, 1)}, bad.message()
    assert bad.meta["first_divergent"] == "[1, 1] tanh in Sequential › Residual"


def test_dropout_masks_follow_the_key_and_eval_mode_runs_too():
    net = layers.Sequential(
        layers.Dense(6, dtype=F64), layers.Dropout(0.5), layers.Dense(K, dtype=F64)
    )
    params, x, y = _problem(net, (5,), F64)
    assert check_network(net, params, x, y, key=3).ok
    assert check_network(net, params, x, y, train=False).ok
    with pytest.raises(ValueError, match="key must be a PRNG key when train=True"):
        check_network(net, params, x, y)


def test_self_attention_passes():
    net = layers.Sequential(
        layers.SelfAttention(2, 4, causal=True, dtype=F64),
        layers.Flatten(),
        layers.Dense(K, dtype=F64),
    )
    params, x, y = _problem(net, (3, 4), F64)
    report = check_network(net, params, x, y)
    assert report.ok, report
    name = layers.SelfAttention(2, 4, causal=True).name
    assert {r.path for r in report.rows} >= {f"[0] {name}: params['Wq']", f"[0] {name}: dx"}


def test_a_list_of_layers_is_checked_as_their_sequential():
    stack = [layers.Dense(6, dtype=F64), layers.Tanh(), layers.Dense(K, dtype=F64)]
    params, x, y = _problem(layers.Sequential(*stack), (5,), F64)
    report = check_network(stack, params, x, y, finite_differences=False)
    assert report.ok, report
    assert [m["name"] for m in report.meta["layers"]] == [
        "[0] Dense(6)",
        "[1] tanh",
        "[2] Dense(3)",
    ]
    assert not any(r.oracle == "fd" for r in report.rows)


def test_float32_without_x64_keeps_the_dropout_masks():
    """With x64 off, a reference one precision up would draw other dropout masks; the check then
    stays in float32 and says so."""
    with jax.enable_x64(False):
        net = layers.Sequential(layers.Dense(6), layers.Dropout(0.3), layers.Dense(K))
        params, _ = net.init(jax.random.key(0), (5,))
        x = jax.random.normal(jax.random.key(1), (M, 5), jnp.float32)
        report = check_network(net, params, x, _targets(jnp.float32), key=jax.random.key(2))
    assert report.ok, report
    assert report.meta["reference"] == "the network's own dtype"
    assert "dropout masks" in report.warnings[0]


def test_the_report_records_the_layer_of_every_failure():
    net = six_layers(F64, wrong_sign_in_dx(layers.Dense(6, dtype=F64)))
    params, x, y = _problem(net, (5,), F64)
    report = check_network(net, params, x, y)
    failure = next(f for f in report.failures if f.layer == 3)
    assert failure.path == "[3] Dense(6): dx" and failure.error > failure.tolerance
    assert failure._fields[:-1] == (
        "check", "oracle", "transform", "path", "index", "error", "tolerance", "problem",
    )  # fmt: skip
    record = json.loads(report.to_json())
    assert record["failed_layers"] == [3]
    assert record["layers"]["[3] Dense(6): dx"] == 3
    assert "first divergent layer (from the output): [3] Dense(6)" in str(report)
    with pytest.raises(AssertionError, match=r"\[3\] Dense\(6\): dx"):
        check_network(net, params, x, y, raise_on_fail=True)


def test_a_backward_that_raises_fails_its_own_layer():
    def broken(params, cache, dy):
        raise ValueError("not derived yet")

    net = six_layers(F64, layers.Dense(6, dtype=F64)._replace(backward=broken))
    params, x, y = _problem(net, (5,), F64)
    report = check_network(net, params, x, y)
    assert _layer_failures(report) == {3}
    assert "not derived yet" in report.failures[0].problem


def test_bad_arguments_are_named_with_their_values():
    net = layers.Sequential(layers.Dense(4, dtype=F64), layers.Dense(K, dtype=F64))
    params, x, y = _problem(net, (5,), F64)
    with pytest.raises(TypeError, match=r"net: must be a jaxbp.layers.Layer .* got int 3"):
        check_network(3, params, x, y)
    with pytest.raises(TypeError, match=r"net\[1\]: must be a jaxbp.layers.Layer, got str"):
        check_network([layers.Dense(4), "relu"], params, x, y)
    with pytest.raises(ValueError, match=r"Dense\(4\): x must have shape"):
        check_network(net, params, x[:, :4], y)
    with pytest.raises(ValueError, match=r"y: must be \(m, K\) targets .* for the 8 rows of x"):
        check_network(net, params, x, jnp.arange(M - 1))
    with pytest.raises(
        ValueError, match=r"y: integer labels \(m,\) are for softmax_ce; sigmoid_bce"
    ):
        check_network(net, params, x, jnp.arange(M), output="sigmoid_bce")
    with pytest.raises(ValueError, match=r"y: label 3 at row 3 is outside 0..2 .* 2 such label"):
        check_network(net, params, x, jnp.arange(M) % 4)
    with pytest.raises(ValueError, match=r"y: has shape \(8, 4\), the network's output"):
        check_network(net, params, x, _targets(F64) @ jnp.ones((K, 4), F64))
    with pytest.raises(ValueError, match="output: unknown name 'softmax'"):
        check_network(net, params, x, y, output="softmax")
    with pytest.raises(ValueError, match="l2: must be a finite number ≥ 0 or None, got -1"):
        check_network(net, params, x, y, l2=-1)
    with pytest.raises(ValueError, match="l2: must be a finite number ≥ 0 or None, got nan"):
        check_network(net, params, x, y, l2=float("nan"))
    with pytest.raises(TypeError, match="key: must be None, an int seed or a jax.random key"):
        check_network(net, params, x, y, key="k")


def test_integer_labels_and_a_jax_l2_are_taken_as_the_head_takes_them():
    """(m,) labels for softmax_ce give the rows of their one-hot targets; λ may be a 0-d array."""
    net = six_layers(F64, layers.Tanh())
    params, x, y = _problem(net, (5,), F64)
    labels = jnp.arange(M) % K
    by_labels = check_network(net, params, x, labels, l2=jnp.asarray(0.5))
    by_one_hot = check_network(net, params, x, y, l2=0.5)
    assert by_labels.ok and by_one_hot.ok
    assert [(r.path, r.oracle) for r in by_labels.rows] == [
        (r.path, r.oracle) for r in by_one_hot.rows
    ]
    for a, b in zip(by_labels.rows, by_one_hot.rows, strict=True):
        assert a.error == b.error, (a, b)  # finite: every row passed
