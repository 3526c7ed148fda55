"""Every ```python block of README.md and docs/*.md runs as written on a CPU machine.

Each file's blocks run in order in one namespace (later blocks use earlier names, as a reader
pasting them would), in a fresh interpreter with only the CPU platform: the docs set JAX flags
themselves. A block that cannot run on a CPU machine is marked in the doc itself by an HTML
comment on the line before its fence, ``<!-- not run: <why> -->``; such a block is left out,
and the reason must be given.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"^(?:<!-- not run:(?P<why>[^\n]*?)-->\n)?```python\n(?P<code>.*?)^```", re.S | re.M
)
NOT_RUN = re.compile(r"<!-- not run:(?P<why>.*?)-->")
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
"""Every document a reader runs examples from; those without a python block have nothing to run."""


def _blocks(path: Path) -> list[str]:
    """The python blocks of ``path`` that run: all but those marked ``not run``."""
    return [m["code"] for m in BLOCK.finditer(path.read_text(encoding="utf-8")) if m["why"] is None]


def _with_examples() -> list:
    return [
        pytest.param(doc, marks=pytest.mark.slow)  # seconds to minutes each: the slow pass
        for doc in DOCS
        if _blocks(ROOT / doc)
    ]


@pytest.mark.parametrize("doc", _with_examples())
def test_python_examples_run_as_written(doc, tmp_path):
    blocks = _blocks(ROOT / doc)
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


def test_every_doc_example_runs_or_says_why_not():
    """The documents with python blocks are the ones the test above runs (README.md and
    docs/verify.md among them), and each ``not run`` marker sits right above a python block
    and gives its reason."""
    with_examples = [p.values[0] for p in _with_examples()]
    assert {"README.md", "docs/verify.md", "docs/conv_backward.md"} <= set(with_examples)
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        marked = [m["why"].strip() for m in NOT_RUN.finditer(text)]
        skipped = [m["why"].strip() for m in BLOCK.finditer(text) if m["why"] is not None]
        assert marked == skipped, f"{doc}: a 'not run' marker not right above a ```python block"
        assert all(skipped), f"{doc}: a 'not run' marker without its reason"


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
