"""Benchmark correctness: the flop count, the configuration table, the harness's rotation and
paired ratios, that every method trains the same network, and ``jaxbp bench`` end to end on a
tiny network (JSON keys, exit code 2 on bad input). No timing is ever asserted."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.bench import CONFIGS, QUICK, Config, custom_config, n_params, peers, step_flops, targets
from jaxbp.bench import methods as bench_methods
from jaxbp.bench.configs import GEMM_TARGET_CONFIGS
from jaxbp.bench.timing import Timing, interleaved, paired_ratio
from jaxbp.cli import main

# --- flop count and configurations ---------------------------------------------------------


def test_step_flops_is_six_m_sum_n_in_n_out():
    assert step_flops((64, 32, 10), 64) == 6 * 64 * (64 * 32 + 32 * 10)
    assert step_flops((784, 512, 512, 10), 256) == 6 * 256 * (784 * 512 + 512 * 512 + 512 * 10)
    assert step_flops((3, 1), 1) == 18


@pytest.mark.parametrize("sizes, batch", [((5,), 4), ((5, 0, 3), 4), ((5, 3), 0)])
def test_step_flops_rejects_bad_shapes(sizes, batch):
    with pytest.raises(ValueError, match="sizes/batch"):
        step_flops(sizes, batch)


def test_n_params_counts_weights_and_biases():
    assert n_params((64, 32, 10)) == 65 * 32 + 33 * 10


def test_config_table_is_the_issues():
    expected = {
        "tiny": ((64, 32, 10), 64),
        "course": ((400, 25, 10), 5000),
        "mnist": ((784, 512, 512, 10), 256),
        "wide": ((1024, 2048, 2048, 10), 1024),
        "deep": ((256, 256, 256, 256, 256, 256, 256, 256, 256, 10), 512),
    }
    assert {n: (c.sizes, c.batch) for n, c in CONFIGS.items()} == expected
    assert set(QUICK) < set(CONFIGS) and set(GEMM_TARGET_CONFIGS) <= set(CONFIGS)
    assert all(c.name == n for n, c in CONFIGS.items())


def test_custom_config_names_its_shape():
    assert custom_config([8, 4, 3], 16) == Config("8-4-3 b16", (8, 4, 3), 16, "custom")


# --- harness -------------------------------------------------------------------------------


def test_interleaved_shuffles_every_round_and_times_each_method_once_per_round():
    calls = []

    def runner(name):
        return lambda n: calls.append((name, n))

    names = "ABCDE"
    kw = dict(budget_s=1e9, sample_s=1e-9, min_rounds=20, max_rounds=20)
    t = interleaved({k: runner(k) for k in names}, **kw)
    # 2 calibration calls and 1 warm-up sample each, then 20 rounds of one sample each.
    timed = [name for name, _ in calls[3 * len(names) :]]
    rounds = [timed[i : i + len(names)] for i in range(0, len(timed), len(names))]
    assert len(rounds) == 20 and all(sorted(r) == list(names) for r in rounds)
    predecessors = {(r[i - 1], r[i]) for r in rounds for i in range(1, len(r))}
    assert all(len({a for a, b in predecessors if b == n}) > 1 for n in names)  # varied neighbours
    assert len({tuple(r) for r in rounds}) > 1
    assert all(t[k].rounds == tuple(range(20)) and t[k].inner >= 1 for k in names)
    calls.clear()
    interleaved({k: runner(k) for k in names}, **kw)
    assert [name for name, _ in calls[3 * len(names) :]] == timed  # seeded: reproducible


def test_interleaved_stops_a_method_at_its_budget_after_min_rounds():
    t = interleaved(
        {"fast": lambda n: None, "slow": lambda n: None},
        budget_s=1e-12,
        sample_s=1e-9,
        min_rounds=2,
        max_rounds=50,
    )
    assert len(t["fast"].samples) == 2 and len(t["slow"].samples) == 2


@pytest.mark.parametrize("bad", [dict(budget_s=0), dict(min_rounds=0), dict(max_rounds=1)])
def test_interleaved_rejects_bad_settings(bad):
    kw = dict(budget_s=1.0, min_rounds=2, max_rounds=10) | bad
    with pytest.raises(ValueError, match="budget_s"):
        interleaved({"a": lambda n: None}, **kw)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    a = Timing((2.0, 9.0, 3.0, 4.0), (0, 1, 2, 3), 1)
    b = Timing((1.0, 3.0, 1.0), (0, 1, 3), 1)  # round 2 missing: not paired
    assert paired_ratio(a, b) == 3.0  # ratios 2, 3, 4
    assert Timing((1.0, 2.0, 3.0), (0, 1, 2), 1).median == 2.0


def test_targets_compare_against_the_issues_thresholds():
    configs = [
        {
            "name": "mnist",
            "ratios": {"hand/autodiff": 0.95, "hand/torch": 1.0},
            "methods": {"hand": {"pct_peak": 85.0}},
        },
        {
            "name": "tiny",
            "ratios": {"hand/autodiff": 0.96, "hand/torch": 0.5},
            "methods": {"hand": {"pct_peak": 1.0}},
        },
    ]
    got = {(t["target"], t["config"]): t["met"] for t in targets(configs, {"ratio": 1.01})}
    assert got == {
        ("hand / jax.grad step time", "mnist"): True,
        ("hand / PyTorch step time", "mnist"): False,
        ("hand GFLOP/s / GEMM peak", "mnist"): True,
        ("hand / jax.grad step time", "tiny"): False,
        ("hand / PyTorch step time", "tiny"): True,
        ("time to 97 % / sklearn fit", "digits"): False,
    }


# --- every method trains the same network ----------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    return bench_methods.make_problem(custom_config((6, 5, 4, 3), 12), dtype=jnp.float64)


def _after_two_steps(prepared):
    assert prepared.status == "ok", prepared.reason
    prepared.run(2)
    return prepared.params()


def test_every_jax_method_makes_the_same_sgd_step(problem):
    reference = _after_two_steps(bench_methods.prepare_jax("autodiff", problem, lr=0.5))
    assert not np.allclose(reference[0].W, np.asarray(problem.params[0].W))  # it did train
    for method in ("hand", "scan", "vmap", "custom_vjp"):
        got = _after_two_steps(bench_methods.prepare_jax(method, problem, lr=0.5))
        for g, r in zip(got, reference, strict=True):
            np.testing.assert_allclose(g.W, r.W, rtol=1e-12, atol=1e-14, err_msg=method)
            np.testing.assert_allclose(g.b, r.b, rtol=1e-12, atol=1e-14, err_msg=method)


@pytest.mark.parametrize("peer", peers.PEERS)
def test_peers_make_the_same_sgd_step_or_say_not_installed(problem, peer, monkeypatch):
    prepare = {"torch": peers.prepare_torch, "sklearn": peers.prepare_sklearn}[peer]
    if not peers.installed(peer):
        assert prepare(problem).status == "not installed"
        return
    reference = _after_two_steps(bench_methods.prepare_jax("hand", problem, lr=0.5))
    got = _after_two_steps(prepare(problem, lr=0.5))
    for g, r in zip(got, reference, strict=True):
        np.testing.assert_allclose(g.W, r.W, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.b, r.b, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(peers, "installed", lambda name: False)
    assert prepare(problem).status == "not installed"


def test_vmap_is_skipped_when_per_example_grads_do_not_fit(problem, monkeypatch):
    monkeypatch.setattr(bench_methods, "PER_EXAMPLE_LIMIT_BYTES", 100)
    prepared = bench_methods.prepare_jax("vmap", problem)
    assert prepared.status == "skipped" and "GiB" in prepared.reason


# --- the command -----------------------------------------------------------------------------

TINY = [
    "bench", "--sizes", "8,4,3", "--batch", "16", "--budget", "0.02", "--no-accuracy",
    "--peak-shapes", "128x128x128,64x256x128",
]  # fmt: skip


@pytest.mark.slow
def test_bench_cli_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main([*TINY, "--methods", "hand,autodiff,sklearn", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) >= {
        "date", "wall_s", "command", "machine", "settings", "gemm_peak", "configs",
        "time_to_accuracy", "targets",
    }  # fmt: skip
    assert result["command"].startswith("jaxbp bench --sizes 8,4,3 --batch 16")
    assert set(result["machine"]) >= {"cpu", "cores", "backend", "device", "jax", "loadavg"}
    peak = result["gemm_peak"]
    assert peak["gflops"] > 0 and len(peak["per_shape"]) == 2 and "torch_per_shape" in peak
    (config,) = result["configs"]
    assert config["flops_per_step"] == step_flops((8, 4, 3), 16)
    assert list(config["methods"]) == ["hand", "autodiff", "sklearn"]
    for name in ("hand", "autodiff"):
        row = config["methods"][name]
        assert row["status"] == "ok"
        assert set(row) >= {"step_ms", "spread", "samples", "gflops", "pct_peak", "compile_s"}
        assert row["step_ms"] > 0 and row["samples"] >= 3 and row["memory_mib"] > 0
    for peer in ("sklearn",):
        status = config["methods"][peer]["status"]
        assert status == ("ok" if peers.installed(peer) else "not installed")
    assert "hand/autodiff" in config["ratios"] and config["gemm_gflops"] > 0
    assert config["peak_gflops"] == max(peak["gflops"], config["gemm_gflops"])
    assert {t["target"] for t in result["targets"]} >= {"hand / jax.grad step time"}
    e = config["in_epoch"]
    assert e["minibatches"] == 8 and e["manual_ms"] > 0 and e["autodiff_ms"] > 0 and e["ratio"] > 0
    text = capsys.readouterr().out
    assert "hand-derived batched" in text and "plain jax.grad" in text and "targets" in text
    assert "inside jaxbp train's epoch (8 minibatches of 16)" in text


def test_bench_cli_no_epoch_leaves_it_out(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main([*TINY, "--methods", "hand,autodiff", "--no-epoch", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "in_epoch" not in result["configs"][0]
    assert result["command"].endswith("--no-accuracy --no-epoch")
    assert "inside jaxbp train's epoch" not in capsys.readouterr().out


def test_epoch_sources_train_alike_and_the_timing_is_per_step():
    """The two timed epochs train the same network the same way (same minibatches, same SGD)."""
    from jaxbp.bench import epoch as E

    config = custom_config((6, 5, 3), 4)
    runs = {
        s: E.prepare_epoch(s, config, minibatches=3, dtype=jnp.float64, lr=0.5) for s in E.SOURCES
    }
    for run, _ in runs.values():
        run(2)
    manual, autodiff = (runs[s][1]() for s in E.SOURCES)
    for g, r in zip(jax.tree.leaves(manual), jax.tree.leaves(autodiff), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
    timed = E.bench_epoch(config, minibatches=3, dtype=jnp.float64, budget_s=0.01, sample_s=1e-3)
    assert timed["minibatches"] == 3 and set(timed) == {
        "minibatches",
        "manual_ms",
        "autodiff_ms",
        "ratio",
    }


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--configs", "huge"], "--configs"),
        (["--methods", "hand,magic"], "--methods"),
        (["--dtype", "float16"], "--dtype"),
        (["--budget", "-1"], "--budget"),
        (["--lr", "0"], "--lr"),
        (["--sizes", "8"], "--sizes"),
        (["--sizes", "8,x"], "--sizes"),
        (["--sizes", "8,3", "--configs", "tiny"], "--sizes"),
        (["--sizes", "8,3", "--batch", "0"], "--batch"),
        (["--matmul-precision", "fp8"], "--matmul-precision"),
        (["--sizes", "8,4,3", "--activation", "swish"], "--activation"),
        (["--json", "/nonexistent-folder/x.json"], "--json"),
        (["--json", "/proc/x.json"], "--json"),  # a place that cannot be written
        (["--batch", "many"], "--batch"),
        (["--peak-shapes", "12x12"], "--peak-shapes"),
        (["--peak-shapes", "axbxc"], "--peak-shapes"),
    ],
)
def test_bench_cli_bad_input_exits_2_with_one_line(argv, fragment, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err


# --- time to accuracy ------------------------------------------------------------------------


def test_time_to_accuracy_trains_digits_to_the_target():
    from jaxbp.bench.accuracy import TARGET, jaxbp_time_to_accuracy, load_digits_split

    x_fit, y_fit, x_test, y_test, _ = load_digits_split(0)
    assert x_fit.shape == (1438, 64) and x_test.shape == (359, 64)
    run = jaxbp_time_to_accuracy(x_fit, y_fit, x_test, y_test, dtype=jnp.float32)
    assert run["reached"] and run["test_accuracy"] >= TARGET
    assert 1 <= run["epochs"] <= 200 and 0 < run["compile_s"] <= run["wall_s"]
