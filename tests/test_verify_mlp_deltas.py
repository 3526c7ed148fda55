"""Per-layer δ check (eq. V6): every δ^(l) against ∂J/∂z^(l) through zero probes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from jaxbp.verify.mlp import reference
from verify_support import numpy_problem

SIZES = [4, 5, 6, 3]


def _problem(output="softmax_ce", dtype=jnp.float64):
    return numpy_problem(SIZES, output=output, dtype=dtype, m=5, seed=2, labels=False)


@pytest.mark.parametrize(
    ("activation", "output"),
    [("sigmoid", "softmax_ce"), (("relu", "elu"), "sigmoid_bce"), ("leaky_relu", "identity_mse")],
)
def test_hand_deltas_equal_probe_gradients(activation, output):
    params, x, y = _problem(output)
    report = verify.check_deltas(params, x, y, activation=activation, output=output, l2=0.4)
    assert report.ok, str(report)
    assert [r.path for r in report.rows] == ["z[0]", "a[0]", "z[1]", "a[1]", "z[2]", "a[2]",
                                             "δ[0]", "δ[1]", "δ[2]"]  # fmt: skip
    assert report.meta["first_divergent"] is None


def test_probe_gradient_is_dJ_dz_by_definition():
    # ∂J/∂z^(L) = (ŷ − y)/m for softmax_ce: the probe on the logits recovers the output error.
    params, x, y = _problem()
    probes = verify.probe_gradients(params, x, y, 0.0, activation="tanh", output="softmax_ce")
    y_hat = jaxbp.predict(params, x, activation="tanh", output="softmax_ce")
    np.testing.assert_allclose(probes[-1], (y_hat - y) / x.shape[0], rtol=1e-12, atol=1e-15)
    assert [p.shape for p in probes] == [(5, 5), (5, 6), (5, 3)]


def test_labels_and_float32():
    params, x, y = _problem(dtype=jnp.float32)
    labels = jnp.argmax(y, axis=1)
    report = verify.check_deltas(params, x, labels, activation="tanh", output="softmax_ce")
    assert report.ok, str(report)
    assert report.rows[-1].rtol == pytest.approx(256 * float(jnp.finfo(jnp.float32).eps))


def test_a_wrong_derivative_names_its_layer_first():
    """A user δ recursion with f′ wrong in layer 1 only: δ[1] and δ[0] differ, δ[2] does not;
    the report points at δ[1], the layer where the derivation went wrong."""
    params, x, y = _problem()

    def deltas_fn(p, x_, y_):
        zs, acts = reference.forward(p, x_, activation="tanh")
        d2 = (acts[-1] - y_) / x_.shape[0]
        d1 = (d2 @ p[2].W) * (1 - jnp.tanh(zs[1]))  # wrong: 1 − tanh instead of 1 − tanh²
        d0 = (d1 @ p[1].W) * (1 - jnp.tanh(zs[0]) ** 2)
        return d0, d1, d2

    report = verify.check_deltas(params, x, y, activation="tanh", deltas_fn=deltas_fn)
    assert report.failed == ["δ[0]", "δ[1]"]
    assert report.meta["first_divergent"] == "δ[1]"
    assert "first divergent layer (from the output): δ[1]" in str(report)
    with pytest.raises(AssertionError, match="δ\\[0\\].*δ\\[1\\]"):
        verify.check_deltas(params, x, y, activation="tanh", deltas_fn=deltas_fn,
                            raise_on_fail=True)  # fmt: skip


def test_deltas_fn_with_the_wrong_count_is_rejected():
    params, x, y = _problem()
    with pytest.raises(ValueError, match="returned 2 arrays for a network with 3"):
        verify.check_deltas(params, x, y, activation="tanh", deltas_fn=lambda p, x_, y_: (x_, x_))


def test_invalid_problem_is_rejected_like_value_and_grad():
    params, x, y = _problem()
    with pytest.raises(ValueError, match="x: the network expects 4 input features"):
        verify.check_deltas(params, x[:, :3], y, activation="tanh")


def test_hand_deltas_are_the_backward_deltas_seeded_with_one_over_m():
    params, x, y = _problem()
    d = verify.hand_deltas(params, x, y, activation="tanh", output="softmax_ce")
    y_hat = jaxbp.predict(params, x, activation="tanh", output="softmax_ce")
    np.testing.assert_allclose(d[-1], (y_hat - y) / 5, rtol=1e-14)
    assert jax.tree.structure(d) == jax.tree.structure((0, 0, 0))
