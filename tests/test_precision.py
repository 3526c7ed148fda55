"""jaxbp.precision: the core's one product (bf16 operands → float32 accumulation) and the
hand-derived gradient with ``precision="bf16"``: bf16 products, float32 everything else."""

from __future__ import annotations

import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import max_rel_error

import jaxbp
from jaxbp.precision import bf16_grad_rtol, dot, dot_nt, dot_tn, row_major_transpose


def _rand(shape, seed, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def test_dot_accumulates_bf16_products_in_float32():
    a, b = _rand((64, 300), 0, jnp.bfloat16), _rand((300, 48), 1, jnp.bfloat16)
    got = dot(a, b)
    assert got.dtype == jnp.float32
    # the exact products of the rounded operands, summed in float64
    want = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    assert max_rel_error(got, want) < 300 * float(jnp.finfo(jnp.float32).eps)
    # a bf16 product (bf16 out) is far coarser: the float32 output is not a rounding of it
    assert max_rel_error(a @ b, want) > 10 * max_rel_error(got, want)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16])
def test_dot_leaves_every_other_dtype_as_written(dtype):
    a, b = _rand((5, 7), 2, dtype), _rand((7, 3), 3, dtype)
    assert dot(a, b).dtype == dtype
    np.testing.assert_array_equal(dot(a, b), a @ b)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_three_products_contract_the_right_axes(dtype):
    """dot = a b, dot_nt = a bᵀ, dot_tn = aᵀ b — jitted too (dot_tn's CPU branch for bf16)."""
    a, b, c = _rand((40, 24), 7, dtype), _rand((24, 16), 8, dtype), _rand((40, 16), 9, dtype)
    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    tol = 64 * float(jnp.finfo(jnp.float32).eps)  # float32 accumulation of exact bf16 products
    cases = {
        "dot": (dot, (a, b), f64(a) @ f64(b)),
        "dot_nt": (dot_nt, (c, b), f64(c) @ f64(b).T),
        "dot_tn": (dot_tn, (a, c), f64(a).T @ f64(c)),
    }
    for name, (fn, args, want) in cases.items():
        for run in (fn, jax.jit(fn)):
            got = run(*args)
            assert got.dtype == jnp.float32, name
            assert max_rel_error(got, want) < tol, name


def test_row_major_transpose_is_the_transpose():
    a = _rand((7, 5), 10, jnp.bfloat16)
    for run in (row_major_transpose, jax.jit(row_major_transpose)):
        np.testing.assert_array_equal(run(a), a.T)


SIZES = (20, 32, 16, 5)


@pytest.fixture(scope="module")
def problem():
    params = jaxbp.init_params(jax.random.key(4), SIZES, scheme="glorot")
    x = _rand((64, SIZES[0]), 5)
    y = jax.random.randint(jax.random.key(6), (64,), 0, SIZES[-1])
    return params, x, y


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("l2", [None, 0.7])
def test_bf16_gradient_is_within_its_bound_of_float32(problem, activation, l2):
    params, x, y = problem
    J, grads = jaxbp.value_and_grad(params, x, y, activation=activation, l2=l2)
    Jb, grads_b = jaxbp.value_and_grad(params, x, y, activation=activation, l2=l2, precision="bf16")
    # float32 master: J and every leaf float32, the structure of params
    assert Jb.dtype == jnp.float32
    assert jax.tree.structure(grads_b) == jax.tree.structure(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads_b))
    rtol = bf16_grad_rtol(len(params))
    for path, g, gb in zip(
        jax.tree_util.tree_flatten_with_path(grads)[0],
        jax.tree.leaves(grads),
        jax.tree.leaves(grads_b),
        strict=True,
    ):
        err = float(jnp.linalg.norm(gb - g) / jnp.linalg.norm(g))
        assert err <= rtol, (jax.tree_util.keystr(path[0]), err, rtol)
    assert abs(float(Jb - J)) <= rtol * abs(float(J))


def test_bf16_l2_term_uses_the_float32_master(problem):
    """(λ/m)W is added to the bf16-computed Δ/m on the master W: the difference between λ and
    no λ is exactly the float32 term, not a bf16 rounding of it."""
    params, x, y = problem
    _, g0 = jaxbp.value_and_grad(params, x, y, precision="bf16")
    _, g1 = jaxbp.value_and_grad(params, x, y, l2=3.0, precision="bf16")
    m = x.shape[0]
    for a, b, p in zip(g0, g1, params, strict=True):
        np.testing.assert_allclose(b.W - a.W, (3.0 / m) * p.W, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(b.b, a.b)


def test_every_product_of_the_bf16_step_takes_bf16_operands_and_returns_float32(problem):
    params, x, y = problem
    jaxpr = jax.make_jaxpr(
        lambda p: jaxbp.value_and_grad(p, x, y, activation="relu", precision="bf16")
    )(params)

    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn
        for sub in jax.extend.core.subjaxprs(jaxpr):
            yield from dots(sub)

    found = list(dots(jaxpr.jaxpr))
    L = len(params)
    # forward, Δ and (Θ^(l))ᵀ δ per layer (Δ's CPU and default branches both appear)
    assert len(found) >= 3 * L
    for eqn in found:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn


def test_float32_precision_is_the_plain_step(problem):
    params, x, y = problem
    J, grads = jaxbp.value_and_grad(params, x, y)
    J2, grads2 = jaxbp.value_and_grad(params, x, y, precision="float32")
    assert float(J) == float(J2)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_precision_is_named(problem):
    params, x, y = problem
    with pytest.raises(ValueError, match="^precision: unknown 'fp8'; valid precisions"):
        jaxbp.value_and_grad(params, x, y, precision="fp8")


def _compiled_dot_operand_dtypes(hlo: str) -> list[tuple[str, str]]:
    """(lhs, rhs) element types of every dot in an optimised HLO module's text."""
    defs = dict(re.findall(r"%(\S+) = (\w+)\[", hlo))
    return [(defs[a], defs[b]) for a, b in re.findall(r" dot\(%([^,\s]+), %([^)\s]+)\)", hlo)]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's compiled program")
@pytest.mark.parametrize("sizes, m", [((784, 64, 48, 10), 32), ((30, 40, 10), 200)])
def test_xla_cpu_keeps_every_bf16_product_in_bf16(sizes, m):
    """XLA:CPU upcasts a bf16 product it cannot hand to its bf16 kernels to float32 (correct, but
    at the float32 rate): written as jaxbp.precision's three products, none of the step's is."""
    params = jaxbp.init_params(jax.random.key(11), sizes)
    x = _rand((m, sizes[0]), 12)
    y = jax.random.randint(jax.random.key(13), (m,), 0, sizes[-1])
    step = jax.jit(lambda p: jaxbp.value_and_grad(p, x, y, activation="relu", precision="bf16"))
    dots = _compiled_dot_operand_dtypes(step.lower(params).compile().as_text())
    assert len(dots) >= 3 * len(params) - 1
    assert set(dots) == {("bf16", "bf16")}, dots
