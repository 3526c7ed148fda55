"""jaxbp.sources: the one registry of gradient sources, and the explicit "no penalty" (l2=None)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import RTOL_F64, assert_tree_close
from jaxbp import sources
from jaxbp import train as T
from jaxbp.bench import methods
from jaxbp.verify.mlp import verify as V
from test_backprop import make_problem


def test_names_one_registry_read_by_every_tool():
    assert sources.NAMES == ("manual", "autodiff", "graph", "scan", "custom_vjp", "vmap")
    assert set(sources.DESCRIPTIONS) == set(sources.SOURCES)
    assert all(d and "\n" not in d for d in sources.DESCRIPTIONS.values())
    assert sources.source("manual") is jaxbp.value_and_grad
    assert sources.source("autodiff") is jaxbp.autodiff_value_and_grad
    assert sources.source("scan") is jaxbp.scan_value_and_grad
    for name in T.GRAD_SOURCES:
        assert T.gradient_source(name) is sources.source(name)
    for name in V.GRAD_SOURCES:
        assert V.gradient_source(name) is sources.source(name)
    assert set(methods.METHOD_SOURCES.values()) <= set(sources.NAMES)
    assert methods.JAX_METHODS == ("hand", "scan", "vmap", "custom_vjp", "autodiff", "hand_bf16")
    with pytest.raises(TypeError):
        sources.SOURCES["new"] = jaxbp.value_and_grad  # read-only


@pytest.mark.parametrize("name", ["numeric", "", "hand", 3])
def test_unknown_name_names_the_argument_and_lists_the_sources(name):
    with pytest.raises(ValueError, match=r"^grad: unknown .*; valid sources are manual, autodiff, "
                       r"graph, scan, custom_vjp, vmap$"):  # fmt: skip
        sources.source(name)
    with pytest.raises(ValueError, match=r"valid sources are manual, autodiff, graph, scan, "
                       r"custom_vjp, vmap$"):  # fmt: skip
        T.gradient_source(name)
    assert T.GRAD_SOURCES == sources.NAMES  # training takes every source


@pytest.mark.parametrize("name", sources.NAMES)
@pytest.mark.parametrize("l2", [None, 0.0, 0.3])
def test_every_source_has_the_value_and_grad_contract(name, l2):
    params, x, y = make_problem(2, "softmax_ce", seed=5)
    kw = dict(activation="tanh", output="softmax_ce", l2=0.0 if l2 is None else l2)
    J_ref, g_ref = jax.value_and_grad(jaxbp.cost)(params, x, y, **kw)
    J, g = sources.source(name)(params, x, y, activation="tanh", l2=l2)
    np.testing.assert_allclose(J, J_ref, rtol=RTOL_F64)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    assert_tree_close(g, g_ref, RTOL_F64)


@pytest.mark.parametrize("name", sources.NAMES)
def test_under_jit_with_no_penalty(name):
    params, x, y = make_problem(1, "sigmoid_bce", seed=2)
    kw = dict(activation="elu", output="sigmoid_bce")
    fn = sources.source(name)
    J, g = jax.jit(lambda p: fn(p, x, y, **kw, l2=None))(params)
    J0, g0 = fn(params, x, y, **kw)  # the default is no penalty
    np.testing.assert_allclose(J, J0, rtol=RTOL_F64)
    assert_tree_close(g, g0, RTOL_F64)


def test_no_penalty_is_explicit_and_zero_is_an_ordinary_lambda():
    """l2=None leaves the penalty out — no Σ W² pass; l2=0.0, of any type, is a number λ = 0:
    the penalty is computed and is zero. Both give the same values."""
    params, x, y = make_problem(2, "softmax_ce", seed=3)

    def n_squares(l2):
        jaxpr = jax.make_jaxpr(lambda p: jaxbp.value_and_grad(p, x, y, l2=l2))(params)
        return str(jaxpr).count("integer_pow") + str(jaxpr).count("mul")

    fewer = n_squares(None)
    for zero in (0.0, 0, np.float64(0), jnp.zeros((), jnp.float64)):
        assert n_squares(zero) > fewer
        J0, g0 = jaxbp.value_and_grad(params, x, y, l2=zero)
        J, g = jaxbp.value_and_grad(params, x, y)
        assert float(J0) == float(J)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g),
                                                        strict=True))  # fmt: skip
    assert jaxbp.cost(params, x, y) == jaxbp.cost(params, x, y, l2=0.0)


def test_loss_without_penalty_has_no_l2_cotangent():
    params, x, y = make_problem(1, "identity_mse", seed=4)
    kw = dict(activation="tanh", output="identity_mse")
    g_none = jax.grad(jaxbp.loss)(params, x, y, **kw, l2=None)
    g_zero, dl2 = jax.grad(lambda p, l2: jaxbp.loss(p, x, y, **kw, l2=l2), argnums=(0, 1))(
        params, jnp.zeros((), jnp.float64)
    )
    assert_tree_close(g_none, g_zero, RTOL_F64)
    np.testing.assert_allclose(dl2, sum(float(jnp.sum(p.W**2)) for p in params) / (2 * x.shape[0]))


def test_bench_methods_read_the_registry():
    params, x, y = make_problem(1, "softmax_ce", seed=6)
    J_ref, g_ref = jaxbp.value_and_grad(params, x, y, activation="relu")
    for method in methods.METHOD_SOURCES:
        J, g = methods.value_and_grad_fn(method, "relu")(params, x, y)
        np.testing.assert_allclose(J, J_ref, rtol=RTOL_F64)
        assert_tree_close(g, g_ref, RTOL_F64)
    # hand_bf16 is not a registry source: jaxbp.value_and_grad with precision="bf16"
    bf16 = methods.value_and_grad_fn(methods.BF16_METHOD, "relu")
    J, g = bf16(*jax.tree.map(lambda a: a.astype(jnp.float32), (params, x)), y)
    _, g_want = jaxbp.value_and_grad(
        *jax.tree.map(lambda a: a.astype(jnp.float32), (params, x)), y, activation="relu",
        precision="bf16",
    )  # fmt: skip
    assert_tree_close(g, g_want, 0.0)
    with pytest.raises(ValueError, match="method: unknown JAX method 'manual'"):
        methods.value_and_grad_fn("manual", "relu")
