"""jaxbp.train and jaxbp.optim: trajectories, shuffling, early stopping, seeds, L-BFGS, shadow."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp import shadow as S
from jaxbp import train as T
from jaxbp.data import load_dataset, one_hot
from jaxbp.optim import DEFAULT_LR, make_optimizer, make_schedule, needs_value_fn

KW = dict(activation="tanh", output="softmax_ce")


def rtol_for(dtype) -> float:
    """float64: hand vs autodiff at 1e-12 per step, loosened for 20 steps of amplification;
    float32: 2^12 ulps of 1."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 4096 * float(jnp.finfo(dtype).eps)


def problem(dtype=jnp.float64, name="iris"):
    ds = load_dataset(name)
    k = ds.num_classes
    return (
        jnp.asarray(ds.x_train, dtype),
        jnp.asarray(one_hot(ds.y_train, k), dtype),
        jnp.asarray(ds.x_val, dtype),
        jnp.asarray(one_hot(ds.y_val, k), dtype),
    )


def max_rel(a, b) -> float:
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
        worst = max(worst, np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))
    return worst


def trajectory(grad, optimizer, data, *, batch_size, steps, dtype, sizes=(4, 8, 3)):
    epoch = jax.jit(
        T.make_epoch(optimizer, T.gradient_source(grad), batch_size=batch_size, l2=0.5, **KW)
    )
    state = T.init_state(jax.random.key(0), list(sizes), optimizer, scheme="glorot", dtype=dtype)
    params = [state.params]
    for _ in range(steps):
        state, _ = epoch(state, data[0], data[1])
        params.append(state.params)
    return params


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize(
    "optimizer, batch_size, steps",
    [(optax.sgd(0.5), None, 20), (optax.adam(1e-2), 27, 5)],  # 5 epochs × 4 minibatches = 20
    ids=["full-batch-gd", "minibatch-adam"],
)
def test_manual_and_autodiff_trajectories_agree_over_20_steps(dtype, optimizer, batch_size, steps):
    data = problem(dtype)
    manual = trajectory("manual", optimizer, data, batch_size=batch_size, steps=steps, dtype=dtype)
    auto = trajectory("autodiff", optimizer, data, batch_size=batch_size, steps=steps, dtype=dtype)
    assert len(manual) == steps + 1
    for i, (m, a) in enumerate(zip(manual, auto, strict=True)):
        err = max_rel(m, a)
        assert err <= rtol_for(dtype), f"epoch {i}: rel. error {err:.2e}"
    assert max_rel(manual[-1], manual[0]) > 1e-2  # the parameters did move


def test_graph_source_trajectory_matches_manual():
    data = problem()
    opt = optax.sgd(0.5)
    manual = trajectory("manual", opt, data, batch_size=None, steps=3, dtype=jnp.float64)
    graph = trajectory("graph", opt, data, batch_size=None, steps=3, dtype=jnp.float64)
    assert max_rel(graph[-1], manual[-1]) <= 1e-10


def test_gradient_source_names():
    assert T.gradient_source("manual") is jax_value_and_grad()
    with pytest.raises(ValueError, match="unknown 'numeric'; valid sources are manual, autodiff"):
        T.gradient_source("numeric")


def jax_value_and_grad():
    import jaxbp

    return jaxbp.value_and_grad


def test_minibatch_order_is_the_permutation_of_key_and_epoch():
    """An epoch equals plain SGD over the rows permuted by fold_in(key, epoch), in batches."""
    x, y, _, _ = problem()
    opt = optax.sgd(0.3)
    manual = T.gradient_source("manual")
    epoch = jax.jit(T.make_epoch(opt, manual, batch_size=25, **KW))
    state = T.init_state(jax.random.key(3), [4, 5, 3], opt, dtype=jnp.float64)
    state = state._replace(epoch=jnp.int32(7))
    new, _ = epoch(state, x, y)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(state.key, 7), x.shape[0]))
    params = state.params
    for rows in perm[:100].reshape(4, 25):
        _, g = manual(params, x[rows], y[rows], **KW)
        params = jax.tree.map(lambda p, d: p - 0.3 * d, params, g)
    assert max_rel(new.params, params) <= 1e-13
    assert int(new.epoch) == 8 and new.key is not None
    other, _ = epoch(state._replace(epoch=jnp.int32(8)), x, y)
    assert max_rel(other.params, new.params) > 1e-6  # another epoch, another order
    again, _ = epoch(state, x, y)
    same = zip(jax.tree.leaves(again[:2]), jax.tree.leaves(new[:2]), strict=True)
    assert all(np.array_equal(u, v) for u, v in same)  # deterministic


