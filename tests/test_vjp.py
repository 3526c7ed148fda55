"""jaxbp.loss: the hand-derived backward pass registered as a jax.custom_vjp (B1–B4, B6)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxbp
from helpers import RTOL_F64, assert_tree_close
from test_backprop import make_problem


@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "softplus"])
def test_grad_of_loss_runs_our_derivation(activation, output):
    params, x, y = make_problem(2, output, seed=9)
    kw = dict(activation=activation, output=output, l2=0.2)
    J, g = jax.value_and_grad(jaxbp.loss)(params, x, y, **kw)
    J_ad, g_ad = jaxbp.autodiff_value_and_grad(params, x, y, **kw)
    np.testing.assert_allclose(J, J_ad, rtol=RTOL_F64)
    assert_tree_close(g, g_ad, RTOL_F64)


def test_custom_rule_is_the_one_used(monkeypatch):
    """jax.grad(jaxbp.loss) runs jaxbp's backward pass, not JAX's own reverse mode: doubling the
    δ recursion's output doubles the gradient."""
    import jaxbp.vjp

    params, x, y = make_problem(1, "softmax_ce")
    g = jax.grad(jaxbp.loss)(params, x, y)
    real = jaxbp.vjp.backward

    def doubled(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(grads=jax.tree.map(lambda t: 2 * t, out.grads))

    monkeypatch.setattr(jaxbp.vjp, "backward", doubled)
    g2 = jax.grad(jaxbp.loss)(params, x, y)
    assert_tree_close(g2, jax.tree.map(lambda t: 2 * t, g), 1e-15)


def test_check_grads_reverse_mode():
    params, x, y = make_problem(2, "softmax_ce", seed=10)
    check_grads(
        lambda p: jaxbp.loss(p, x, y, activation="tanh", l2=0.5), (params,), order=1, modes=["rev"]
    )


def test_input_cotangent_equals_autodiff():
    params, x, y = make_problem(3, "softmax_ce", seed=11)
    kw = dict(activation="tanh", output="softmax_ce")
    dx = jax.grad(jaxbp.loss, argnums=1)(params, x, y, **kw)
    dx_ad = jax.grad(jaxbp.cost, argnums=1)(params, x, y, **kw)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, dx_ad, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
def test_target_and_l2_cotangents_equal_autodiff(output):
    params, x, y = make_problem(1, output, seed=12)
    if output == "softmax_ce":
        y = jax.nn.one_hot(y, 3, dtype=jnp.float64)
    kw = dict(activation="sigmoid", output=output)
    f = lambda y, l2: jaxbp.loss(params, x, y, **kw, l2=l2)  # noqa: E731
    g = lambda y, l2: jaxbp.cost(params, x, y, **kw, l2=l2)  # noqa: E731
    dy, dl2 = jax.grad(f, argnums=(0, 1))(y, 0.3)
    dy_ad, dl2_ad = jax.grad(g, argnums=(0, 1))(y, 0.3)
    np.testing.assert_allclose(dy, dy_ad, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(dl2, dl2_ad, rtol=1e-12)


def test_upstream_cotangent_scales_everything():
    params, x, y = make_problem(2, "softmax_ce")
    _, vjp = jax.vjp(lambda p, x: jaxbp.loss(p, x, y, l2=0.1), params, x)
    g1, x1 = vjp(jnp.float64(1.0))
    g3, x3 = vjp(jnp.float64(-3.0))
    assert_tree_close(g3, jax.tree.map(lambda g: -3 * g, g1), 1e-14)
    np.testing.assert_allclose(x3, -3 * x1, rtol=1e-14)


def test_vmap_of_grad_gives_per_example_grads():
    params, x, y = make_problem(2, "softmax_ce", seed=13)
    per = jax.vmap(jax.grad(jaxbp.loss), in_axes=(None, 0, 0))(params, x, y)
    assert_tree_close(per, jaxbp.per_example_grads(params, x, y), RTOL_F64)


def test_jit_and_optax_training_step():
    params, x, y = make_problem(2, "softmax_ce", dtype=jnp.float32, seed=14)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        J, g = jax.value_and_grad(jaxbp.loss)(params, x, y, activation="relu")
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, J

    losses = []
    for _ in range(60):
        params, state, J = step(params, state)
        losses.append(float(J))
    assert losses[-1] < 0.5 * losses[0]


def test_integer_inputs_get_float0_cotangent():
    params, _, y = make_problem(1, "softmax_ce")
    x_int = jnp.arange(8 * 5).reshape(8, 5) % 3
    g = jax.grad(jaxbp.loss)(params, x_int, y)
    _, g_ad = jaxbp.autodiff_value_and_grad(params, x_int.astype(jnp.float64), y)
    assert_tree_close(g, g_ad, RTOL_F64)
