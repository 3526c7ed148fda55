"""A network of layers under an output layer: J, δ^(L) = (ŷ − y)/m, the hand gradient D, and the
custom_vjp loss (eqs. C1–C4, R1–R2, L5)."""

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxbp import layers
from jaxbp.losses import OUTPUTS
from jaxbp.verify import check_custom_vjp

F64 = jnp.float64
RTOL = 1e-12


def _problem(output="softmax_ce", m=6):
    model = layers.Sequential(layers.Dense(5, dtype=F64), layers.Tanh(), layers.Dense(3, dtype=F64))
    params, _ = model.init(jax.random.key(0), (4,))
    x = jax.random.normal(jax.random.key(1), (m, 4), F64)
    if output == "softmax_ce":
        y = jax.nn.one_hot(jnp.arange(m) % 3, 3, dtype=F64)
    elif output == "sigmoid_bce":
        y = (jax.random.uniform(jax.random.key(2), (m, 3)) < 0.5).astype(F64)
    else:
        y = jax.random.normal(jax.random.key(2), (m, 3), F64)
    return model, params, x, y


def _max_rel(a, b):
    return max(
        float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("l2", [None, 0.7])
@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_hand_gradient_equals_autodiff(output, l2):
    model, params, x, y = _problem(output)
    (J, _), grads = layers.value_and_grad(model, params, x, y, output=output, l2=l2)
    (J_ad, _), grads_ad = layers.autodiff_value_and_grad(model, params, x, y, output=output, l2=l2)
    assert jnp.allclose(J, J_ad, rtol=RTOL, atol=0)
    assert _max_rel(grads, grads_ad) < RTOL
    assert J == layers.cost(model, params, x, y, output=output, l2=l2)


def test_penalty_is_off_the_bias():
    model, params, x, y = _problem()
    with_l2 = layers.value_and_grad(model, params, x, y, output="softmax_ce", l2=2.0)[1]
    without = layers.value_and_grad(model, params, x, y, output="softmax_ce")[1]
    for w, wo, p in zip(with_l2, without, params, strict=True):
        if p == ():
            continue
        assert jnp.array_equal(w["b"], wo["b"])  # no (λ/m) b term
        assert jnp.allclose(w["W"] - wo["W"], (2.0 / 6) * p["W"], rtol=1e-13)
    expected = (2.0 / 12) * sum(jnp.sum(p["W"] ** 2) for p in params if p != ())
    assert jnp.allclose(layers.penalty(params, 2.0, 6), expected, rtol=1e-14)


def test_custom_vjp_loss_runs_the_hand_backward_under_grad_jit_and_vmap():
    model, params, x, y = _problem()

    def J(p, x, y):
        return layers.loss(model, p, x, y, output="softmax_ce", l2=0.5)

    ref = layers.autodiff_value_and_grad(model, params, x, y, output="softmax_ce", l2=0.5)[1]
    assert _max_rel(jax.grad(J)(params, x, y), ref) < RTOL
    assert _max_rel(jax.jit(jax.grad(J))(params, x, y), ref) < RTOL
    # per-example gradients: vmap over rows, each a batch of one
    per = jax.vmap(jax.grad(J), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    mean_of_per = jax.tree.map(lambda g: jnp.mean(g, axis=0), per)
    no_l2 = layers.autodiff_value_and_grad(model, params, x, y, output="softmax_ce")[1]
    l2_part = jax.tree.map(lambda a, b: a - b, ref, no_l2)
    # each row's penalty is λ/(2·1) Σ W², so the mean of per-example grads carries λW, not λW/m
    scaled = jax.tree.map(lambda n, d: n + 6 * d, no_l2, l2_part)
    assert _max_rel(mean_of_per, scaled) < RTOL


def test_custom_vjp_loss_passes_the_generic_checker():
    model, params, x, y = _problem("sigmoid_bce")
    report = check_custom_vjp(
        lambda p, x, y, l2: layers.loss(model, p, x, y, output="sigmoid_bce", l2=l2),
        lambda p, x, y, l2: layers.cost(model, p, x, y, output="sigmoid_bce", l2=l2),
        params,
        x,
        y,
        jnp.asarray(0.3, F64),
    )
    assert report.ok, report


def test_an_optax_step_on_the_hand_gradient_is_the_autodiff_step():
    model, params, x, y = _problem()
    opt = optax.adam(1e-2)
    state = opt.init(params)
    g_hand = layers.value_and_grad(model, params, x, y, output="softmax_ce")[1]
    g_ad = layers.autodiff_value_and_grad(model, params, x, y, output="softmax_ce")[1]
    p_hand = optax.apply_updates(params, opt.update(g_hand, state, params)[0])
    p_ad = optax.apply_updates(params, opt.update(g_ad, state, params)[0])
    assert _max_rel(p_hand, p_ad) < RTOL


def test_predict_is_the_argmax_of_the_logits():
    model, params, x, _ = _problem()
    logits = model.forward(params, x)[0]
    assert jnp.array_equal(layers.predict(model, params, x), jnp.argmax(logits, axis=-1))


def test_bad_targets_and_models_are_named():
    model, params, x, y = _problem()
    with pytest.raises(ValueError, match=r"y: 4 rows for 6 rows of x; x and y row counts differ"):
        layers.value_and_grad(model, params, x, y[:4], output="softmax_ce")
    with pytest.raises(ValueError, match=r"y: width 2 differs from the output layer's width 3"):
        layers.value_and_grad(model, params, x, y[:, :2], output="softmax_ce")
    with pytest.raises(TypeError, match="model: must be a jaxbp.layers.Layer"):
        layers.loss(print, params, x, y, output="softmax_ce")
    with pytest.raises(ValueError, match="output: unknown name 'hinge'"):
        layers.cost(model, params, x, y, output="hinge")
