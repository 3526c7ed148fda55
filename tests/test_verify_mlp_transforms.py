"""The hand gradient eager, under jit, vmap, jit∘vmap; mean of per-example = batch (V7); the
recompilation guard (V8)."""

import jax
import jax.numpy as jnp
import pytest

import jaxbp
from jaxbp import verify
from verify_support import numpy_problem

KW = dict(activation="sigmoid", output="softmax_ce", l2=0.3)
ORACLES = ["eager", "jit", "vmap", "jit∘vmap", "mean(vmap) = batch", "recompilation"]


def _problem(dtype=jnp.float64):
    return numpy_problem([4, 5, 3], dtype=dtype, m=6, seed=4)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_jaxbp_passes_under_every_transformation(dtype):
    params, x, y = _problem(dtype)
    report = verify.check_transforms(params, x, y, **KW)
    assert report.ok, str(report)
    assert list(dict.fromkeys(r.oracle for r in report.rows)) == ORACLES
    vmap_rows = [r for r in report.rows if r.oracle == "vmap"]
    assert [r.shape for r in vmap_rows] == [(6, 5, 4), (6, 5), (6, 3, 5), (6, 3)]


def _forgot_one_over_m(params, x, y, **kw):
    """The δ recursion seeded with ŷ − y instead of (ŷ − y)/m (the λ term still right)."""
    J, g = jaxbp.value_and_grad(params, x, y, **kw)
    m = 1 if x.ndim == 1 else x.shape[0]
    return J, tuple(
        jaxbp.Layer(m * (gl.W - kw["l2"] / m * p.W) + kw["l2"] / m * p.W, m * gl.b)
        for gl, p in zip(g, params, strict=True)
    )


def test_mean_of_per_example_catches_a_missing_one_over_m():
    params, x, y = _problem()
    report = verify.check_transforms(params, x, y, value_and_grad_fn=_forgot_one_over_m, **KW)
    failing = {r.oracle for r in report.rows if not r.ok}
    # single examples (m = 1) cannot see it; the batch and the mean of per-example can
    assert failing == {"eager", "jit", "mean(vmap) = batch"}
    assert report.failed == ["[0].W", "[0].b", "[1].W", "[1].b"]
    with pytest.raises(AssertionError, match="mean\\(vmap\\) = batch"):
        report.raise_if_failed()


def _fresh_jit_each_call(params, x, y, **kw):
    """Correct values, but a new jax.jit per call: recompiles on every eager call."""
    return jax.jit(lambda p, x_, y_: jaxbp.value_and_grad(p, x_, y_, **kw))(params, x, y)


def test_recompilation_guard_catches_a_compile_per_call():
    params, x, y = _problem()
    report = verify.check_transforms(params, x, y, value_and_grad_fn=_fresh_jit_each_call, **KW)
    guard = {r.path: r for r in report.rows if r.oracle == "recompilation"}
    assert not guard["(eager calls)"].ok and guard["(eager calls)"].value >= 2
    assert "unexpected compilations" in guard["(eager calls)"].problem
    assert guard["(jit traces)"].ok
    assert report.failed == ["(eager calls)"]


def test_compile_counter():
    f = jax.jit(lambda v: v * 3)
    a, b = jnp.ones(7), jnp.arange(7.0)  # made outside: creating arrays compiles too
    with verify.CompileCounter() as first:
        f(a).block_until_ready()
    with verify.CompileCounter() as again:
        f(b).block_until_ready()
    assert first.compiles >= 1 and first.traces >= 1
    assert again.compiles == 0 and again.traces == 0
