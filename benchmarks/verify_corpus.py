"""The verifier on a corpus of real derivative rules with planted bugs (tests/verify_corpus.py).

    python benchmarks/verify_corpus.py [--out benchmarks/results/verify_corpus.md] [--cases a,b]

writes a markdown table to ``--out`` and the full record (every verdict, message and time, and
our report's rows wherever JAX's check catches a bug that ours misses) as JSON beside it (same
name, ``.json``), and prints the summary.

Each case is run with its correct rule and with its planted bug, in the case's own precision
(``case.context()``: float64, or float32 with x64 off as a JAX user's default), by:

- **ours** — ``jaxbp.verify.check_grads(f, args, **case.kwargs)``;
- **jax** — ``jax.test_util.check_grads`` with the same arguments;
- **check_custom_vjp** — ``jaxbp.verify.check_custom_vjp(f, case.reference, *args)``, where the
  case has a reference (else "n/a"); its verdict is ``report.ok``.

Verdicts: on a bug, **caught** (the checker raised AssertionError / its report is not ok) or
**missed**; on a correct rule, **ok** or **false alarm**; **error**: any other exception, warnings
included (the test suite turns warnings into errors). The contract (docs/verify.md, section 6):
ours catches every bug JAX catches — a case where it does not is a **violation**, listed with our
report's rows for the bug. **leaves**: whether our failure message names every argument path the
bug makes wrong (``case.leaves``). **gap**: how far the bug moves the JVPs / VJPs that check_grads
compares (``verify_corpus.derivative_gap``; round-off is ~1e-8 in float64, ~3e-4 in float32).
Times are wall seconds of one call in a process that has run the earlier cases, so they include
whatever compilation that call needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # as tests/conftest.py; a case's x64=False turns it off

from jax.test_util import check_grads as jax_check_grads  # noqa: E402

from jaxbp.verify import check_custom_vjp, check_grads, check_grads_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import verify_corpus  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "verify_corpus.md"
CHECKERS = ("ours", "jax", "check_custom_vjp")
ROW_FIELDS = (
    "oracle",
    "transform",
    "path",
    "method",
    "worst_index",
    "value",
    "reference",
    "error",
    "tolerance",
    "max_rel",
    "rtol",
    "atol",
    "margin",
    "status",
    "note",
)
"""The fields of our report's rows kept in the record (those the installed Row has; tolerance is
its ``bound`` where it has one, else atol + rtol·|reference| at the worst element)."""


def _call(checker: str, case, f, args) -> None:
    if checker == "ours":
        check_grads(f, args, **case.kwargs)
    elif checker == "jax":
        jax_check_grads(f, args, **case.kwargs)
    else:
        report = check_custom_vjp(f, case.reference, *args)
        if not report.ok:
            raise AssertionError(f"check_custom_vjp failed at {', '.join(report.failed)}")


def run(checker: str, case, bug: bool) -> dict:
    """One checker on one variant: status passed / failed / error / n/a, seconds, message."""
    if checker == "check_custom_vjp" and case.reference is None:
        return {"status": "n/a", "seconds": None, "message": "no reference"}
    t0 = time.perf_counter()
    try:
        with case.context(), warnings.catch_warnings():
            warnings.simplefilter("error")
            f, args = case.make(bug)
            _call(checker, case, f, args)
    except AssertionError as e:
        status, message = "failed", str(e).strip().splitlines()[0][:400]
    except Exception as e:  # the checker broke: an error, not a verdict
        status, message = "error", f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"
    else:
        status, message = "passed", ""
    return {"status": status, "seconds": time.perf_counter() - t0, "message": message}


def verdict(kind: str, status: str) -> str:
    if status in ("n/a", "error"):
        return status
    if kind == "bug":
        return "caught" if status == "failed" else "missed"
    return "false alarm" if status == "failed" else "ok"


def our_rows(case) -> list[dict]:
    """Our report's rows for the bug: those on the leaves it makes wrong, else all of them."""
    with case.context():
        report = check_grads_report(*case.make(True), **case.kwargs)
    rows = [r.to_dict() for r in report.rows]
    picked = [r for r in rows if any(leaf in r["path"] for leaf in case.leaves)] or rows
    for r in picked:
        r.setdefault("error", r["max_abs"])
        r["tolerance"] = r.get("bound", r["atol"] + r["rtol"] * abs(r["reference"]))
    return [{k: r[k] for k in ROW_FIELDS if k in r} for r in picked]


def run_case(case) -> dict:
    record = {
        "case": case.name,
        "category": case.category,
        "bug": case.bug,
        "source": case.source,
        "doc": case.doc,
        "precision": "float64" if case.x64 else "float32 (x64 off)",
        "kwargs": {k: repr(v) for k, v in case.kwargs.items()},
        "leaves": list(case.leaves),
        "correct": {c: run(c, case, False) for c in CHECKERS},
        "planted": {c: run(c, case, True) for c in CHECKERS},
        "gap": verify_corpus.derivative_gap(case),
    }
    ours = record["planted"]["ours"]
    record["leaves_named"] = ours["status"] == "failed" and all(
        leaf in ours["message"] for leaf in case.leaves
    )
    record["violation"] = (
        record["planted"]["jax"]["status"] == "failed" and ours["status"] != "failed"
    )
    record["our_rows"] = our_rows(case) if record["violation"] else []
    return record


