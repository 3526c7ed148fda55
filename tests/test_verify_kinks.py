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


def _non_smooth(report, path):
    return [r for r in report.rows if r.status == "non-smooth" and r.path == path]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_a_kink_within_the_step_is_found_without_kinks_and_never_fails(activation):
    params, x, y, kw = _problem(activation)
    grad = functools.partial(jaxbp.value_and_grad, **kw)
    loss = functools.partial(reference.cost, **kw)
    report = verify.check(grad, loss, params, x, y, modes=("fd",), transforms=())
    assert report.ok, str(report)
    (row,) = _non_smooth(report, "[0].b")
    assert row.ok and row.worst_index == (0,)
    assert "non-smooth at this point" in row.note and "F₋ =" in row.note and "F₊ =" in row.note
    assert "between them" in row.note  # the hand value is one of the one-sided slopes
    assert report.meta["fd"]["non_smooth"]["[0].b"] == 1
    assert report.meta["fd"]["non_smooth"]["[1].b"] == 0  # the output layer is linear in b


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_watched_kinks_keep_the_step_short_of_them(activation):
    params, x, y, kw = _problem(activation)
    grad = functools.partial(jaxbp.value_and_grad, **kw)
    loss = functools.partial(reference.cost, **kw)
    kinks = functools.partial(_kinks, activation=activation)
    report = verify.check(grad, loss, params, x, y, modes=("fd",), kinks=kinks, transforms=())
    assert report.ok, str(report)
    # the step along [0].b[0] now stops at half the distance (1e-9): differenced, not skipped
    assert not _non_smooth(report, "[0].b")
    assert report.meta["kinks_watched"]


def test_a_wrong_gradient_at_a_kink_still_fails():
    params, x, y, kw = _problem("relu")

    def wrong(p, x_, y_):
        J, g = jaxbp.value_and_grad(p, x_, y_, **kw)
        return J, (jaxbp.Layer(g[0].W, g[0].b.at[0].add(5.0)), g[1])

    loss = functools.partial(reference.cost, **kw)
    watched = verify.check(wrong, loss, params, x, y, modes=("fd",), transforms=(),
                           kinks=functools.partial(_kinks, activation="relu"))  # fmt: skip
    assert watched.failed == ["[0].b"]
    assert [(r.oracle, r.worst_index) for r in watched.rows if not r.ok] == [("fd", (0,))]
    # without the watch fd calls the element non-smooth, and rev (no step) catches the bug
    blind = verify.check(wrong, loss, params, x, y, modes=("rev", "fd"), transforms=())
    assert blind.failed == ["[0].b"]
    assert [r.oracle for r in blind.rows if not r.ok] == ["rev"]
    assert "outside them" in _non_smooth(blind, "[0].b")[0].note


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


@pytest.mark.parametrize("watched", [False, True])
def test_a_unit_exactly_at_the_kink_is_non_smooth(watched):
    params, x, y = numpy_problem([3, 4, 2], output="identity_mse", m=3, seed=3)
    x = x.at[0].set(0.0)  # z[0, 0] = b[0] exactly
    params = (jaxbp.Layer(params[0].W, params[0].b.at[0].set(0.0)), params[1])
    kw = dict(activation="relu", output="identity_mse")
    report = verify.check(
        functools.partial(jaxbp.value_and_grad, **kw), functools.partial(reference.cost, **kw),
        params, x, y, modes=("fd",), transforms=(),
        kinks=functools.partial(_kinks, activation="relu") if watched else None,
    )  # fmt: skip
    assert report.ok, str(report)
    (row,) = _non_smooth(report, "[0].b")
    assert row.worst_index == (0,) and "F₋ =" in row.note
