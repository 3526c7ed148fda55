"""Subprocess worker of tests/test_distributed_cli.py: ``jaxbp train`` on 4 forced CPU devices.

Usage: python tests/distributed_cli_worker.py OUT_DIR
Runs the CLI in this process several times (one JAX start) and writes OUT_DIR/results.json with
each run's exit code and stderr; the run directories are OUT_DIR/<name>/.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=4",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()

from jaxbp.cli import main  # noqa: E402

TINY = ["--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "3", "--no-plots"]

RUNS = {
    # name: extra flags
    "one_device": ["--devices", "1", "--dtype", "float64"],
    "all_devices": ["--dtype", "float64", "--shadow-every", "1"],  # default: all 4 devices
    "three_devices_padded": ["--devices", "3", "--dtype", "float64"],  # 16 % 3 ≠ 0
    "float32_one_device": ["--devices", "1"],
    "bf16_two_devices": ["--devices", "2", "--precision", "bf16"],
    "too_many_devices": ["--devices", "5"],
    "absent_platform": ["--platform", "tpu"],
}


def main_(out_dir: str) -> int:
    results = {}
    for name, flags in RUNS.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["train", *TINY, *flags, "--out", os.path.join(out_dir, name)])
        results[name] = {"rc": rc, "stderr": err.getvalue()}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1]))
