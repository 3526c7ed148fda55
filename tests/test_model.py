"""jaxbp.model: the MLP and the CNN as a Model (init, value_and_grad, autodiff, cost, logits)
that the trainer treats alike; jaxbp.train_steps: the per-minibatch epoch equals the scanned one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import RTOL_F64, assert_tree_close

import jaxbp
from jaxbp import model as M
from jaxbp import train as T
from jaxbp.optim import make_optimizer

CNN = dict(channels=(2, 3), kernel_size=3, hidden=(5,))


def batch(m=6, n=36, k=4, seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(m, n)), dtype)
    y = jax.nn.one_hot(rng.integers(0, k, m), k, dtype=dtype)
    return x, y


@pytest.mark.parametrize("l2", [None, 0.7])
def test_cnn_hand_gradient_equals_autodiff_in_float64(l2):
    net = M.cnn((6, 6, 1), 4, dtype=jnp.float64, **CNN)
    params = net.init(jax.random.key(0))
    x, y = batch()
    J, grads = net.value_and_grad(params, x, y, l2=l2)
    J_ad, grads_ad = net.autodiff(params, x, y, l2=l2)
    J_cost, logits = net.cost(params, x, y, l2=l2)
    assert abs(float(J - J_ad)) <= RTOL_F64 * abs(float(J_ad))
    assert abs(float(J - J_cost)) <= RTOL_F64 * abs(float(J_ad))
    assert_tree_close(grads, grads_ad, RTOL_F64)
    assert logits.shape == (6, 4)
    np.testing.assert_array_equal(logits, net.logits(params, x))


def test_cnn_reads_each_row_as_a_row_major_image():
    net = M.cnn((4, 6, 2), 3, dtype=jnp.float64, channels=(2,), kernel_size=3, hidden=())
    params = net.init(jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (5, 4, 6, 2), jnp.float64)
    from jaxbp.layers.models import lenet

    direct = lenet(3, channels=(2,), kernel_size=3, hidden=(), dtype=jnp.float64)
    want = direct.forward(params, images, train=False)[0]
    np.testing.assert_array_equal(net.logits(params, images.reshape(5, -1)), want)


def test_cnn_sources_and_l2_only_on_weights():
    x, y = batch()
    nets = {g: M.cnn((6, 6, 1), 4, dtype=jnp.float64, grad=g, **CNN) for g in
            ("manual", "autodiff", "custom_vjp")}  # fmt: skip
    params = nets["manual"].init(jax.random.key(3))
    base = nets["manual"].value_and_grad(params, x, y, l2=None)[1]
    for g, net in nets.items():
        J, grads = net.value_and_grad(params, x, y, l2=2.0)
        assert_tree_close(grads, nets["autodiff"].autodiff(params, x, y, l2=2.0)[1], RTOL_F64)
        # D = (1/m)Δ + (λ/m)W on the W… leaves; biases untouched by λ
        for (path, d), d0, w in zip(
            jax.tree_util.tree_flatten_with_path(grads)[0],
            jax.tree.leaves(base),
            jax.tree.leaves(params),
            strict=True,
        ):
            expected = d0 + (2.0 / 6) * w if M.is_weight(path) else d0
            np.testing.assert_allclose(d, expected, rtol=1e-12, atol=1e-15, err_msg=g)
    with pytest.raises(ValueError, match="per_sample"):
        M.cnn((6, 6, 1), 4, grad="per_sample", **CNN)


def test_cnn_dropout_needs_a_key_and_both_sides_draw_the_same_masks():
    net = M.cnn((6, 6, 1), 4, dtype=jnp.float64, dropout=0.5, **CNN)
    assert net.stochastic and net.name.endswith("dropout 0.5")
    params = net.init(jax.random.key(0))
    x, y = batch()
    k1, k2 = jax.random.key(1), jax.random.key(2)
    J, grads = net.value_and_grad(params, x, y, l2=0.3, key=k1)
    J_ad, grads_ad = net.autodiff(params, x, y, l2=0.3, key=k1)
    assert abs(float(J - J_ad)) <= RTOL_F64 * abs(float(J_ad))
    assert_tree_close(grads, grads_ad, RTOL_F64)
    assert_tree_close(net.value_and_grad(params, x, y, l2=0.3, key=k1)[1], grads, 0.0)
    other = net.value_and_grad(params, x, y, l2=0.3, key=k2)[1]
    assert not np.allclose(other[-1]["W"], grads[-1]["W"])  # another key, other masks
    # evaluation has no dropout: the logits do not depend on any key
    np.testing.assert_array_equal(net.cost(params, x, y)[1], net.logits(params, x))
    with pytest.raises(ValueError, match="^key: this cnn has dropout 0.5"):
        net.value_and_grad(params, x, y)
    assert not M.cnn((6, 6, 1), 4, **CNN).stochastic


def test_cnn_shift_is_a_training_draw_only():
    """--shift: RandomShift applied to the training images, drawn from the key like dropout;
    the hand gradient equals autodiff's at the same key, the parameters are the unshifted
    cnn's, and evaluation never shifts."""
    net = M.cnn((6, 6, 1), 4, dtype=jnp.float64, shift=1, **CNN)
    assert net.stochastic and net.name.endswith("relu shift 1")
    params = net.init(jax.random.key(0))
    x, y = batch()
    k = jax.random.key(5)
    J, grads = net.value_and_grad(params, x, y, l2=0.3, key=k)
    J_ad, grads_ad = net.autodiff(params, x, y, l2=0.3, key=k)
    assert abs(float(J - J_ad)) <= RTOL_F64 * abs(float(J_ad))
    assert_tree_close(grads, grads_ad, RTOL_F64)
    plain = M.cnn((6, 6, 1), 4, dtype=jnp.float64, **CNN)
    assert jax.tree.structure(plain.init(jax.random.key(0))) == jax.tree.structure(params)
    np.testing.assert_array_equal(net.logits(params, x), plain.logits(params, x))
    np.testing.assert_array_equal(net.cost(params, x, y)[0], plain.cost(params, x, y)[0])
    # the shifted batch is another batch: the training cost differs from the unshifted one
    assert float(J) != float(plain.value_and_grad(params, x, y, l2=0.3)[0])
    # the translation is the layer's, drawn from the key folded off the run's key
    from jaxbp.layers import RandomShift

    moved = RandomShift(1).forward((), x.reshape(6, 6, 6, 1), key=jax.random.fold_in(k, 1),
                                   train=True)[0]  # fmt: skip
    J_moved = plain.value_and_grad(params, moved.reshape(6, -1), y, l2=0.3)[0]
    assert abs(float(J - J_moved)) <= RTOL_F64 * abs(float(J))
    both = M.cnn((6, 6, 1), 4, dtype=jnp.float64, shift=2, dropout=0.5, **CNN)
    with pytest.raises(ValueError, match="^key: this cnn has dropout 0.5 and shift 2;"):
        both.value_and_grad(params, x, y)


