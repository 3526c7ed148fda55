"""Kinks (eq. V9): finite differences straddling z = 0 of relu / leaky_relu are reported apart."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from jaxbp.verify.mlp import reference
from verify_support import numpy_problem


def _kinks(params, x, y, *, activation):
    del y
    return reference.kinked_preactivations(params, x, activation=activation)


def _problem(activation):
    """A network whose unit 0 of layer 0 sits 1e-9 from the kink for example 0."""
    params, x, y = numpy_problem([3, 4, 2], output="identity_mse", m=3, seed=3)
    W, b = params[0]
    b = b.at[0].set(-(x[0] @ W[0]) + 1e-9)
    params = (jaxbp.Layer(W, b), params[1])
    assert abs(float(reference.forward(params, x, activation=activation)[0][0][0, 0])) < 1e-8
    kw = dict(activation=activation, output="identity_mse")
    return params, x, y, kw


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_kink_directions_are_reported_apart_with_one_sided_slopes(activation):
    params, x, y, kw = _problem(activation)
    grad = functools.partial(jaxbp.value_and_grad, **kw)
    loss = functools.partial(reference.cost, **kw)
    blind = verify.check(grad, loss, params, x, y, modes=("fd",))
    # Without the kink watch the central difference averages the two slopes: a false failure.
    assert "[0].b" in blind.failed

    kinks = functools.partial(_kinks, activation=activation)
    report = verify.check(grad, loss, params, x, y, modes=("fd",), kinks=kinks)
    assert report.ok, str(report)
    kink_rows = {r.path: r for r in report.rows if r.oracle == "fd-kink"}
    assert set(kink_rows) == {"[0].W", "[0].b"}  # the entries feeding unit 0 of layer 0
    assert kink_rows["[0].b"].worst_index == (0,)
    assert "one-sided D-" in kink_rows["[0].b"].note and "D+" in kink_rows["[0].b"].note
    assert kink_rows["[0].W"].method.endswith("3 within a step of a kink")
    assert report.meta["kinks_watched"]


def test_a_wrong_gradient_at_a_kink_still_fails():
    params, x, y, kw = _problem("relu")

    def wrong(p, x_, y_):
        J, g = jaxbp.value_and_grad(p, x_, y_, **kw)
        return J, (jaxbp.Layer(g[0].W, g[0].b.at[0].add(1.0)), g[1])

    report = verify.check(wrong, functools.partial(reference.cost, **kw), params, x, y,
                          modes=("fd",), kinks=functools.partial(_kinks, activation="relu"))  # fmt: skip
    assert report.failed == ["[0].b"]
    assert [r.oracle for r in report.rows if not r.ok] == ["fd-kink"]


def test_within_step():
    z = (jnp.array([1e-3, 2.0]), jnp.array([[5.0]]))
    assert bool(verify.within_step(z, (jnp.array([1e-2, 0.0]), jnp.zeros((1, 1)))))
    assert not bool(verify.within_step(z, (jnp.array([1e-4, 0.0]), jnp.zeros((1, 1)))))
    # a unit exactly at zero that the step does not move is not straddled
    assert not bool(verify.within_step((jnp.zeros(2),), (jnp.zeros(2),)))
    assert not bool(verify.within_step((), ()))


def test_kinked_preactivations_watch_only_relu_layers():
    params, _, _ = numpy_problem([3, 4, 5, 6, 2])
    x = jnp.ones((2, 3))
    zs = reference.kinked_preactivations(params, x, activation=("relu", "tanh", "leaky_relu"))
    assert [z.shape for z in zs] == [(2, 4), (2, 6)]
    np.testing.assert_array_equal(zs[0], reference.forward(params, x, activation="relu")[0][0])


def test_crossing_sides():
    from jaxbp.verify.kinks import MINUS, PLUS, crossing_sides

    z = (jnp.array([1e-3, 5.0]),)
    assert int(crossing_sides(z, (jnp.array([-1e-2, 0.0]),))) == PLUS  # + step moves z to zero
    assert int(crossing_sides(z, (jnp.array([1e-2, 0.0]),))) == MINUS
    assert int(crossing_sides(z, (jnp.array([1e-5, 0.0]),))) == 0  # too far from the kink
    assert int(crossing_sides((jnp.array([0.0]),), (jnp.array([1.0]),))) == PLUS | MINUS
    two = (jnp.array([1e-3, -1e-3]),)  # two units crossing in opposite senses
    assert int(crossing_sides(two, (jnp.array([-1e-2, -1e-2]),))) == PLUS | MINUS


def test_a_unit_exactly_at_the_kink_uses_the_one_sided_slopes():
    params, x, y = numpy_problem([3, 4, 2], output="identity_mse", m=3, seed=3)
    x = x.at[0].set(0.0)  # z[0, 0] = b[0] exactly
    params = (jaxbp.Layer(params[0].W, params[0].b.at[0].set(0.0)), params[1])
    kw = dict(activation="relu", output="identity_mse")
    report = verify.check(
        functools.partial(jaxbp.value_and_grad, **kw), functools.partial(reference.cost, **kw),
        params, x, y, modes=("fd",), kinks=functools.partial(_kinks, activation="relu"),
    )  # fmt: skip
    assert report.ok, str(report)
    row = next(r for r in report.rows if r.oracle == "fd-kink" and r.path == "[0].b")
    assert row.worst_index == (0,) and "at the kink: one-sided" in row.note
