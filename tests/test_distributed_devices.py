"""Multi-device behaviour on 8 forced CPU devices, checked against single-device references.

The test process has one device (tests/conftest.py), so one subprocess
(tests/distributed_worker.py, with XLA_FLAGS=--xla_force_host_platform_device_count=8) runs every
multi-device scenario once and writes its results; the references are computed here, on one
device, with the plain (unsharded) hand-derived gradient. The subprocess runs once per test
session, shared between pytest-xdist workers through a file lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distributed_problem as prob
import jaxbp
from distributed_subprocess import run_once
from jaxbp.distributed import bf16_grad_rtol

WORKER_TIMEOUT_S = 300

RTOL = {"float64": 1e-12, "float32": 64 * float(jnp.finfo(jnp.float32).eps)}
"""Same computation, different summation order (the psum splits Σ over examples by shards)."""


class WorkerResults:
    def __init__(self, out: Path):
        self.json = json.loads((out / "results.json").read_text())
        with np.load(out / "arrays.npz") as z:
            self.arrays = dict(z)

    def leaves(self, prefix: str) -> list[np.ndarray]:
        n = sum(1 for k in self.arrays if k.rsplit("/", 1)[0] == prefix)
        assert n, f"worker wrote no arrays under {prefix!r}"
        return [self.arrays[f"{prefix}/{i}"] for i in range(n)]

    def scenario_ok(self, name: str) -> None:
        status = self.json.get(f"ok/{name}")
        assert status is True, f"worker scenario {name} failed:\n{status}"


@pytest.fixture(scope="session")
def worker(tmp_path_factory) -> WorkerResults:
    return WorkerResults(
        run_once(tmp_path_factory, "distributed_worker.py", timeout_s=WORKER_TIMEOUT_S)
    )


def rel_error(actual, expected) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape and np.all(np.isfinite(a)), (a.shape, e.shape)
    return float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), np.finfo(np.float64).tiny))


def assert_leaves_close(actual: list, expected, rtol: float) -> float:
    expected = prob.flat(expected)
    assert len(actual) == len(expected)
    errors = [rel_error(a, e) for a, e in zip(actual, expected, strict=True)]
    assert max(errors) <= rtol, f"per-leaf relative errors {errors} exceed {rtol:.1e}"
    return max(errors)


def test_worker_saw_eight_devices(worker):
    assert worker.json["devices"] == 8


@pytest.mark.parametrize(
    "n,dtype",
    [(n, "float64") for n in prob.DEVICE_COUNTS]
    + [(n, "float32") for n in prob.FLOAT32_DEVICE_COUNTS],
)
def test_training_on_n_devices_matches_single_device(worker, n, dtype):
    worker.scenario_ok("data_parallel_runs")
    expected, losses = prob.reference_run(dtype)
    assert_leaves_close(worker.leaves(f"dp/{dtype}/{n}"), expected, RTOL[dtype])
    np.testing.assert_allclose(worker.json[f"dp_losses/{dtype}/{n}"], losses, rtol=RTOL[dtype])
    assert worker.json[f"dp_sharding/{dtype}/{n}"] == "P()"  # replicated


@pytest.mark.parametrize("n", prob.DEVICE_COUNTS)
def test_data_parallel_gradient_matches_single_device(worker, n):
    worker.scenario_ok("gradient_runs")
    params, x, y = prob.problem(jnp.float64)
    J, grads = jaxbp.value_and_grad(
        params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT, l2=prob.L2
    )
    assert rel_error(worker.json[f"dp_J/{n}"], J) <= RTOL["float64"]
    assert_leaves_close(worker.leaves(f"dp_grad/{n}"), grads, RTOL["float64"])


def test_jit_with_shardings_gives_the_same_gradient(worker):
    """The GSPMD alternative to shard_map + psum (docs/distributed.md) agrees too."""
    worker.scenario_ok("gradient_runs")
    params, x, y = prob.problem(jnp.float64)
    J, grads = jaxbp.value_and_grad(
        params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT, l2=prob.L2
    )
    assert rel_error(worker.json["gspmd_J"], J) <= RTOL["float64"]
    assert_leaves_close(worker.leaves("gspmd_grad"), grads, RTOL["float64"])


def test_sharded_per_example_grads_match_single_device(worker):
    worker.scenario_ok("gradient_runs")
    params, x, y = prob.problem(jnp.float64)
    expected = jaxbp.per_example_grads(params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT)
    assert_leaves_close(worker.leaves("per_example"), expected, RTOL["float64"])
    assert worker.json["per_example_sharding"] == "P('data',)"


def test_indivisible_batch_is_a_clear_error(worker):
    worker.scenario_ok("gradient_runs")
    for key in ("indivisible", "indivisible_per_example"):
        err = worker.json[key]
        assert err["type"] == "ValueError", err
        assert "21 rows" in err["message"] and "8 data-parallel devices" in err["message"]
        assert "pad=True" in err["message"]


def test_padded_batch_gives_the_gradient_of_the_real_rows(worker):
    worker.scenario_ok("gradient_runs")
    params, x, y = prob.problem(jnp.float64)
    J, grads = jaxbp.value_and_grad(
        params, x[:21], y[:21], activation=prob.ACTIVATION, output=prob.OUTPUT, l2=prob.L2
    )
    assert rel_error(worker.json["padded_J"], J) <= RTOL["float64"]
    assert_leaves_close(worker.leaves("padded_grad"), grads, RTOL["float64"])


@pytest.mark.parametrize("mesh", prob.MP_MESHES, ids=lambda dm: f"{dm[0]}x{dm[1]}")
def test_model_parallel_gradient_matches_single_device(worker, mesh):
    worker.scenario_ok("model_parallel_runs")
    data, model = mesh
    params, x, y = prob.problem(jnp.float64, sizes=prob.MP_SIZES, output=prob.MP_OUTPUT)
    J, grads = jaxbp.value_and_grad(
        params, x, y, activation=prob.ACTIVATION, output=prob.MP_OUTPUT, l2=prob.L2
    )
    key = f"{data}x{model}"
    assert rel_error(worker.json[f"mp_J/{key}"], J) <= RTOL["float64"]
    assert_leaves_close(worker.leaves(f"mp_grad/{key}"), grads, RTOL["float64"])
    plan = worker.json[f"mp_plan/{key}"]
    assert plan == [n % model == 0 for n in prob.MP_SIZES[1:]]
    expected_specs = ["P('model', None)" if s else "P()" for s in plan]
    assert worker.json[f"mp_spec/{key}"] == expected_specs


def test_model_parallel_plans_cover_every_collective_path(worker):
    """All split (psum_scatter), replicated below split (psum), split below replicated (slice)."""
    plans = [worker.json[f"mp_plan/{d}x{m}"] for d, m in prob.MP_MESHES]
    # (layer l split?, layer l − 1 split?) for every backward step l → l − 1 of every plan
    steps = {(p[l], p[l - 1]) for p in plans for l in range(1, len(p))}
    assert {(True, True), (True, False), (False, True)} <= steps


def test_model_and_data_parallel_training_matches_single_device(worker):
    worker.scenario_ok("model_parallel_runs")
    expected, _ = prob.reference_run("float64", "adam")
    assert_leaves_close(worker.leaves("mp_train/2x4"), expected, RTOL["float64"])


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_bf16_gradient_within_documented_tolerance(worker, activation):
    worker.scenario_ok("precision_runs")
    params, x, y = prob.problem(jnp.float32)
    J, grads = jaxbp.value_and_grad(params, x, y, activation=activation, output=prob.OUTPUT)
    assert worker.json[f"bf16_dtype/{activation}"] == "float32"  # float32 master gradient
    rtol = bf16_grad_rtol(len(params))
    assert abs(worker.json[f"bf16_J/{activation}"] - float(J)) <= rtol * abs(float(J))
    for got, want in zip(worker.leaves(f"bf16_grad/{activation}"), prob.flat(grads), strict=True):
        norm_rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert norm_rel <= rtol, (activation, norm_rel, rtol)
        assert norm_rel > 0  # it really ran in bf16


def test_bf16_training_tracks_float32_training(worker):
    worker.scenario_ok("precision_runs")
    expected, losses = prob.reference_run("float32")
    rtol = bf16_grad_rtol(len(prob.SIZES) - 1)
    np.testing.assert_allclose(worker.json["bf16_train_losses"], losses, rtol=rtol)
    for got, want in zip(worker.leaves("bf16_train"), prob.flat(expected), strict=True):
        assert got.dtype == np.float32  # master parameters stay float32
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= rtol


def test_platform_selection_errors_are_clear(worker):
    worker.scenario_ok("platform_runs")
    r = worker.json
    assert r["platform_cpu"] == 8
    assert r["platform_tpu"]["type"] == "RuntimeError"
    assert "'tpu' requested" in r["platform_tpu"]["message"]
    assert 'pip install -U "jax[tpu]"' in r["platform_tpu"]["message"]
    assert r["platform_after_error"] == "cpu"  # restored, not left on the absent platform
    assert r["cpu_devices_16"]["type"] == "RuntimeError"
    assert "8 CPU device(s)" in r["cpu_devices_16"]["message"]
    assert r["cpu_devices_4"]["type"] is None  # 8 ≥ 4: already satisfied
    assert r["too_many_devices"]["type"] == "ValueError"
    assert "xla_force_host_platform_device_count=9" in r["too_many_devices"]["message"]


def test_sharded_verification_passes(worker):
    worker.scenario_ok("verify_runs")
    assert worker.json["verify_ok"] is True and worker.json["verify_rows"] > 0
    assert worker.json["verify_bf16_ok"] is True, worker.json["verify_bf16_failed"]


@pytest.mark.parametrize("base", ["manual", "autodiff"])
def test_trainer_source_under_jit_vmap_scan_with_padding(worker, base):
    worker.scenario_ok("source_runs")
    _, x, y = prob.problem(jnp.float64)
    seeds = jax.vmap(lambda k: jaxbp.init_params(k, prob.SIZES, dtype=jnp.float64))(
        jax.random.split(jax.random.key(7), 2)
    )
    expected = jax.jit(jax.vmap(lambda p: prob.scan_train(jaxbp.value_and_grad, p, x, y)))(seeds)
    assert_leaves_close(worker.leaves(f"source/{base}"), expected, RTOL["float64"])


def test_bench_scaling_rows(worker):
    worker.scenario_ok("bench_runs")
    rows = worker.json["bench"]
    assert [r["devices"] for r in rows] == [1, 8]
    assert [r["per_device_batch"] for r in rows] == [16, 2]
    for r in rows:
        assert r["examples_per_s"] > 0 and np.isfinite(r["examples_per_s"])
        assert r["forced_cpu_devices"] is (r["devices"] > 1)
    assert rows[0]["speedup"] == 1.0
    assert worker.json["bench_markdown"].count("\n") == len(rows) + 1


def test_references_ran_on_one_device():
    """The references above are single-device: the test process itself has one device."""
    assert len(jax.devices()) == 1
