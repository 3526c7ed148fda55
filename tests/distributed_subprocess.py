"""Runs a test helper script once per test session, shared by the pytest-xdist workers.

The multi-device tests need JAX started with forced CPU devices, which the test process (one
device, tests/conftest.py) cannot do; each helper script runs in a subprocess and writes its
results to a directory. Under xdist, several workers may ask for the same results: the first
runs the script under a file lock, the others wait on the lock and reuse its output.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def clean_env(**extra: str) -> dict:
    """The environment without JAX_* and XLA_FLAGS (the scripts set their own), tests/ on the
    import path, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_once(
    tmp_path_factory, script: str, *, timeout_s: float, done: str = "results.json"
) -> Path:
    """Runs ``python tests/<script> OUT`` once per session; returns OUT.

    Raises:
      AssertionError: the script failed (its output tails are in the message).
      subprocess.TimeoutExpired: it ran past ``timeout_s`` (the child is killed).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the xdist workers of this session
    out = base / f"jaxbp_{Path(script).stem}"
    with open(base / f"jaxbp_{Path(script).stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (out / done).exists():
                out.mkdir(exist_ok=True)
                proc = subprocess.run(
                    [sys.executable, str(HERE / script), str(out)],
                    env=clean_env(),
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                )
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out
