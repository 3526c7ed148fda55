"""Global JAX configuration for the test suite — the only place that sets flags."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CLI's persistent compilation cache stays off in-process: it is a process-wide JAX
# setting, and the suite must not fill the user's cache (tests/test_cli_cache.py turns it on in
# subprocesses of its own).
os.environ["JAXBP_COMPILE_CACHE"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real datasets not found at {SHARED_DATA} (only present in CI and dev machines)"
        )
    return SHARED_DATA