def test_cnn_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^image_shape: must be \(H, W, C\)"):
        M.cnn((8, 8), 10, **CNN)
    with pytest.raises(ValueError, match=r"^image_shape"):
        M.cnn((8, 0, 1), 10, **CNN)
    for shift in (-1, 8, 1.5, True):
        with pytest.raises(ValueError, match=r"^shift: must be an int in \[0, 8\) for 8×8"):
            M.cnn((8, 8, 1), 10, shift=shift, **CNN)


def test_mlp_model_is_the_delta_recursion():
    x, y = batch(n=5)
    net = M.mlp((5, 7, 4), activation="tanh", dtype=jnp.float64, scheme="glorot")
    params = net.init(jax.random.key(0))
    J, grads = net.value_and_grad(params, x, y, l2=1.5)
    J0, grads0 = jaxbp.value_and_grad(params, x, y, activation="tanh", output="softmax_ce", l2=1.5)
    assert float(J) == float(J0)
    assert_tree_close(grads, grads0, 0.0)
    assert_tree_close(grads, net.autodiff(params, x, y, l2=1.5)[1], RTOL_F64)
    assert net.no_penalty and net.name == "mlp 5-7-4 tanh"
    with pytest.raises(ValueError, match="^sizes:"):
        M.mlp().init(jax.random.key(0))


