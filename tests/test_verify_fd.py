"""The finite-difference ladder (jaxbp.verify.fd): steps relative to each leaf, Richardson with a
measured allowance, kinks found from the one-sided differences."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import verify
from jaxbp.verify import fd, tolerance


def _ladder(f, theta, v, hand, h):
    """The numbers the directional program computes, for a 1-D f along v = 1."""
    steps = fd.ladder(np.array([h]))
    jp = np.array([[f(theta + s * v) for s in steps[0]]])
    jm = np.array([[f(theta - s * v) for s in steps[0]]])
    hand_diff = np.array([[(2 * s * v) * hand for s in steps[0]]])
    return f(theta), jp, jm, hand_diff, steps


def test_scales_are_relative_to_each_leaf_with_no_floor():
    np.testing.assert_allclose(fd.scales([0.05, 3.0]), [0.05, 3.0])
    # an all-zero leaf takes the tree's scale; an all-zero tree takes 1
    np.testing.assert_allclose(fd.scales([0.0, 0.3, 0.4]), [0.5**0.5 * 0.5, 0.3, 0.4])
    np.testing.assert_allclose(fd.scales([0.0]), [1.0])


def test_step_factors():
    assert tolerance.step_factor("float64") == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    assert tolerance.step_factor("float32") == pytest.approx(np.finfo(np.float32).eps ** (1 / 5))


def test_a_smooth_function_is_extrapolated_within_its_allowance():
    f = np.exp
    j0, jp, jm, hd, steps = _ladder(f, 0.3, 1.0, np.exp(0.3), 1e-3)
    v = fd.verdict(j0, jp, jm, hd, steps, np.finfo(np.float64).eps)
    assert v.smooth[0]
    # Richardson's error is far below the plain central difference's, and within the allowance
    central_error = abs(v.central[0] - np.exp(0.3))
    assert abs(v.error[0]) < central_error / 100 and abs(v.error[0]) <= v.allowance[0]


def test_the_allowance_does_not_grow_with_a_wrong_hand_value():
    right = fd.verdict(*_ladder(np.sin, 0.7, 1.0, np.cos(0.7), 1e-4), 2.2e-16)
    wrong = fd.verdict(*_ladder(np.sin, 0.7, 1.0, 1.01 * np.cos(0.7), 1e-4), 2.2e-16)
    assert wrong.allowance[0] == pytest.approx(right.allowance[0], rel=1e-3)
    assert abs(wrong.error[0]) > 100 * wrong.allowance[0]


@pytest.mark.parametrize("distance", [0.0, 0.1e-4, 0.2e-4, 0.4e-4, 0.6e-4, 0.9e-4])
def test_a_kink_within_the_ladder_is_non_smooth(distance):
    def f(t):
        return 2.0 * t + 3.0 * max(t - distance, 0.0)

    v = fd.verdict(*_ladder(f, 0.0, 1.0, 2.0, 1e-4), 2.2e-16)
    assert not v.smooth[0]
    assert v.f_minus[0] == pytest.approx(2.0)


def test_a_kink_beyond_the_ladder_is_smooth():
    def f(t):
        return 2.0 * t + 3.0 * max(t - 1e-3, 0.0)

    v = fd.verdict(*_ladder(f, 0.0, 1.0, 2.0, 1e-4), 2.2e-16)
    assert v.smooth[0] and abs(v.error[0]) <= v.allowance[0] + 1e-12


def test_a_non_finite_loss_is_no_kink():
    v = fd.verdict(*_ladder(lambda t: np.inf if t > 0 else t, 0.0, 1.0, 1.0, 1e-4), 2.2e-16)
    assert v.smooth[0] and not np.isfinite(v.error[0])


def test_abs_at_zero_through_check_is_non_smooth_and_does_not_fail():
    def loss(p):
        return jnp.sum(jnp.abs(p["w"])) + jnp.sum(p["w"] ** 2)

    def grad(p):
        return {"w": jnp.sign(p["w"]) + 2 * p["w"]}

    params = {"w": jnp.array([0.0, 0.5, -1.5])}
    report = verify.check(grad, loss, params, modes=("fd",), transforms=())
    assert report.ok, str(report)
    (row,) = [r for r in report.rows if r.status == "non-smooth"]
    assert row.worst_index == (0,) and "F₋ = -1" in row.note and "F₊ = 1" in row.note
    assert "hand 0.000000e+00 (between them)" in row.note
    compared = next(r for r in report.rows if r.status == "pass" and r.oracle == "fd")
    assert compared.n == 2  # the two smooth elements are still judged
