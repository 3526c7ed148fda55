"""JAX's own tests of check_grads users, run with JAX's check_grads and with ours: the verdicts.

    python benchmarks/jax_suite_compare.py [--files linalg_test ...] [--cases 10] [--workers 2]
                                           [--out benchmarks/results/jax_suite_compare.md]

Runs each vendored file of tests/jax_suite (all of them by default) under pytest in a subprocess,
once with ``JAXBP_JAX_SUITE_CHECKER=jax`` (JAX's ``check_grads``, untouched) and once with
``JAXBP_JAX_SUITE_CHECKER=jaxbp`` (``jaxbp.verify.check_grads`` swapped in; the folder skips
nothing for it), both with ``JAX_NUM_GENERATED_CASES=--cases`` (default 10, JAX's own; the folder's default is 1). The
folder's conftest selects the tests (those that call ``check_grads``) and records each test's
number of ``check_grads`` calls; the outcomes are read from pytest's ``--junitxml``.

Writes ``--out`` (markdown) and the full record as JSON beside it (same name, ``.json``), and
prints the summary table. Per file: the selected tests, how many called ``check_grads`` (in the
JAX run), the passes with each checker, the ids that pass with JAX's and fail with ours (with
the first line of our message), the ids that fail with JAX's and pass with ours (with JAX's),
the skips of each run, and the wall time of each run (pytest's whole subprocess, ``-n`` workers
included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "jax_suite"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "jax_suite_compare.md"
CHECKERS = ("jax", "jaxbp")
MESSAGE_CHARS = 200

RANK = {"passed": 0, "skipped": 1, "failed": 2}
"""Where a test has several records (a failing subtest, an error in teardown), the worst wins."""


def vendored_files() -> list[str]:
    return sorted(p.name for p in SUITE.glob("*_test.py"))


def first_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def outcomes(junit: Path) -> dict[str, dict]:
    """``Class::test → {outcome, message, calls}`` from a pytest ``--junitxml`` file."""
    out: dict[str, dict] = {}
    for case in ET.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname').rsplit('.', 1)[1]}::{case.get('name')}"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        record = {
            "outcome": "passed",
            "message": "",
            "calls": int(props.get("check_grads_calls", 0)),
        }
        for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                record.update(outcome=outcome, message=first_line(node.get("message")))
                break
        old = out.setdefault(test_id, record)
        if RANK[record["outcome"]] > RANK[old["outcome"]]:
            out[test_id] = record | {"calls": max(record["calls"], old["calls"])}
    return out


def run_file(name: str, checker: str, cases: int, workers: int) -> dict:
    """One pytest subprocess on ``tests/jax_suite/<name>`` with ``checker``: outcomes and time."""
    env = os.environ | {
        "JAX_NUM_GENERATED_CASES": str(cases),
        "JAXBP_JAX_SUITE_CHECKER": checker,
    }
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(SUITE / name), "-q", "-p", "no:cacheprovider"]
        cmd += [f"--junitxml={junit}"] + (["-n", str(workers)] if workers > 1 else [])
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        # 0: all passed, 1: some failed, 5: nothing selected; anything else is a broken run
        if proc.returncode not in (0, 1, 5) or (proc.returncode != 5 and not junit.exists()):
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
        tests = outcomes(junit) if junit.exists() else {}
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "tests": tests}


def compare(name: str, runs: dict[str, dict]) -> dict:
    """The summary of one file's two runs (:func:`run_file` for each checker)."""
    jax_tests, ours = runs["jax"]["tests"], runs["jaxbp"]["tests"]
    ids = sorted(jax_tests.keys() | ours.keys())

    def count(tests: dict, outcome: str) -> int:
        return sum(t["outcome"] == outcome for t in tests.values())

    def differ(a: dict, b: dict) -> list[dict]:
        """Ids that pass in ``a`` and fail in ``b``, with ``b``'s message."""
        return [
            {"id": i, "message": b[i]["message"]}
            for i in ids
            if a.get(i, {}).get("outcome") == "passed" and b.get(i, {}).get("outcome") == "failed"
        ]

    def skips(tests: dict) -> list[dict]:
        return [
            {"id": i, "reason": t["message"]} for i, t in tests.items() if t["outcome"] == "skipped"
        ]

    return {
        "file": name,
        "tests": len(ids),
        "called_check_grads": sum(t["calls"] > 0 for t in jax_tests.values()),
        "passed": {c: count(runs[c]["tests"], "passed") for c in CHECKERS},
        "failed": {c: count(runs[c]["tests"], "failed") for c in CHECKERS},
        "skipped": {c: skips(runs[c]["tests"]) for c in CHECKERS},
        "wall_s": {c: runs[c]["wall_s"] for c in CHECKERS},
        "pass_jax_fail_ours": differ(jax_tests, ours),
        "fail_jax_pass_ours": differ(ours, jax_tests),
        "fail_both": [
            i
            for i in ids
            if all(r["tests"].get(i, {}).get("outcome") == "failed" for r in runs.values())
        ],
    }


