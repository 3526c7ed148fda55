"""jaxbp.distributed in the single-device test process: the derivation (unscaled per-shard sums,
one reduction, then D = Δ/m + (λ/m)W), the code paths on a one-device mesh, and input checks.
Multi-device behaviour: tests/test_distributed_devices.py; multi-process:
tests/test_distributed_multihost.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import distributed_problem as prob
import jaxbp
import jaxbp.distributed as jd
from jaxbp.precision import cast_tree, compute_dtype

RTOL_F64 = 1e-12


def assert_close(actual, expected, rtol=RTOL_F64):
    for (path, e), a in zip(
        jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(actual), strict=True
    ):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype, (jax.tree_util.keystr(path), a, e)
        assert np.all(np.isfinite(a)), jax.tree_util.keystr(path)
        err = np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-300)
        assert err <= rtol, f"{jax.tree_util.keystr(path)}: rel. error {err:.2e} > {rtol:.0e}"


@pytest.fixture(scope="module")
def mesh1():
    return jd.data_mesh(1)


CASES = [
    ("softmax_ce", "tanh", 0.0),
    ("softmax_ce", ("relu", "sigmoid"), 0.7),
    ("sigmoid_bce", "sigmoid", 0.3),
    ("identity_mse", "elu", 0.0),
]


@pytest.mark.parametrize("output,activation,l2", CASES)
def test_data_parallel_matches_value_and_grad(mesh1, output, activation, l2):
    params, x, y = prob.problem(jnp.float64, output=output)
    J0, g0 = jaxbp.value_and_grad(params, x, y, activation=activation, output=output, l2=l2)
    J, g = jd.data_parallel_value_and_grad(
        mesh1, params, x, y, activation=activation, output=output, l2=l2
    )
    assert_close(J, J0)
    assert_close(g, g0)


@pytest.mark.parametrize("output,activation,l2", CASES)
def test_model_parallel_path_matches_value_and_grad(output, activation, l2):
    params, x, y = prob.problem(jnp.float64, output=output)
    J0, g0 = jaxbp.value_and_grad(params, x, y, activation=activation, output=output, l2=l2)
    J, g = jd.model_parallel_value_and_grad(
        jd.model_mesh(1, 1), params, x, y, activation=activation, output=output, l2=l2
    )
    assert_close(J, J0)
    assert_close(g, g0)


def test_shard_sums_are_the_unscaled_sums_over_real_rows():
    """Δ_s = Σ δ aᵀ with δ^(L) = ŷ − y unscaled, and masked rows contribute nothing (eq. B3)."""
    params, x, y = prob.problem(jnp.float64)
    real = 30
    mask = jnp.arange(x.shape[0]) < real
    cost_sum, Delta = jd.shard_sums(
        params, x, y, mask, activation=prob.ACTIVATION, output=prob.OUTPUT
    )
    J, D = jaxbp.value_and_grad(
        params, x[:real], y[:real], activation=prob.ACTIVATION, output=prob.OUTPUT
    )
    assert_close(cost_sum, real * J)
    assert_close(Delta, jax.tree.map(lambda d: real * d, D))


def test_psum_then_global_m_equals_one_big_batch():
    """Σ over shards of shard_sums, then /m and + (λ/m)W: the lecture's D for the whole batch."""
    params, x, y = prob.problem(jnp.float64)
    l2, kw = 0.4, dict(activation=prob.ACTIVATION, output=prob.OUTPUT)
    parts = [
        jd.shard_sums(params, x[s], y[s], jnp.ones(12), **kw)
        for s in (slice(0, 12), slice(12, 24), slice(24, 36), slice(36, 48))
    ]
    Delta = jax.tree.map(lambda *d: sum(d), *[p[1] for p in parts])
    m = x.shape[0]
    D = jaxbp.backprop.add_l2_grad(jax.tree.map(lambda d: d / m, Delta), params, l2, m)
    assert_close(D, jaxbp.value_and_grad(params, x, y, l2=l2, **kw)[1])


def test_data_parallel_train_on_one_device_matches_reference(mesh1):
    params, x, y = prob.problem(jnp.float64)
    expected, losses = prob.reference_run("float64")
    final, got_losses = jd.data_parallel_train(
        mesh1,
        params,
        x,
        y,
        optimizer=prob.optimizer(),
        steps=prob.STEPS,
        batch_size=prob.BATCH,
        activation=prob.ACTIVATION,
        output=prob.OUTPUT,
        l2=prob.L2,
    )
    assert_close(final, expected)
    np.testing.assert_allclose(got_losses, losses, rtol=RTOL_F64)


