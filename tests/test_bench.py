"""Benchmark correctness: the flop count, the configuration table, the harness's rotation and
paired ratios, that every method trains the same network (the MLPs and the LeNet ``cnn``), and
``jaxbp bench`` end to end on a tiny network and on ``cnn`` (JSON keys, exit code 2 on bad
input). No timing is ever asserted."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import layers
from jaxbp.bench import (
    CONFIGS,
    QUICK,
    Config,
    LeNet,
    cnn_step_flops,
    config_flops,
    custom_config,
    n_params,
    peers,
    step_flops,
    targets,
)
from jaxbp.bench import methods as bench_methods
from jaxbp.bench.configs import GEMM_TARGET_CONFIGS, MNIST_LENET
from jaxbp.bench.timing import Timing, interleaved, paired_ratio
from jaxbp.cli import main
from jaxbp.cli.bench import render_targets

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
        "cnn": ((784, 120, 84, 10), 256),
    }
    assert {n: (c.sizes, c.batch) for n, c in CONFIGS.items()} == expected
    assert set(QUICK) < set(CONFIGS) and set(GEMM_TARGET_CONFIGS) <= set(CONFIGS)
    assert all(c.name == n for n, c in CONFIGS.items())
    assert [n for n, c in CONFIGS.items() if c.kind == "cnn"] == ["cnn"]
    assert all(c.model is None for n, c in CONFIGS.items() if n != "cnn")
    assert CONFIGS["cnn"].model == LeNet((28, 28, 1), (6, 16), 5, (120, 84), 10) == MNIST_LENET


def test_lenet_spec_follows_the_layers_shapes():
    spec = MNIST_LENET
    assert spec.convs() == [(28, 28, 1, 6), (14, 14, 6, 16)]  # SAME convs, 2×2 pools between
    assert spec.dense_sizes() == (7 * 7 * 16, 120, 84, 10)
    assert spec.describe() == "28x28x1 conv5x5x6 pool2 conv5x5x16 pool2 784-120-84-10"
    odd = LeNet((9, 7, 2), channels=(3, 4), kernel=3, hidden=(), classes=5)
    assert odd.convs() == [(9, 7, 2, 3), (5, 4, 3, 4)]  # ⌈9/2⌉, ⌈7/2⌉
    assert odd.dense_sizes() == (3 * 2 * 4, 5)
    assert CONFIGS["cnn"].describe() == spec.describe() and CONFIGS["mnist"].describe() == (
        "784-512-512-10"
    )


def test_cnn_step_flops_counts_three_convolutions_per_conv_layer():
    m = 256
    conv1 = 2 * m * 28 * 28 * 5 * 5 * 1 * 6
    conv2 = 2 * m * 14 * 14 * 5 * 5 * 6 * 16
    dense = 6 * m * (784 * 120 + 120 * 84 + 84 * 10)
    assert cnn_step_flops(MNIST_LENET, m) == 3 * (conv1 + conv2) + dense
    assert config_flops(CONFIGS["cnn"]) == 3 * (conv1 + conv2) + dense
    assert config_flops(CONFIGS["mnist"]) == step_flops((784, 512, 512, 10), 256)
    with pytest.raises(ValueError, match="model/batch"):
        cnn_step_flops(MNIST_LENET, 0)


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


def test_a_runner_that_times_itself_is_taken_at_its_word():
    """A peer in a worker process returns the seconds per step it measured there; the pipe's
    round trip (here: a sleep outside the "measured" part) is not counted."""
    import time

    def remote(n):
        time.sleep(1e-3)
        return 0.25

    t = interleaved({"remote": remote, "local": lambda n: None}, budget_s=1e-12, sample_s=1e-9)
    assert set(t["remote"].samples) == {0.25} and t["remote"].inner == 1
    assert max(t["local"].samples) < 0.25


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


def test_the_cnn_target_is_issue_12s_five_percent():
    configs = [
        {"name": "cnn", "kind": "cnn", "ratios": {"hand/autodiff": 1.05, "hand/torch": 3.0}},
        {"name": "c2", "kind": "cnn", "ratios": {"hand/autodiff": 1.051}, "methods": {}},
    ]
    got = targets(configs, None)
    assert [(t["config"], t["threshold"], t["met"], t["issue"]) for t in got] == [
        ("cnn", 1.05, True, 12),
        ("c2", 1.05, False, 12),
    ]  # no PyTorch or GEMM-peak target for the CNN (issue 5's are the MLPs')


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


def test_targets_print_in_the_products_terms():
    """``jaxbp bench`` prints each target met or UNMET against its threshold; the tracker issue
    that set it stays in the JSON (``issue``), out of the text."""
    configs = [
        {"name": "mnist", "ratios": {"hand/autodiff": 0.97, "hand/hand_bf16": 1.5}, "methods": {}},
        {"name": "cnn", "kind": "cnn", "ratios": {"hand/autodiff": 1.01}},
    ]
    got = targets(configs, None)
    assert {t["issue"] for t in got} == {5, 12, 13}
    assert render_targets(got) == [
        "targets:",
        "  UNMET hand / jax.grad step time    mnist   0.970 (target ≤ 0.95)",
        "  UNMET bf16 / float32 step time     mnist   0.667 (target ≤ 0.5)",
        "  met   hand / jax.grad step time    cnn     1.010 (target ≤ 1.05)",
    ]


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
    prepared = prepare(problem, lr=0.5)
    got = _after_two_steps(prepared)
    for g, r in zip(got, reference, strict=True):
        np.testing.assert_allclose(g.W, r.W, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.b, r.b, rtol=1e-10, atol=1e-12)
    # in a process of its own, with the benchmark's thread count, timed there
    assert prepared.detail.endswith(f"{peers.bench_threads()} threads")
    assert isinstance(prepared.run(1), float)
    if peer == "torch":
        info = peers.torch_worker()[1]
        assert info["threads"] == peers.bench_threads() and info["pid"] != os.getpid()
    monkeypatch.setattr(peers, "installed", lambda name: False)
    assert prepare(problem).status == "not installed"


needs_conv = pytest.mark.skipif(
    not hasattr(layers, "Conv2D") or not hasattr(layers, "MaxPool2D"),
    reason="jaxbp.layers.Conv2D/MaxPool2D not there yet (the LeNet needs both)",
)

SMALL_LENET = LeNet((12, 12, 1), channels=(3, 4), kernel=5, hidden=(7,), classes=5)


@pytest.fixture(scope="module")
def cnn_problem():
    config = Config("small cnn", SMALL_LENET.dense_sizes(), 6, "test", SMALL_LENET)
    return bench_methods.make_problem(config, dtype=jnp.float64)


def _assert_same_params(got, reference, rtol, atol, what):
    assert jax.tree.structure(got) == jax.tree.structure(reference), what
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=what)


@needs_conv
def test_the_cnn_problem_is_the_lenet_of_the_spec(cnn_problem):
    params, x, y, spec = cnn_problem
    assert spec == SMALL_LENET and x.shape == (6, 12, 12, 1) and y.shape == (6,)
    assert x.dtype == jnp.float64 and jnp.issubdtype(y.dtype, jnp.integer)
    weights = [p["W"].shape for p in params if p != ()]
    assert weights == [(5, 5, 1, 3), (5, 5, 3, 4), (7, 3 * 3 * 4), (5, 7)]  # HWIO, then dense


@needs_conv
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_every_cnn_method_makes_the_same_sgd_step(cnn_problem, activation):
    kw = dict(lr=0.5, activation=activation)
    reference = _after_two_steps(bench_methods.prepare_jax("autodiff", cnn_problem, **kw))
    start = cnn_problem.params[0]["W"]
    assert not np.allclose(reference[0]["W"], np.asarray(start))  # the first conv did train
    for method in ("hand", "custom_vjp"):
        got = _after_two_steps(bench_methods.prepare_jax(method, cnn_problem, **kw))
        _assert_same_params(got, reference, 1e-11, 1e-13, method)


@needs_conv
@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_lenet_makes_the_same_sgd_step_or_says_not_installed(
    cnn_problem, channels_last, monkeypatch
):
    if not peers.installed("torch"):
        assert peers.prepare_torch(cnn_problem).status == "not installed"
        pytest.skip("PyTorch is not installed: only its 'not installed' row is checked")
    reference = _after_two_steps(
        bench_methods.prepare_jax("hand", cnn_problem, lr=0.5, activation="tanh")
    )
    monkeypatch.setattr(peers, "TORCH_CHANNELS_LAST", channels_last)
    prepared = peers.prepare_torch(cnn_problem, lr=0.5, activation="tanh")
    assert prepared.detail.startswith("channels_last," if channels_last else "NCHW,")
    _assert_same_params(_after_two_steps(prepared), reference, 1e-10, 1e-12, "torch")


@needs_conv
def test_methods_without_a_cnn_say_so(cnn_problem):
    for method in ("scan", "vmap"):
        prepared = bench_methods.prepare_jax(method, cnn_problem)
        assert prepared.status == "unsupported" and "MLP only" in prepared.reason, method
    prepared = peers.prepare_sklearn(cnn_problem)
    assert prepared.status == "unsupported" and "no convolutional network" in prepared.reason
    with pytest.raises(ValueError, match="not defined for the CNN"):
        bench_methods.cnn_value_and_grad_fn("scan", None, 5)


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


@pytest.mark.slow
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


@pytest.mark.slow
@needs_conv
def test_bench_cli_cnn_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--config", "cnn", "--methods", "hand,autodiff,scan,sklearn", "--budget"]
    argv += ["0.02", "--no-accuracy", "--no-verify", "--peak-shapes", "128x128x128"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (config,) = result["configs"]
    assert config["name"] == "cnn" and config["kind"] == "cnn" and config["batch"] == 256
    assert config["model"] == MNIST_LENET.describe() and config["sizes"] == [784, 120, 84, 10]
    assert config["flops_per_step"] == config_flops(CONFIGS["cnn"])
    assert list(config["methods"]) == ["hand", "autodiff", "scan", "sklearn"]
    for name in ("hand", "autodiff"):
        row = config["methods"][name]
        assert row["status"] == "ok" and row["step_ms"] > 0 and row["gflops"] > 0
        assert row["compile_s"] > 0 and row["memory_mib"] > 0
    assert config["methods"]["scan"]["status"] == "unsupported"
    assert config["methods"]["sklearn"]["status"] == "unsupported"
    assert set(config["ratios"]) == {"hand/autodiff"} and "in_epoch" not in config
    (target,) = result["targets"]
    assert (target["config"], target["threshold"], target["issue"]) == ("cnn", 1.05, 12)
    assert result["command"].startswith("jaxbp bench --configs cnn --methods")
    text = capsys.readouterr().out
    assert "cnn: 28x28x1 conv5x5x6 pool2 conv5x5x16 pool2 784-120-84-10, batch 256" in text
    assert "\ntargets:\n" in text and "no convolutional network" in text


def test_devices_scale_the_mlp_configurations_and_pass_over_the_cnn():
    from jaxbp.cli import UsageError
    from jaxbp.cli.bench import parse_devices

    assert parse_devices("1,2", list(CONFIGS.values())) == [1, 2]  # cnn's batch is not checked
    with pytest.raises(UsageError, match="MLP configurations only"):
        parse_devices("1", [CONFIGS["cnn"]])


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--configs", "huge"], "--configs"),
        (["--config", "tiny,lenet"], "--configs"),
        (["--configs", "cnn", "--devices", "1"], "--devices"),
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
