"""jaxbp.bench.verify and the verify section of ``jaxbp bench``: correctness of the record only.

The timings themselves are never asserted (docs/verify.md, "How long a check takes"): the test
network is tiny, so that each test takes a few seconds.
"""

import json
import math

import pytest

from jaxbp.bench import verify as bench_verify_mod
from jaxbp.bench.verify import bench_verify, render
from jaxbp.cli import main

TINY_SIZES = (8, 6, 3)


@pytest.fixture(scope="module")
def result():
    return bench_verify(TINY_SIZES, 4, "float32", repeats=2)


def _positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_bench_verify_returns_the_documented_keys(result):
    assert set(result) >= {
        "date", "sizes", "batch", "dtype", "activation", "n_params", "target_network", "jaxbp_s",
        "check_grads_s", "ratio", "warm_samples", "value_and_grad_s", "value_and_grad_compile_s",
        "seconds", "jaxbp_ok", "check_grads_ok", "check_grads_error", "target", "target_met",
        "wall_s",
    }  # fmt: skip
    assert result["sizes"] == list(TINY_SIZES) and result["batch"] == 4
    assert result["dtype"] == "float32" and result["activation"] == "sigmoid"
    assert result["n_params"] == 8 * 6 + 6 + 6 * 3 + 3
    assert result["target_network"] is False and result["target"] == 1.0


def test_bench_verify_numbers_are_positive_and_finite(result):
    for key in ("jaxbp_s", "check_grads_s", "ratio"):
        assert set(result[key]) == {"cold", "warm"}
        assert all(_positive(v) for v in result[key].values()), (key, result[key])
    assert result["ratio"]["warm"] == pytest.approx(
        result["jaxbp_s"]["warm"] / result["check_grads_s"]["warm"]
    )
    assert _positive(result["value_and_grad_s"]) and _positive(result["value_and_grad_compile_s"])
    assert 1 <= len(result["warm_samples"]["jaxbp"]) <= 2
    assert len(result["warm_samples"]["jaxbp"]) == len(result["warm_samples"]["check_grads"])
    for run in ("cold", "warm"):
        seconds = result["seconds"][run]
        assert seconds and all(math.isfinite(v) and v >= 0 for v in seconds.values())
    assert set(result["target_met"]) == {"cold"}
    assert result["target_met"]["cold"] == (result["ratio"]["cold"] <= 1.0)
    assert result["first"] == "jaxbp"
    # a smooth network: both checkers pass the correct gradient
    assert result["jaxbp_ok"] and result["check_grads_ok"] and result["check_grads_error"] is None


def test_bench_verify_is_json_and_renders(result):
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    text = render(result)
    assert "jaxbp.verify.check" in text and "jax.test_util.check_grads" in text
    assert "target: cold ratio ≤ 1" in text and "not the target's network" in text
    md = render(result, markdown=True)
    assert "|---|---:|---:|" in md and "| ratio check / check_grads |" in md


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sizes": (8,)}, "sizes"),
        ({"batch": 0}, "batch"),
        ({"repeats": 0}, "repeats"),
        ({"budget_s": 0}, "budget_s"),
    ],
)
def test_bench_verify_rejects_bad_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bench_verify(**{"sizes": TINY_SIZES, "batch": 4, **kwargs})


def test_the_target_network_is_the_issues():
    assert bench_verify_mod.TARGET_SIZES == (784, 512, 512, 10)
    assert bench_verify_mod.TARGET_BATCH == 256 and bench_verify_mod.TARGET_DTYPE == "float32"


TINY = [
    "bench", "--sizes", "8,4,3", "--batch", "16", "--budget", "0.02", "--no-accuracy",
    "--no-epoch", "--methods", "hand", "--peak-shapes", "64x64x64",
]  # fmt: skip


def test_bench_cli_json_has_the_verify_section_on_the_sizes_network(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main([*TINY, "--json", str(out)]) == 0
    v = json.loads(out.read_text())["verify"]
    assert v["sizes"] == [8, 4, 3] and v["batch"] == 16 and v["dtype"] == "float32"
    assert all(
        _positive(v[k][run]) for k in ("jaxbp_s", "check_grads_s") for run in ("cold", "warm")
    )
    assert len(v["warm_samples"]["jaxbp"]) == 3  # the full run's repeats
    text = capsys.readouterr().out
    assert "gradient check time (8-4-3, batch 16" in text and "ratio check / check_grads" in text


def test_bench_cli_no_verify_skips_the_section(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main([*TINY, "--no-verify", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "verify" not in result and result["command"].endswith("--no-epoch --no-verify")
    assert "gradient check time" not in capsys.readouterr().out