def test_make_train_step_full_batch(mesh1):
    params, x, y = prob.problem(jnp.float64)
    opt = optax.sgd(0.5)
    step = jd.make_train_step(mesh1, opt, activation=prob.ACTIVATION, output=prob.OUTPUT)
    placed = jd.place_params(mesh1, params)
    state = jd.init_opt_state(mesh1, opt, placed)
    batch = jd.shard_batch(mesh1, x, y)
    new, _, J = step(placed, state, *batch)
    J0, g0 = jaxbp.value_and_grad(params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT)
    assert_close(J, J0)
    assert_close(new, jax.tree.map(lambda p, g: p - 0.5 * g, params, g0))


def test_bf16_on_one_device_within_tolerance_and_float32_master(mesh1):
    params, x, y = prob.problem(jnp.float32)
    J0, g0 = jaxbp.value_and_grad(params, x, y, activation="sigmoid")
    J, g = jd.data_parallel_value_and_grad(
        mesh1, params, x, y, activation="sigmoid", precision="bf16"
    )
    rtol = jd.bf16_grad_rtol(len(params))
    assert abs(float(J) - float(J0)) <= rtol * abs(float(J0))
    for a, e in zip(jax.tree.leaves(g), jax.tree.leaves(g0), strict=True):
        assert a.dtype == jnp.float32
        assert 0 < float(jnp.linalg.norm(a - e) / jnp.linalg.norm(e)) <= rtol


def test_precision_helpers():
    assert compute_dtype("float32", jnp.float64) == jnp.float64
    assert compute_dtype("bf16", jnp.float32) == jnp.bfloat16
    tree = cast_tree((jnp.ones(2), jnp.arange(2)), jnp.bfloat16)
    assert tree[0].dtype == jnp.bfloat16 and tree[1].dtype == jnp.arange(2).dtype
    assert jd.BF16_EPS == 2.0**-7
    assert jd.bf16_grad_rtol(3) == 12 * 2.0**-7
    with pytest.raises(ValueError, match="precision: unknown 'fp16'"):
        compute_dtype("fp16", jnp.float32)


def test_sharded_per_example_grads_one_device(mesh1):
    params, x, y = prob.problem(jnp.float64)
    expected = jaxbp.per_example_grads(params, x, y, activation="tanh")
    assert_close(jd.sharded_per_example_grads(mesh1, params, x, y, activation="tanh"), expected)


@pytest.mark.parametrize("l2", [0.2, None])
@pytest.mark.parametrize("base", [None, jaxbp.autodiff_value_and_grad])
def test_data_parallel_source_one_device(mesh1, base, l2):
    params, x, y = prob.problem(jnp.float64)
    vg = jd.data_parallel_source(mesh1, base=base)
    kw = dict(activation="tanh", output="softmax_ce", l2=l2)  # None: no penalty term
    J, g = jax.jit(lambda p, x, y: vg(p, x, y, **kw))(params, x, y)
    J0, g0 = jaxbp.value_and_grad(params, x, y, **kw)
    assert_close(J, J0)
    assert_close(g, g0)


def test_data_parallel_source_errors(mesh1):
    with pytest.raises(ValueError, match="precision: 'bf16' is implemented for the hand-derived"):
        jd.data_parallel_source(mesh1, precision="bf16", base=jaxbp.autodiff_value_and_grad)
    with pytest.raises(ValueError, match="precision: unknown"):
        jd.data_parallel_source(mesh1, precision="fp8")


def test_layer_plan():
    assert jd.layer_plan((16, 12, 8), 4) == (True, True, True)
    assert jd.layer_plan((16, 12, 8), 8) == (True, False, True)
    assert jd.layer_plan((16, 12, 8), 1) == (False, False, False)
    params, _, _ = prob.problem(jnp.float32)
    assert jd.layer_plan(params, 2) == (True, True, False)