def test_epoch_counts_steps_and_drops_the_remainder():
    data = problem()
    opt = optax.sgd(0.1)
    state = T.init_state(jax.random.key(0), [4, 3], opt, dtype=jnp.float64)
    losses = []

    def counting(params, xb, yb, **kw):
        assert xb.shape[0] == 25  # 108 rows → 4 batches of 25, 8 rows left out
        return T.gradient_source("manual")(params, xb, yb, **kw)

    epoch = T.make_epoch(opt, counting, batch_size=25, **KW)
    new, (batch_loss, norm) = jax.jit(epoch)(state, data[0], data[1])
    losses.append(batch_loss)
    assert int(new.epoch) == 1 and np.isfinite(batch_loss) and norm > 0
    with pytest.raises(ValueError, match="batch_size: must be between 1 and the 108"):
        T.make_epoch(opt, counting, batch_size=500, **KW)(state, data[0], data[1])


def test_l2_is_the_full_training_set_term_for_every_batch_size():
    """With a zero data gradient (x = 0, b fixed) only the L2 term moves W: (λ/m) W per step,
    whatever the minibatch size."""
    opt = optax.sgd(1.0)
    x = jnp.zeros((12, 4))
    y = jnp.asarray(one_hot(np.arange(12) % 3, 3, np.float64))
    state = T.init_state(jax.random.key(0), [4, 3], opt, dtype=jnp.float64)
    results = []
    for batch in (None, 4):
        epoch = T.make_epoch(opt, T.gradient_source("manual"), batch_size=batch, l2=1.2, **KW)
        new, _ = jax.jit(epoch)(state, x, y)
        steps = 1 if batch is None else 3
        expected = state.params[0].W * (1 - 1.2 / 12) ** steps
        np.testing.assert_allclose(new.params[0].W, expected, rtol=1e-12)
        results.append(new)


@pytest.mark.parametrize("source", ["manual", "autodiff", "graph"])
def test_zero_l2_leaves_the_penalty_out_and_changes_nothing(source):
    """λ = 0 in the configuration reaches a registry source as the explicit no-penalty marker
    ``l2=None``, so the hand-derived gradient skips the penalty's pass over the weights; the
    epoch equals one whose source is given λ = 0 as an ordinary number."""
    opt = optax.adam(1e-2)
    data = problem()
    state = T.init_state(jax.random.key(3), [4, 8, 3], opt, scheme="glorot", dtype=jnp.float64)
    fn = T.gradient_source(source)
    seen = []

    def ordinary_zero(*args, l2, **kw):  # not a registry function: gets λ = 0.0, a number
        seen.append(l2)
        return fn(*args, l2=l2, **kw)

    plain = T.make_epoch(opt, fn, batch_size=27, l2=0.0, **KW)
    zero = T.make_epoch(opt, ordinary_zero, batch_size=27, l2=0.0, **KW)
    a, (loss_a, norm_a) = jax.jit(plain)(state, data[0], data[1])
    b, (loss_b, norm_b) = jax.jit(zero)(state, data[0], data[1])
    assert seen and all(type(l2) is float and l2 == 0.0 for l2 in seen)
    assert max_rel(a.params, b.params) <= 1e-14
    np.testing.assert_allclose([loss_a, norm_a], [loss_b, norm_b], rtol=1e-14)
    assert T.batch_l2(fn, 0.0, 27, 108, jnp.float64) is None
    assert T.batch_l2(fn, None, 27, 108, jnp.float64) is None
    assert T.batch_l2(fn, np.float32(0), 27, 108, jnp.float64) is None
    assert float(T.batch_l2(fn, 0.4, 27, 108, jnp.float64)) == pytest.approx(0.1)


def run_steps(step, state, stop, data, epochs):
    history = []
    for e, new_state, new_stop, metrics in T.fit(step, state, stop, data, epochs=epochs):
        state, stop = new_state, new_stop
        history.append((e, metrics))
    return state, stop, history


def seeded(seeds, sizes, opt, dtype=jnp.float64):
    def init(seed):
        state = T.init_state(jax.random.key(seed), sizes, opt, scheme="glorot", dtype=dtype)
        return state, T.init_early_stop(state.params)

    return jax.vmap(init)(jnp.asarray(seeds, jnp.uint32))