def test_step_keys_differ_by_step_epoch_and_run_and_not_the_minibatch_order():
    key = jax.random.key(7)
    data = lambda k: tuple(np.asarray(jax.random.key_data(k)).ravel())  # noqa: E731
    keys = {data(T.step_key(key, e, i)) for e in range(3) for i in range(4)}
    keys |= {data(T.step_key(jax.random.key(8), 0, 0))}
    keys |= {data(jax.random.fold_in(key, e)) for e in range(3)}  # the minibatch order's keys
    assert len(keys) == 3 * 4 + 1 + 3
    assert data(T.step_key(key, 1, 2)) == data(T.step_key(key, 1, 2))


def test_square_image_and_is_weight():
    assert M.square_image(64) == (8, 8, 1) and M.square_image(784) == (28, 28, 1)
    assert M.square_image(63) is None and M.square_image(1) is None
    net = M.cnn((6, 6, 1), 4, **CNN)
    flat = jax.tree_util.tree_flatten_with_path(net.init(jax.random.key(0)))[0]
    names = {jax.tree_util.keystr(p): M.is_weight(p) for p, _ in flat}
    assert names and all(v == ("'W'" in k) for k, v in names.items()), names
    mlp_params = jaxbp.init_params(jax.random.key(0), [3, 4, 2])
    flags = [M.is_weight(p) for p, _ in jax.tree_util.tree_flatten_with_path(mlp_params)[0]]
    assert flags == [True, False, True, False]


@pytest.mark.parametrize("batch_size, dropout", [(4, 0.0), (None, 0.0), (4, 0.4)])
def test_per_minibatch_epoch_equals_the_scanned_epoch(batch_size, dropout):
    """train_steps.compile_steps: the same minibatch order, dropout masks, update and
    evaluation as compile_step's lax.scan + vmap epoch — equal up to rounding (float64, 2 seeds,
    2 epochs)."""
    from jaxbp.train_steps import compile_steps

    x, y = batch(m=10)
    x_val, y_val = batch(m=5, seed=1)
    net = M.cnn((6, 6, 1), 4, dtype=jnp.float64, dropout=dropout, **CNN)
    opt = make_optimizer("adam", lr=1e-2, schedule="cosine", total_steps=10)
    epoch = T.make_epoch(opt, net, batch_size=batch_size, l2=0.5)
    scanned = T.compile_step(T.make_step(epoch, model=net, l2=0.5, patience=0))
    stepped = compile_steps(opt, net, batch_size=batch_size, l2=0.5, patience=0)

    def init(seed, model=net):
        state = T.init_state(jax.random.key(seed), model, opt)
        return state, T.init_early_stop(state.params)

    results = []
    for step in (scanned, stepped):
        state, stop = jax.jit(jax.vmap(init))(jnp.arange(2, dtype=jnp.uint32))
        for _ in range(2):
            state, stop, metrics = step(state, stop, x, y, x_val, y_val)
        results.append((state.params, stop, metrics))
    (p1, b1, m1), (p2, b2, m2) = results
    assert_tree_close(p2, p1, 1e-10)
    if dropout:  # the masks change the trajectory: the same network (so the same initial
        # weights) with a rate of 1e-9 keeps every unit and ends elsewhere
        keep_all = M.cnn((6, 6, 1), 4, dtype=jnp.float64, dropout=1e-9, **CNN)
        step = compile_steps(opt, keep_all, batch_size=batch_size, l2=0.5, patience=0)
        seeds = jnp.arange(2, dtype=jnp.uint32)
        state, stop = jax.jit(jax.vmap(lambda s: init(s, keep_all)))(seeds)
        for _ in range(2):
            state, stop, _ = step(state, stop, x, y, x_val, y_val)
        assert not np.allclose(state.params[-1]["W"], p1[-1]["W"], rtol=1e-3)
    assert_tree_close(b2, b1, 1e-10)
    for a, b in zip(m2, m1, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10)
