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


SLOW_CASES = Path(__file__).with_name("slow_cases.txt")
"""Node IDs of quick-looking cases that measured long (the file's header says how): marked slow
here so that the README's quick pass stays under its time budget; CI runs them with -m slow."""


def _slow_cases() -> set[str]:
    lines = SLOW_CASES.read_text(encoding="utf-8").splitlines()
    return {s.split("  # ")[0].strip() for s in lines if s.strip() and not s.startswith("#")}


def _names(nodeid: str) -> set[str]:
    """What an entry may say to name this case: its node ID, its function, its file."""
    return {nodeid, nodeid.split("[")[0], nodeid.split("::")[0]}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Adds the ``slow`` mark to every case :data:`SLOW_CASES` names (a node ID, a test
    function or a file), before ``-m`` deselects; an entry that names nothing the whole suite
    collects is an error (a renamed test would otherwise silently rejoin the quick pass)."""
    listed = _slow_cases()
    seen = set()
    for item in items:
        hits = _names(item.nodeid) & listed
        if hits:
            item.add_marker(pytest.mark.slow)
            seen |= hits
    whole_suite = not config.args or [Path(a).resolve() for a in config.args] == [
        Path(__file__).resolve().parent
    ]
    if whole_suite and not config.getoption("keyword") and listed - seen:
        missing = "\n  ".join(sorted(listed - seen))
        raise pytest.UsageError(f"{SLOW_CASES.name} lists cases that do not exist:\n  {missing}")


# --- the verifier's row invariant, audited over every report the suite builds ---------------------
ROWS_AUDITED = [0]
"""How many verifier rows this process audited (printed in the terminal summary)."""


def audit_row(row) -> None:
    """A judged row's verdict is exactly ``error > bound`` (or a problem), and its bound is its
    parts added up (or the cap that decided): what the table shows is what decided."""
    if row.status not in ("pass", "FAIL"):
        return
    if row.problem is None:
        assert (row.status == "FAIL") == (row.error > row.bound), (
            f"{row.oracle} {row.path}: {row.status} with error {row.error} and bound {row.bound}"
        )
    parts = dict(row.parts)
    if parts and row.problem is None:
        total = parts.get("cap", sum(v for k, v in parts.items() if k != "cap"))
        assert abs(total - row.bound) <= 1e-9 * max(abs(row.bound), 1e-300) + 1e-300, (
            f"{row.oracle} {row.path}: bound {row.bound} is not its parts {row.parts}"
        )


@pytest.fixture(autouse=True, scope="session")
def _audit_verifier_rows():
    """Every :class:`jaxbp.verify.Report` built during the session has its rows audited
    (:func:`audit_row`); a violation fails the test that built the report."""
    from jaxbp.verify import report as report_module

    original = getattr(report_module.Report, "__post_init__", None)

    def audited(self):
        for row in self.rows:
            audit_row(row)
        ROWS_AUDITED[0] += len(self.rows)
        if original is not None:
            original(self)

    report_module.Report.__post_init__ = audited
    yield
    if original is None:
        del report_module.Report.__post_init__
    else:
        report_module.Report.__post_init__ = original


def pytest_terminal_summary(terminalreporter):
    if ROWS_AUDITED[0]:
        terminalreporter.write_line(
            f"verifier rows audited (error > bound ⇔ FAIL): {ROWS_AUDITED[0]}"
        )
