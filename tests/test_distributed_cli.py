"""``jaxbp train --devices/--platform/--precision`` and its multi-host flags, end to end.

A subprocess with 4 forced CPU devices (tests/distributed_cli_worker.py) runs the CLI several
times; this process compares the run directories. Single-device errors run here directly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distributed_subprocess import clean_env, run_once
from jaxbp.cli import main
from jaxbp.distributed import bf16_grad_rtol

TIMEOUT_S = 300
TINY = ["--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "3", "--no-plots"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Path:
    return run_once(tmp_path_factory, "distributed_cli_worker.py", timeout_s=TIMEOUT_S)


def result(runs: Path, name: str) -> dict:
    return json.loads((runs / "results.json").read_text())[name]


def summary(runs: Path, name: str) -> dict:
    r = result(runs, name)
    assert r["rc"] == 0, r["stderr"]
    return json.loads((runs / name / "summary.json").read_text())


def losses(run_dir: Path) -> np.ndarray:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(t)["train_loss"] for t in lines])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,devices",
    [("all_devices", 4), ("three_devices_padded", 3)],
)
def test_devices_give_the_single_device_run(runs, name, devices):
    one, many = summary(runs, "one_device"), summary(runs, name)
    assert one["devices"] == 1 and many["devices"] == devices
    np.testing.assert_allclose(losses(runs / name), losses(runs / "one_device"), rtol=1e-12)
    assert many["confusion_matrix"] == one["confusion_matrix"]
    with (
        np.load(runs / name / "checkpoint.npz") as a,
        np.load(runs / "one_device" / "checkpoint.npz") as b,
    ):
        for key in b.files:
            if b[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.slow
def test_shadow_check_passes_on_four_devices(runs):
    s = summary(runs, "all_devices")
    assert s["shadow_max_rel_error"] is not None and s["shadow_max_rel_error"] < 1e-8


@pytest.mark.slow
def test_bf16_run_tracks_float32(runs):
    s = summary(runs, "bf16_two_devices")
    assert summary(runs, "float32_one_device")["devices"] == 1
    assert s["devices"] == 2
    np.testing.assert_allclose(
        losses(runs / "bf16_two_devices"), losses(runs / "float32_one_device"),
        rtol=bf16_grad_rtol(2),
    )  # fmt: skip
    config = (runs / "bf16_two_devices" / "config.toml").read_text()
    assert 'precision = "bf16"' in config and "devices = 2" in config


@pytest.mark.slow
def test_device_and_platform_errors_exit_2_and_write_nothing(runs):
    r = result(runs, "too_many_devices")
    assert r["rc"] == 2 and "--devices: 5 requested but 4 cpu device(s)" in r["stderr"]
    r = result(runs, "absent_platform")
    assert r["rc"] == 2 and "--platform: platform: 'tpu' requested" in r["stderr"]
    assert "Traceback" not in r["stderr"]
    for name in ("too_many_devices", "absent_platform"):
        assert not (runs / name).exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--precision", "bf16", "--grad", "autodiff"], "--precision: bf16 needs --grad manual"),
        (["--precision", "fp8"], "--precision"),
        (["--platform", "cuda"], "--platform"),
        (["--devices", "0"], "--devices: must be ≥ 1"),
        (["--devices", "2"], "--devices: 2 requested but 1"),
        (["--num-processes", "2"], "--coordinator-address: multi-process setup needs all"),
        (
            ["--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"],
            "--coordinator-address: expected host:port",
        ),
    ],
)
def test_bad_device_flags_exit_2(tmp_path, capsys, flags, message):
    rc = main(["train", *TINY, *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_process_cli_run_matches_one_device(runs, tmp_path):
    """The docs' multi-host recipe on loopback: two `jaxbp train` processes, 2 CPU devices
    each; process 0 writes --out, process 1 a scratch directory."""
    address = f"127.0.0.1:{_free_port()}"
    env = clean_env(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = tmp_path / "run"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jaxbp",
                "train",
                *TINY,
                "--dtype",
                "float64",
                "--out",
                str(out),
                "--coordinator-address",
                address,
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-4000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["devices"] == 4
    np.testing.assert_allclose(losses(out), losses(runs / "one_device"), rtol=1e-12)
    assert "outputs went to" in logs[0] and "outputs went to" not in logs[1]