def summary(records: list[dict]) -> list[str]:
    lines = [
        "| checker | bugs caught | missed | false alarms on correct rules | errors | n/a |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in CHECKERS:
        bug = [verdict("bug", r["planted"][c]["status"]) for r in records]
        good = [verdict("correct", r["correct"][c]["status"]) for r in records]
        ran = sum(v in ("caught", "missed") for v in bug)
        ran_good = sum(v in ("ok", "false alarm") for v in good)
        errors = bug.count("error") + good.count("error")
        lines.append(
            f"| {c} | {bug.count('caught')} / {ran} | {bug.count('missed')} | "
            f"{good.count('false alarm')} / {ran_good} | {errors} | {bug.count('n/a')} |"
        )
    return lines


def violations_line(records: list[dict]) -> str:
    bad = [r["case"] for r in records if r["violation"]]
    return (
        f"**Never less strict than JAX's check_grads:** {len(bad)} violation(s) — bugs JAX's "
        "check catches and ours misses" + (f": {', '.join(bad)}." if bad else ".")
    )


def _cell(kind: str, outcome: dict, notes: list[str]) -> str:
    v = verdict(kind, outcome["status"])
    if v == "error":
        if outcome["message"] not in notes:
            notes.append(outcome["message"])
        return f"error [{notes.index(outcome['message']) + 1}]"
    return f"**{v}**" if v in ("missed", "false alarm") else v


def markdown(record: dict) -> str:
    records = record["cases"]
    violations = [r for r in records if r["violation"]]
    m = record["machine"]
    lines = [
        "# The verifier on a corpus of real derivative rules with planted bugs",
        "",
        f"Generated by `{record['command']}` on {record['date']} ({record['wall_s']:.0f} s). "
        f"Machine: {m['cpu']}, {m['cores']} cores, JAX backend {m['backend']}, load average "
        f"{m['loadavg'][0]:.2f} at the start. jax {m['jax']}, jaxbp {m['jaxbp']} (git "
        f"{record['git']}). {len(records)} cases from tests/verify_corpus.py; the checkers and "
        "verdicts are described in the docstring of `benchmarks/verify_corpus.py`.",
        "",
        *summary(records),
        "",
        violations_line(records),
        "",
        "| case | category | precision | check_grads kwargs | planted bug | gap | JAX | ours | "
        "ours names the leaves | check_custom_vjp | correct: JAX | correct: ours | "
        "correct: check_custom_vjp |",
        "|---|---|---|---|---|---:|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in records:
        kw = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
        caught = r["planted"]["ours"]["status"] == "failed"
        named = ("yes" if r["leaves_named"] else "**no**") if caught else "–"
        lines.append(
            f"| {r['case']} | {r['category']} | {r['precision']} | {kw} | {_fmt(r['bug'])} | "
            f"{r['gap']:.1e} | {_cell('bug', r['planted']['jax'], notes)} | "
            f"{_cell('bug', r['planted']['ours'], notes)} | {named} | "
            f"{_cell('bug', r['planted']['check_custom_vjp'], notes)} | "
            f"{_cell('correct', r['correct']['jax'], notes)} | "
            f"{_cell('correct', r['correct']['ours'], notes)} | "
            f"{_cell('correct', r['correct']['check_custom_vjp'], notes)} |"
        )
    for r in violations:
        lines += [
            "",
            f"### Violation: {r['case']} ({r['bug']})",
            "",
            "Our report's rows for the bug:",
            "",
            "| " + " | ".join(ROW_FIELDS) + " |",
            "|---" * len(ROW_FIELDS) + "|",
        ]
        for row in r["our_rows"]:
            lines.append("| " + " | ".join(_fmt(row.get(k)) for k in ROW_FIELDS) + " |")
    if notes:
        lines += ["", "Errors:", ""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3e}"
    return "" if value is None else str(value).replace("|", "\\|")


def _git() -> str:
    def git(*a):
        try:
            done = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return (git("rev-parse", "--short", "HEAD") or "?") + (", uncommitted changes" if dirty else "")


def main(argv=None) -> int:
    from jaxbp.bench.suite import machine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file (JSON beside it)")
    ap.add_argument("--cases", help="comma-separated case names (default all)")
    a = ap.parse_args(argv)
    cases = verify_corpus.CASES
    if a.cases:
        wanted = [c.strip() for c in a.cases.split(",")]
        unknown = sorted(set(wanted) - {c.name for c in cases})
        if unknown:
            ap.error(f"--cases: unknown {unknown}")
        cases = [c for c in cases if c.name in wanted]
    started = datetime.datetime.now(datetime.UTC)
    info = machine()
    t0 = time.perf_counter()
    records = []
    for case in cases:
        r = run_case(case)
        records.append(r)
        verdicts = " ".join(f"{c} {verdict('bug', r['planted'][c]['status']):<7}" for c in CHECKERS)
        correct = verdict("correct", r["correct"]["ours"]["status"])
        flag = "  VIOLATION" if r["violation"] else ""
        print(f"{case.name:<32} {verdicts} correct: ours {correct}{flag}", file=sys.stderr)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t0,
        "command": ("python benchmarks/verify_corpus.py " + argv_text).strip(),
        "machine": info,
        "git": _git(),
        "cases": records,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(record)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print("\n".join(summary(records)))
    print(violations_line(records))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