@pytest.mark.slow
def test_vmapped_seeds_equal_separate_runs():
    data = problem()
    opt = optax.adam(1e-2)
    step_fn = T.make_step(T.make_epoch(opt, T.gradient_source("manual"), batch_size=16, **KW), **KW)
    together = seeded([0, 1], [4, 6, 3], opt)
    together, _, hist = run_steps(T.compile_step(step_fn), *together, data, 3)
    assert np.asarray(hist[-1][1].train_loss).shape == (2,)
    single = T.compile_step(step_fn)
    for i, seed in enumerate([0, 1]):
        alone = seeded([seed], [4, 6, 3], opt)
        alone, _, _ = run_steps(single, *alone, data, 3)
        one = jax.tree.map(lambda a, i=i: a[i], together.params)
        assert max_rel(jax.tree.map(lambda a: a[0], alone.params), one) <= 1e-12


def test_early_stopping_freezes_a_seed_and_keeps_best_params():
    data = problem()
    opt = optax.sgd(0.5)
    step_fn = T.make_step(
        T.make_epoch(opt, T.gradient_source("manual"), batch_size=None, **KW), patience=2, **KW
    )
    step = T.compile_step(step_fn)
    state, stop = seeded([0, 1], [4, 5, 3], opt)
    # Seed 1 pretends it has already seen a validation loss of −1: it never improves again.
    stop = stop._replace(best_loss=stop.best_loss.at[1].set(-1.0))
    state, stop, history = run_steps(step, state, stop, data, 6)
    assert len(history) == 6  # seed 0 keeps improving, so the run goes on
    assert np.asarray(stop.active).tolist() == [True, False]
    assert np.asarray(state.epoch).tolist() == [6, 2]  # seed 1 frozen after 2 epochs
    assert int(stop.best_epoch[0]) == 6
    np.testing.assert_array_equal(stop.best_params[0].W[0], state.params[0].W[0])


def test_fit_stops_when_every_seed_stopped():
    data = problem()
    opt = optax.sgd(0.5)
    step = T.compile_step(
        T.make_step(
            T.make_epoch(opt, T.gradient_source("manual"), batch_size=None, **KW), patience=1, **KW
        )  # fmt: skip
    )
    state, stop = seeded([0], [4, 3], opt)
    stop = stop._replace(best_loss=jnp.full_like(stop.best_loss, -1.0))
    _, _, history = run_steps(step, state, stop, data, 10)
    assert [e for e, _ in history] == [1]


def test_fit_raises_on_a_nan_loss_naming_the_epoch():
    x, y, xv, yv = problem()
    opt = optax.sgd(0.1)
    step = T.compile_step(
        T.make_step(T.make_epoch(opt, T.gradient_source("manual"), batch_size=None, **KW), **KW)
    )
    state, stop = seeded([0, 1], [4, 3], opt)
    gen = T.fit(step, state, stop, (x.at[0, 0].set(jnp.nan), y, xv, yv), epochs=3)
    with pytest.raises(T.TrainingDiverged, match=r"epoch 1: the training loss is nan for seed"):
        next(gen)


@pytest.mark.slow
def test_lbfgs_full_batch_converges_with_hand_derived_line_search():
    x, y, _, _ = problem()
    opt = make_optimizer("lbfgs", lr=1.0)
    assert needs_value_fn("lbfgs")
    epoch = jax.jit(
        T.make_epoch(
            opt, T.gradient_source("manual"), batch_size=None, l2=1.0, uses_value_fn=True, **KW
        )  # fmt: skip
    )
    state = T.init_state(jax.random.key(0), [4, 6, 3], opt, scheme="glorot", dtype=jnp.float64)
    norms, losses = [], []
    for _ in range(80):
        state, (loss, norm) = epoch(state, x, y)
        losses.append(float(loss))
        norms.append(float(norm))
    assert norms[-1] < 1e-5 * norms[0]  # a stationary point of J(Θ)
    assert all(
        b <= a + 1e-12 for a, b in zip(losses[:-1], losses[1:], strict=True)
    )  # line search: monotone
    J, g = T.gradient_source("manual")(state.params, x, y, l2=1.0, **KW)
    assert float(T.global_norm(g)) < 1e-5


def test_lbfgs_rejects_minibatches():
    opt = make_optimizer("lbfgs", lr=1.0)
    with pytest.raises(ValueError, match="L-BFGS is a full-batch method"):
        T.make_epoch(opt, T.gradient_source("manual"), batch_size=32, uses_value_fn=True, **KW)