def table(rows: list[dict]) -> list[str]:
    head = (
        "| file | tests | called | pass JAX | pass ours | JAX ✓ ours ✗ | JAX ✗ ours ✓ | fail both "
        "| skip JAX | skip ours | wall JAX s | wall ours s |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        cells = [
            f"`{r['file']}`",
            r["tests"],
            r["called_check_grads"],
            r["passed"]["jax"],
            r["passed"]["jaxbp"],
            len(r["pass_jax_fail_ours"]),
            len(r["fail_jax_pass_ours"]),
            len(r["fail_both"]),
            len(r["skipped"]["jax"]),
            len(r["skipped"]["jaxbp"]),
            r["wall_s"]["jax"],
            r["wall_s"]["jaxbp"],
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def markdown(record: dict) -> str:
    rows = record["files"]
    out = [
        "# JAX's tests of check_grads users: JAX's check_grads vs jaxbp.verify.check_grads",
        "",
        f"`{record['command']}` — JAX_NUM_GENERATED_CASES={record['cases']}, jax "
        f"{record['jax']}, checkout {record['checkout']}, {record['workers']} pytest worker(s); "
        "the folder skips nothing for ours.",
        "",
        "*tests*: collected (the tests whose source calls check_grads); *called*: of those, how "
        "many called it in the JAX run (the others skipped before, or took a branch without it).",
        "",
        *table(rows),
    ]
    for r in rows:
        sections = [
            ("Pass with JAX's, fail with ours (our message)", r["pass_jax_fail_ours"], "message"),
            ("Fail with JAX's, pass with ours (JAX's message)", r["fail_jax_pass_ours"], "message"),
            ("Skipped with JAX's", r["skipped"]["jax"], "reason"),
            ("Skipped with ours", r["skipped"]["jaxbp"], "reason"),
        ]
        body = [(title, items, key) for title, items, key in sections if items]
        if not body and not r["fail_both"]:
            continue
        out += ["", f"## `{r['file']}`"]
        for title, items, key in body:
            out += ["", f"{title}:", ""] + [f"- `{i['id']}`: {i[key]}" for i in items]
        if r["fail_both"]:
            out += ["", "Fail with both:", ""] + [f"- `{i}`" for i in r["fail_both"]]
    return "\n".join(out) + "\n"


def checkout() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", nargs="+", default=vendored_files(), help="names in tests/jax_suite")
    ap.add_argument("--cases", type=int, default=10, help="JAX_NUM_GENERATED_CASES (default 10)")
    ap.add_argument("--workers", type=int, default=2, help="pytest -n workers (default 2)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file (JSON beside it)")
    a = ap.parse_args(argv)
    files = [f if f.endswith(".py") else f + ".py" for f in a.files]
    unknown = sorted(set(files) - set(vendored_files()))
    if unknown:
        ap.error(f"not in tests/jax_suite: {', '.join(unknown)}")

    started_at = checkout()
    rows = []
    for name in files:
        runs = {}
        for checker in CHECKERS:
            print(f"{name} with {checker}'s check_grads ...", file=sys.stderr, flush=True)
            runs[checker] = run_file(name, checker, a.cases, a.workers)
        rows.append(compare(name, runs))
    finished_at = checkout()
    record = {
        "command": " ".join(["python", "benchmarks/jax_suite_compare.py", *(argv or sys.argv[1:])]),
        "cases": a.cases,
        "workers": a.workers,
        "jax": version("jax"),
        # the tree under test may change while the runs go on (src/ being edited): both ends
        "checkout": started_at if finished_at == started_at else f"{started_at} → {finished_at}",
        "files": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(record), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print("\n".join(table(rows)))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
