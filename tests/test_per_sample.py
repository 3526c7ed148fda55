"""The lecture's per-sample loop (B5) with lax.scan, and per-example gradients with vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from helpers import RTOL_F64, assert_tree_close
from test_backprop import make_problem


@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
@pytest.mark.parametrize("depth", [0, 2])
def test_scanned_equals_batched_equals_mean_of_per_example(output, depth):
    params, x, y = make_problem(depth, output, seed=7)
    kw = dict(activation="tanh", output=output)
    J_b, g_b = jaxbp.value_and_grad(params, x, y, **kw, l2=0.4)
    J_s, g_s = jaxbp.scan_value_and_grad(params, x, y, **kw, l2=0.4)
    np.testing.assert_allclose(J_s, J_b, rtol=RTOL_F64)
    assert_tree_close(g_s, g_b, RTOL_F64)

    per = jaxbp.per_example_grads(params, x, y, **kw)
    assert all(leaf.shape[0] == x.shape[0] for leaf in jax.tree.leaves(per))
    _, g_plain = jaxbp.value_and_grad(params, x, y, **kw)  # per-example grads carry no l2
    assert_tree_close(jax.tree.map(lambda g: jnp.mean(g, axis=0), per), g_plain, RTOL_F64)


def test_per_example_equals_vmap_of_jax_grad():
    params, x, y = make_problem(3, "sigmoid_bce", seed=8)
    kw = dict(activation="elu", output="sigmoid_bce")
    per = jaxbp.per_example_grads(params, x, y, **kw)
    auto = jax.vmap(lambda xi, yi: jax.grad(jaxbp.cost)(params, xi[None], yi[None], **kw))(x, y)
    assert_tree_close(per, auto, RTOL_F64)


def test_scan_batch_of_one_and_under_jit():
    params, x, y = make_problem(1, "softmax_ce", m=1)
    f = jax.jit(lambda p, x, y: jaxbp.scan_value_and_grad(p, x, y, activation="relu"))
    J, g = f(params, x, y)
    J_ad, g_ad = jaxbp.autodiff_value_and_grad(params, x, y, activation="relu")
    np.testing.assert_allclose(J, J_ad, rtol=RTOL_F64)
    assert_tree_close(g, g_ad, RTOL_F64)


def test_scan_float32_keeps_dtype():
    params, x, y = make_problem(2, "softmax_ce", dtype=jnp.float32)
    J, g = jaxbp.scan_value_and_grad(params, x, y)
    assert J.dtype == jnp.float32 and all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))
