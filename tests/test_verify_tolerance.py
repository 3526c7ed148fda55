"""The error model (jaxbp.verify.tolerance): the reference one precision up, tolerances by the
parameter's dtype, right verdicts in bfloat16, float16, float32 and float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from jaxbp.verify import tolerance
from verify_support import numpy_problem

HALF = ["bfloat16", "float16"]


def test_reference_dtypes_are_one_precision_up():
    assert tolerance.reference_dtype("bfloat16") == jnp.float32
    assert tolerance.reference_dtype("float16") == jnp.float32
    assert tolerance.reference_dtype("float32") == jnp.float64
    assert tolerance.reference_dtype("float64") == jnp.float64
    assert tolerance.reference_dtype("complex64") == jnp.complex128


def test_default_rtols_follow_the_error_model():
    eps32 = float(jnp.finfo(jnp.float32).eps)
    assert tolerance.default_rtol("float64") == tolerance.ANALYTIC_RTOL_F64
    assert tolerance.default_rtol("float32") == pytest.approx(tolerance.ANALYTIC_ULPS * eps32)
    assert tolerance.default_rtol("bfloat16") == pytest.approx(4 * 2.0**-7)
    assert tolerance.default_rtol("float16") == pytest.approx(4 * 2.0**-10)
    # a leaf 10 % too large must fail: the worst element may be off by 2 · rtol · max |r|
    assert all(2 * tolerance.default_rtol(d) < 0.1 for d in HALF)
    assert tolerance.default_rtol("complex128") == tolerance.default_rtol("float64")
    with pytest.raises(ValueError, match="kind"):
        tolerance.default_rtol("float32", "exact")
    table = tolerance.tolerance_table()
    assert [r["reference_dtype"] for r in table] == ["float32", "float32", "float64", "float64"]


def test_upcast_leaves_integers_and_keys_alone():
    tree = {"f": jnp.ones(2, jnp.bfloat16), "i": jnp.arange(2), "k": jax.random.key(0), "s": 3}
    out = tolerance.upcast(tree)
    assert out["f"].dtype == jnp.float32 and out["i"].dtype == tree["i"].dtype
    assert out["k"] is tree["k"] and out["s"] == 3


def _logreg(dtype):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((64, 6)), dtype)
    y = jnp.asarray(rng.integers(0, 2, 64), dtype)
    params = {"b": jnp.asarray(0.2, dtype), "w": jnp.asarray(rng.standard_normal(6), dtype)}
    return params, x, y


def _loss(p, x, y):
    z = x @ p["w"] + p["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z)


def _grad(p, x, y, leaf=None, factor=1.0, out_dtype=None):
    z = x @ p["w"] + p["b"]  # computed in the parameters' dtype, as a user's code is
    dz = (jax.nn.sigmoid(z) - y) / x.shape[0]
    g = {"b": jnp.sum(dz), "w": x.T @ dz}
    if leaf is not None:
        g[leaf] = (g[leaf] * factor).astype(out_dtype or g[leaf].dtype)
    return g


@pytest.mark.parametrize("dtype", HALF + ["float32"])
def test_a_correct_low_precision_gradient_passes(dtype):
    params, x, y = _logreg(dtype)
    report = verify.check(_grad, _loss, params, x, y)
    assert report.ok, str(report)
    # a 16-bit leaf is judged in float32 (jaxbp.verify.rounding), so its oracles run one up again
    judged = "float32" if dtype in HALF else dtype
    assert set(report.meta["judged_in"].values()) == {judged}
    assert set(report.meta["reference_dtypes"].values()) == {str(tolerance.reference_dtype(judged))}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("leaf", ["b", "w"])
def test_a_half_precision_gradient_ten_percent_off_in_one_leaf_fails(dtype, leaf):
    params, x, y = _logreg(dtype)
    report = verify.check(functools.partial(_grad, leaf=leaf, factor=1.1), _loss, params, x, y,
                          transforms=())  # fmt: skip
    assert report.failed == [f"['{leaf}']"]
    assert {f.oracle for f in report.failures} == {"rev", "fwd", "fd"}


@pytest.mark.parametrize("dtype", HALF)
def test_a_half_precision_mlp_gradient_passes_and_its_bug_fails(dtype):
    params, x, y = numpy_problem([6, 8, 4], dtype=dtype, m=32, seed=5)
    kw = dict(activation="tanh")
    grad, loss = (functools.partial(f, **kw) for f in (jaxbp.value_and_grad, jaxbp.cost))
    assert verify.check(grad, loss, params, x, y, transforms=()).ok

    def wrong(p, x_, y_):
        J, g = grad(p, x_, y_)
        return J, (g[0], jaxbp.Layer(g[1].W * 1.1, g[1].b))

    assert verify.check(wrong, loss, params, x, y, transforms=()).failed == ["[1].W"]


def test_the_tolerance_follows_the_parameter_not_the_returned_dtype():
    params, x, y = _logreg("float32")
    # float16 gradient for a float32 parameter, 5 % off: float16's tolerance would pass it
    wrong = functools.partial(_grad, leaf="w", factor=1.05, out_dtype=jnp.float16)
    report = verify.check(wrong, _loss, params, x, y, transforms=())
    assert report.failed == ["['w']"]
    dtype_row = next(r for r in report.rows if r.oracle == "grad_fn")
    assert "returned dtype float16, the parameter has dtype float32" in dtype_row.problem
    rev = next(r for r in report.rows if r.oracle == "rev" and r.path == "['w']")
    assert rev.rtol == tolerance.default_rtol("float32") and not rev.ok
    # the right values in the wrong dtype: only the dtype row fails
    exact = functools.partial(_grad, leaf="w", out_dtype=jnp.float64)
    only_dtype = verify.check(exact, _loss, params, x, y, transforms=())
    assert [f.oracle for f in only_dtype.failures] == ["grad_fn"]
