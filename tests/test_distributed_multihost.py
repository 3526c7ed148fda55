"""Two processes on loopback, 2 forced CPU devices each, train data-parallel over all 4 devices
and end at the single-process, single-device result (jax.distributed over Gloo)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distributed_problem as prob
from distributed_subprocess import clean_env

HERE = Path(__file__).resolve().parent
WORKER = HERE / "distributed_multihost_worker.py"
TIMEOUT_S = 120  # both processes together; they normally finish in ~15 s
RTOL_F64 = 1e-12


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_two_processes(out_dir: Path) -> list[str]:
    """Starts process 0 with flags and process 1 from the environment; kills both on failure."""
    address = f"127.0.0.1:{_free_port()}"
    commands = [
        ([sys.executable, str(WORKER), str(out_dir), "0", address], clean_env()),
        (
            [sys.executable, str(WORKER), str(out_dir)],
            clean_env(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"),
        ),
    ]
    logs = [out_dir / f"log_{i}.txt" for i in range(2)]
    procs = []
    try:
        for (cmd, env), log in zip(commands, logs, strict=True):
            with open(log, "w") as f:
                procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [log.read_text() for log in logs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], (
        f"exit codes {codes} (negative: killed after {TIMEOUT_S} s)\n"
        + "\n".join(f"--- process {i} ---\n{t[-3000:]}" for i, t in enumerate(texts))
    )
    return texts


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
    _run_two_processes(tmp_path)
    expected, expected_losses = prob.reference_run("float64")
    expected = prob.flat(expected)
    for pid in (0, 1):
        info = json.loads((tmp_path / f"process_{pid}.json").read_text())
        assert info["info"] == {
            "process_id": pid,
            "num_processes": 2,
            "local_devices": 2,
            "global_devices": 4,
        }
        assert info["mesh_devices"] == 4
        assert info["main"] is (pid == 0)
        np.testing.assert_allclose(info["losses"], expected_losses, rtol=RTOL_F64)
        with np.load(tmp_path / f"process_{pid}.npz") as got:
            for i, e in enumerate(expected):
                a = got[str(i)]
                err = np.max(np.abs(a - e)) / np.max(np.abs(e))
                assert err <= RTOL_F64, f"process {pid}, leaf {i}: rel. error {err:.2e}"