def test_custom_vjp_loss_differentiates_with_the_given_source():
    x, y, _, _ = problem()
    params = T.init_state(jax.random.key(1), [4, 5, 3], optax.sgd(1.0), dtype=jnp.float64).params
    manual = T.gradient_source("manual")

    def doubled(p, xb, yb, **kw):
        J, g = manual(p, xb, yb, **kw)
        return J, jax.tree.map(lambda t: 2 * t, g)

    l2 = jnp.asarray(0.3)
    g1 = jax.grad(T.make_loss_fn(manual, **KW))(params, x, y, l2)
    g2 = jax.grad(T.make_loss_fn(doubled, **KW))(params, x, y, l2)
    assert max_rel(g1, manual(params, x, y, l2=0.3, **KW)[1]) <= 1e-14
    assert max_rel(g2, jax.tree.map(lambda t: 2 * t, g1)) <= 1e-14


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_shadow_errors_within_tolerance(dtype):
    x, y, _, _ = problem(dtype)
    params = T.init_state(jax.random.key(1), [4, 7, 3], optax.sgd(1.0), dtype=dtype).params
    errors = jax.jit(lambda p: S.shadow_errors(p, x, y, l2=0.5, **KW))(params)
    assert set(errors) == {"J", "[0].W", "[0].b", "[1].W", "[1].b"}
    worst = S.check_shadow(jax.device_get(errors), dtype, epoch=1)
    assert worst <= S.shadow_tolerance(dtype)
    assert S.shadow_tolerance(jnp.float32) == pytest.approx(2**-11.5)


def test_shadow_catches_a_wrong_gradient():
    x, y, _, _ = problem()
    params = T.init_state(jax.random.key(1), [4, 7, 3], optax.sgd(1.0), dtype=jnp.float64).params
    manual = T.gradient_source("manual")

    def wrong(p, xb, yb, **kw):  # forgets the L2 term's gradient on the last layer
        J, g = manual(p, xb, yb, **kw)
        return J, (g[0], g[1]._replace(W=g[1].W - kw["l2"] / xb.shape[0] * p[1].W))

    errors = jax.jit(lambda p: S.shadow_errors(p, x, y, l2=5.0, hand=wrong, **KW))(params)
    errors = jax.device_get(errors)
    with pytest.raises(S.ShadowError, match=r"epoch 7: .* diverge at \[1\].W"):
        S.check_shadow(errors, jnp.float64, epoch=7)
    with pytest.raises(S.ShadowError, match="inf"):
        S.check_shadow({"J": np.nan}, jnp.float64, epoch=1)


def test_confusion_matrix():
    m = T.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2]), 3)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


# --- optim ---------------------------------------------------------------------------------------


def test_schedules():
    assert make_schedule("constant", 0.1, 100) == 0.1
    cos = make_schedule("cosine", 0.1, 100)
    assert float(cos(0)) == pytest.approx(0.1) and float(cos(100)) == pytest.approx(0.0)
    assert float(make_schedule("linear", 0.1, 100)(50)) == pytest.approx(0.05)
    assert float(make_schedule("exponential", 0.1, 100)(100)) == pytest.approx(0.001)
    warm = make_schedule("warmup_cosine", 0.1, 100)
    assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])  # lbfgs: above
def test_every_optimizer_reduces_the_loss(name):
    x, y, _, _ = problem()
    opt = make_optimizer(name, lr=DEFAULT_LR[name], total_steps=30)
    epoch = jax.jit(
        T.make_epoch(
            opt,
            T.gradient_source("manual"),
            batch_size=None,
            uses_value_fn=needs_value_fn(name),
            **KW,
        )  # fmt: skip
    )
    state = T.init_state(jax.random.key(0), [4, 6, 3], opt, scheme="glorot", dtype=jnp.float64)
    first = None
    for _ in range(30):
        state, (loss, _) = epoch(state, x, y)
        first = float(loss) if first is None else first
    J, _ = T.gradient_source("manual")(state.params, x, y, **KW)
    assert float(J) < 0.7 * first


def test_optimizer_errors():
    with pytest.raises(ValueError, match="unknown 'rmsprop'; valid names are sgd, momentum"):
        make_optimizer("rmsprop", lr=0.1)
    with pytest.raises(ValueError, match="line search"):
        make_optimizer("lbfgs", lr=1.0, schedule="cosine")
    with pytest.raises(ValueError, match="lr: must be > 0"):
        make_optimizer("sgd", lr=-1.0)
    with pytest.raises(ValueError, match="momentum: must be in"):
        make_optimizer("momentum", lr=0.1, momentum=1.5)
