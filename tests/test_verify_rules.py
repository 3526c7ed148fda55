"""Checks without finite differences (V10–V12): dot-product identity, zero cotangent, linearity."""

import jax
import jax.numpy as jnp
import pytest

import jaxbp
from jaxbp import verify
from verify_support import numpy_problem

NAMES = dict(activation="tanh", output="softmax_ce")


def _problem(dtype=jnp.float64):
    return numpy_problem([4, 5, 3], dtype=dtype, m=6, seed=5, labels=False)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_delta_recursion_is_the_vjp_of_the_logits(dtype):
    params, x, _ = _problem(dtype)
    report = verify.check_backward(params, x, **NAMES)
    assert report.ok, str(report)
    paths = ["params[0].W", "params[0].b", "params[1].W", "params[1].b", "x"]
    for oracle in ("⟨Jt,c⟩ = ⟨t,Jᵀc⟩", "zero cotangent", "linearity"):
        assert [r.path for r in report.rows if r.oracle == oracle] == paths


def test_custom_vjp_of_loss_for_all_four_inputs():
    params, x, y = _problem()
    report = verify.check_loss_vjp(params, x, y, 0.7, **NAMES)
    assert report.ok, str(report)
    assert {r.path for r in report.rows} >= {"x", "y", "l2", "params[1].b"}


def test_a_wrong_leaf_of_the_vjp_fails_the_identity_at_that_leaf():
    params, x, _ = _problem()

    def wrong(p, x_, c):
        grads, dx = verify.backward_vjp(p, x_, c, **NAMES)
        return (grads[0], jaxbp.Layer(grads[1].W * 1.05, grads[1].b)), dx

    report = verify.check_backward(params, x, vjp_fn=wrong, **NAMES)
    assert report.failed == ["params[1].W"]
    assert [r.oracle for r in report.rows if not r.ok] == ["⟨Jt,c⟩ = ⟨t,Jᵀc⟩"]


def test_affine_instead_of_linear_fails_zero_and_linearity():
    params, x, _ = _problem()

    def affine(p, x_, c):
        grads, dx = verify.backward_vjp(p, x_, c, **NAMES)
        return grads, dx + 1e-3

    report = verify.check_backward(params, x, vjp_fn=affine, **NAMES)
    assert report.failed == ["x"]
    assert {r.oracle for r in report.rows if not r.ok} == {
        "⟨Jt,c⟩ = ⟨t,Jᵀc⟩", "zero cotangent", "linearity"
    }  # fmt: skip


def test_generic_function_and_nonlinear_vjp():
    a = jnp.linspace(-1.0, 2.0, 5)

    def fun(v):
        return {"s": 2 * jnp.sin(v), "p": v[:2] * v[1:3]}

    def vjp(primals, c):
        (v,) = primals
        g = 2 * jnp.cos(v) * c["s"]
        g = g.at[:2].add(v[1:3] * c["p"]).at[1:3].add(v[:2] * c["p"])
        return (g,)

    assert verify.check_vjp(fun, vjp, (a,), names=("a",)).ok

    def squared(primals, c):  # not linear in c
        return (vjp(primals, c)[0] * jnp.sum(c["s"]),)

    report = verify.check_vjp(fun, squared, (a,), names=("a",))
    assert report.failed == ["a"]
    assert {r.oracle for r in report.rows if not r.ok} >= {"linearity"}


def test_bad_arguments():
    a = jnp.ones(3)
    with pytest.raises(ValueError, match="names: 2 labels for 1 primals"):
        verify.check_vjp(jnp.sin, lambda p, c: (c,), (a,), names=("a", "b"))
    with pytest.raises(TypeError, match="vjp_fn: returned structure"):
        verify.check_vjp(jnp.sin, lambda p, c: (c, c), (a,))


def test_seeded_and_reproducible():
    params, x, _ = _problem()
    a = verify.check_backward(params, x, key=3, **NAMES).to_dict()["rows"]
    b = verify.check_backward(params, x, key=3, **NAMES).to_dict()["rows"]
    c = verify.check_backward(params, x, key=jax.random.key(4), **NAMES).to_dict()["rows"]
    assert a == b and a != c