def test_shard_batch_padding_and_mask(mesh1):
    params, x, y = prob.problem(jnp.float64)
    xs, ys, mask = jd.shard_batch(mesh1, x, y, pad=True)  # 48 % 1 == 0: nothing to pad
    assert xs.shape == x.shape and mask.dtype == jnp.float64 and float(mask.sum()) == 48
    assert xs.sharding.spec == jax.sharding.PartitionSpec("data")


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda p, x, y: jd.data_parallel_value_and_grad("mesh", p, x, y), TypeError, "mesh:"),
        (
            lambda p, x, y: jd.data_parallel_value_and_grad(
                jax.sharding.Mesh(np.array(jax.devices()), ("batch",)), p, x, y
            ),
            ValueError,
            "needs a 'data' axis",
        ),
        (
            lambda p, x, y: jd.data_parallel_value_and_grad(
                jd.data_mesh(1), p, x, y, precision="half"
            ),
            ValueError,
            "precision: unknown 'half'",
        ),
        (
            lambda p, x, y: jd.data_parallel_value_and_grad(jd.data_mesh(1), p, x, y[:5]),
            ValueError,
            "y: 5 labels for 48 rows",
        ),
        (
            lambda p, x, y: jd.model_parallel_value_and_grad(jd.data_mesh(1), p, x, y),
            ValueError,
            "needs a 'model' axis",
        ),
        (lambda p, x, y: jd.data_mesh(2), ValueError, "asked for 2 device"),
        (lambda p, x, y: jd.data_mesh(0), ValueError, "asked for 0 device"),
        (lambda p, x, y: jd.data_mesh("all"), TypeError, "devices:"),
        (lambda p, x, y: jd.model_mesh(0), ValueError, "model: expected a positive int"),
        (lambda p, x, y: jd.shard_batch(jd.data_mesh(1), x, y[:3]), ValueError, "3 rows for 48"),
        (
            lambda p, x, y: jd.data_parallel_train(
                jd.data_mesh(1), p, x, y, optimizer=optax.sgd(0.1), steps=-1
            ),
            ValueError,
            "steps:",
        ),
        (
            lambda p, x, y: jd.data_parallel_train(
                jd.data_mesh(1), p, x, y, optimizer=optax.sgd(0.1), steps=1, batch_size=49
            ),
            ValueError,
            r"batch_size: expected an int in \[1, 48\]",
        ),
    ],
)
def test_bad_input_names_the_argument(call, exc, match):
    params, x, y = prob.problem(jnp.float64)
    with pytest.raises(exc, match=match):
        call(params, x, y)


def test_check_divisible_message():
    jd.check_divisible(48, jd.data_mesh(1))  # anything divides over one device


ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}


def test_resolve_multihost_sources():
    assert jd.resolve_multihost(environ={}) is None
    assert jd.resolve_multihost(environ=ENV) == ("10.0.0.1:1234", 4, 3)
    assert jd.resolve_multihost("h:1", 2, 0, environ=ENV) == ("h:1", 2, 0)  # flags win
    assert jd.resolve_multihost(process_id=1, environ=ENV) == ("10.0.0.1:1234", 4, 1)
    assert jd.resolve_multihost("[::1]:80", 1, 0, environ={}) == ("[::1]:80", 1, 0)


@pytest.mark.parametrize(
    "args,env,match",
    [
        (("h:1", None, None), {}, "num_processes: .* not num_processes, process_id .*JAX_NUM"),
        ((None, 2, None), {"JAX_PROCESS_ID": "0"}, "coordinator_address: .*JAX_COORDINATOR"),
        (("localhost", 2, 0), {}, "coordinator_address: expected host:port"),
        (("h:70000", 2, 0), {}, "coordinator_address: expected host:port"),
        (("h:1", 2, 2), {}, r"process_id: must be in \[0, 2\)"),
        (("h:1", 0, 0), {}, "num_processes: must be ≥ 1"),
        (("h:1", "two", 0), {}, "num_processes: expected an integer"),
    ],
)
def test_resolve_multihost_errors(args, env, match):
    with pytest.raises(ValueError, match=match):
        jd.resolve_multihost(*args, environ=env)


def test_initialize_single_process_is_a_no_op():
    assert jd.initialize(environ={}) == jd.ProcessInfo(0, 1, 1, 1)
    assert jd.is_main_process()
    jd.shutdown()  # single process: nothing to leave


def test_host_copy():
    tree = (jnp.arange(3.0), {"a": jnp.ones(2)})
    out = jd.host_copy(tree)
    assert isinstance(out[0], np.ndarray) and out[1]["a"].tolist() == [1.0, 1.0]


def test_platform_name_checked_before_touching_jax():
    with pytest.raises(ValueError, match="platform: unknown 'cuda'; valid platforms are cpu, gpu"):
        jd.select_platform("cuda")
    with pytest.raises(ValueError, match="n: expected a positive int"):
        jd.request_cpu_devices(0)


def test_bench_scaling_validation():
    kw = dict(sizes=(4, 3), steps=1)
    with pytest.raises(ValueError, match=r"batch: 10 does not split evenly over \[4\]"):
        jd.bench_scaling([1, 4], batch=10, **kw)
    with pytest.raises(ValueError, match="asked for 2 device"):
        jd.bench_scaling([1, 2], batch=8, **kw)
    with pytest.raises(ValueError, match="device_counts"):
        jd.bench_scaling([], batch=8, **kw)
    with pytest.raises(ValueError, match="steps: expected a positive int"):
        jd.bench_scaling([1], batch=8, sizes=(4, 3), steps=0)


def test_bench_scaling_one_device():
    rows = jd.bench_scaling([1], sizes=(8, 6, 3), batch=16, steps=2, repeats=1)
    (row,) = rows
    assert row["devices"] == 1 and row["per_device_batch"] == 16 and row["speedup"] == 1.0
    assert row["examples_per_s"] > 0 and row["forced_cpu_devices"] is False
    assert "| 1 | 16 |" in jd.scaling_markdown(rows)
