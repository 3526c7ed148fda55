"""The Python examples of README.md, docs/verify.md and docs/conv_backward.md run as written.

Each file's ```python blocks run in order in one namespace (later blocks use earlier names, as a
reader pasting them would), in a fresh interpreter: the docs set JAX flags themselves.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "doc",
    [
        "README.md",
        pytest.param("docs/verify.md", marks=pytest.mark.slow),
        pytest.param("docs/conv_backward.md", marks=pytest.mark.slow),
    ],
)
def test_python_examples_run_as_written(doc, tmp_path):
    blocks = _blocks(ROOT / doc)
    assert blocks, f"{doc} has no python examples"
    script = "\n\n".join(
        f"# --- block {i} of {doc}\n" + textwrap.dedent(b) for i, b in enumerate(blocks)
    )
    (tmp_path / "examples.py").write_text(script, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(tmp_path / "examples.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"JAX_PLATFORMS": "cpu", "PATH": "", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, f"{doc}: an example failed\n{run.stderr[-4000:]}"


TEST_REF = re.compile(r"(test_\w+\.py)?::(\w+)|`(test_\w+\.py)`")


def test_every_test_the_derivation_cites_exists():
    """docs/derivation.md's `file::test` references (``::name`` continues the last file named on
    its row) name test files and functions that exist."""
    missing = []
    for row in (ROOT / "docs" / "derivation.md").read_text(encoding="utf-8").splitlines():
        current = None
        for m in TEST_REF.finditer(row):
            current = m.group(1) or m.group(3) or current
            if current is None:
                continue
            path = ROOT / "tests" / current
            if not path.is_file():
                missing.append(current)
            elif m.group(2) and not re.search(rf"def {m.group(2)}\b", path.read_text("utf-8")):
                missing.append(f"{current}::{m.group(2)}")
    assert not missing, f"docs/derivation.md cites tests that do not exist: {sorted(set(missing))}"
