"""16-bit hand gradients (jaxbp.verify.rounding): a correct float16 / bfloat16 gradient with
reductions passes; a 10 % bug in any leaf fails — a derivation bug in the float32 rows, a
precision-only bug in the rounding row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import verify
from jaxbp.verify import rounding

HALF = ["bfloat16", "float16"]


def _least_squares(dtype, m=64, n=5, seed=0):
    """A least-squares model with a bias, near its fit: the bias gradient is a sum of m residuals
    of both signs, whose 16-bit rounding is several percent of the result."""
    rng = np.random.RandomState(seed)
    x = rng.randn(m, n)
    w = rng.randn(n)
    y = x @ w + 0.3 + 0.1 * rng.randn(m)
    params = {"w": jnp.asarray(w + 0.05 * rng.randn(n), dtype), "b": jnp.asarray(0.3, dtype)}
    return params, jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _loss(p, x, y):
    r = x @ p["w"] + p["b"] - y
    return 0.5 * jnp.mean(r**2)


def _grad(bug=None, leaf="b"):
    def grad(p, x, y):
        r = x @ p["w"] + p["b"] - y
        g = {"w": x.T @ r / x.shape[0], "b": jnp.sum(r) / x.shape[0]}
        if bug == "derivation" or (bug == "precision" and r.dtype in (jnp.bfloat16, jnp.float16)):
            g[leaf] = g[leaf] * 1.1
        return g

    return grad


def _mlp(dtype, act, seed=0, m=128):
    rng = np.random.RandomState(seed)
    x = jnp.asarray(rng.randn(m, 16), dtype)
    y = jnp.asarray(np.eye(4)[rng.randint(0, 4, m)], dtype)
    p = {
        "W1": jnp.asarray(rng.randn(16, 24) / 4, dtype),
        "b1": jnp.asarray(rng.randn(24) / 10, dtype),
        "W2": jnp.asarray(rng.randn(24, 4) / 4, dtype),
        "b2": jnp.asarray(rng.randn(4) / 10, dtype),
    }
    return p, x, y


def _mlp_loss(p, x, y, act):
    z1 = x @ p["W1"] + p["b1"]
    z2 = getattr(jax.nn, act)(z1) @ p["W2"] + p["b2"]
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(z2), axis=-1))


def _mlp_grad(p, x, y, act):
    z1 = x @ p["W1"] + p["b1"]
    h = getattr(jax.nn, act)(z1)
    d2 = (jax.nn.softmax(h @ p["W2"] + p["b2"]) - y) / x.shape[0]
    f_prime = 1 - h * h if act == "tanh" else (z1 > 0).astype(z1.dtype)
    d1 = (d2 @ p["W2"].T) * f_prime
    return {"W1": x.T @ d1, "b1": d1.sum(0), "W2": h.T @ d2, "b2": d2.sum(0)}


@pytest.mark.parametrize("dtype", HALF)
def test_a_correct_16_bit_gradient_with_a_cancelling_sum_passes(dtype):
    params, x, y = _least_squares(dtype)
    report = verify.check(_grad(), _loss, params, x, y)
    assert report.ok, str(report)
    # the 16-bit bias gradient is several percent off at the point: a tolerance relative to the
    # result would have to be loose; here it passes because its error is rounding
    (row,) = [r for r in report.rows if r.oracle == "rounding" and r.path == "['b']"]
    assert row.status == "pass" and dict(row.parts)["rounding"] > 0
    oracle_rows = [r for r in report.rows if r.oracle in ("rev", "fwd", "fd")]
    assert all("hand evaluated in float32" in r.note for r in oracle_rows)
    assert all(r.rtol == verify.default_rtol("float32") for r in oracle_rows)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("leaf", ["w", "b"])
def test_a_ten_percent_derivation_bug_fails_in_the_float32_rows(dtype, leaf):
    params, x, y = _least_squares(dtype)
    report = verify.check(_grad("derivation", leaf), _loss, params, x, y, transforms=())
    assert report.failed == [f"['{leaf}']"], str(report)
    assert {r.oracle for r in report.rows if not r.ok} == {"rev", "fwd", "fd"}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("leaf", ["w", "b"])
def test_a_ten_percent_precision_only_bug_fails_in_the_rounding_row(dtype, leaf):
    params, x, y = _least_squares(dtype)
    report = verify.check(_grad("precision", leaf), _loss, params, x, y, transforms=())
    assert report.failed == [f"['{leaf}']"], str(report)
    assert [r.oracle for r in report.rows if not r.ok] == ["rounding"]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_a_correct_16_bit_network_passes_every_row(dtype, act):
    params, x, y = _mlp(dtype, act)
    report = verify.check(_mlp_grad, _mlp_loss, params, x, y, act, transforms=("jit",))
    assert report.ok, str(report)
    assert max(r.margin for r in report.rows if r.oracle == "rounding") < 0.5


def test_a_grad_fn_that_computes_in_16_bits_is_judged_against_the_oracle():
    def grad(p, x, y):  # casts back to bfloat16 whatever it is given: no clean float32 run
        p, x, y = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (p, x, y))
        return _grad()(p, x, y)

    params, x, y = _least_squares("bfloat16")
    report = verify.check(grad, _loss, params, x, y, transforms=())
    assert report.ok, str(report)
    assert report.meta["low_precision"]["reference"] == "oracle"
    assert "computes in a 16-bit dtype" in report.meta["low_precision"]["reason"]
    rev = [r for r in report.rows if r.oracle == "rev"]
    assert all(dict(r.parts).get("rounding", 0) > 0 for r in rev)

    def buggy(p, x, y):
        g = grad(p, x, y)
        return {**g, "b": g["b"] * 1.1}

    report = verify.check(buggy, _loss, params, x, y, transforms=())
    assert report.failed == ["['b']"]
    assert "rounding" in {r.oracle for r in report.rows if not r.ok}


def test_a_float16_overflow_fails_in_the_rounding_row():
    def grad(p, x, y):  # x.T @ (r · 2^16) overflows float16 (max 65504), not float32
        r = x @ p["w"] + p["b"] - y
        scale = jnp.asarray(2.0**16, r.dtype) if r.dtype != jnp.float16 else jnp.float16(65504)
        gw = (x.T @ (r * scale)) / (x.shape[0] * scale)
        return {"w": gw, "b": jnp.sum(r) / x.shape[0]}

    params, x, y = _least_squares("float16")
    report = verify.check(grad, _loss, params, x, y, modes=("rev",), transforms=())
    bad = [r for r in report.rows if not r.ok]
    assert bad and all(r.oracle == "rounding" and r.path == "['w']" for r in bad), str(report)
    assert "in the hand result at" in bad[0].problem  # inf, or NaN where inf met inf


def test_the_perturbed_points_keep_zeros_and_dtypes():
    tree = {"a": jnp.asarray([0.0, 1.0, -2.0], jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}
    copies = rounding._perturbed(np.random.default_rng(0), tree, 5)
    for c in copies:
        assert c["a"].dtype == jnp.bfloat16 and float(c["a"][0]) == 0.0
        assert np.all(np.abs(np.asarray(c["a"], np.float64)[1:] / [1, -2] - 1) <= 0.13)
        assert c["b"] is tree["b"]  # float32 leaves are not moved


def test_the_fitted_systematic_part_separates_a_factor_from_rounding():
    rng = np.random.default_rng(0)
    ref = rng.normal(1.0, 0.3, (49, 3))
    noise = 0.01 * rng.standard_normal((49, 3))
    at0, se, sigma = rounding.fit(ref + noise, ref)
    assert np.all(np.abs(at0) < 5 * se) and np.allclose(sigma, 0.01, rtol=0.3)
    at0, se, _ = rounding.fit(1.1 * ref + noise, ref)  # a 10 % factor
    np.testing.assert_allclose(at0, 0.1 * ref[0], rtol=0.05)
    assert np.all(np.abs(at0) > 20 * se)


def test_z_controls_the_false_alarms_of_a_leaf():
    assert rounding.z(1) < rounding.z(10**4) < rounding.z(10**6)
    assert 4.5 < rounding.z(1) < 5.5 and 8.5 < rounding.z(10**6) < 9.5
