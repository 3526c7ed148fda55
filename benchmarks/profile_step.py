"""Profile evidence for docs/benchmarks.md: where a training step's time goes, per XLA op.

For each configuration and gradient method, compiles the same jitted step that ``jaxbp bench``
times, runs it under ``jax.profiler`` (a Perfetto trace), and splits the per-op device time into
matrix products (XLA ``dot``s, inside YNNPACK fusions or not) and everything else. It also counts
the ops of the compiled program and lists its products' dimension numbers, which shows whether
two methods run the same GEMMs.

    PYTHONPATH=src python benchmarks/profile_step.py --configs mnist,wide,deep --steps 20
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import shutil
import tempfile

import jax
import optax

from jaxbp.bench import CONFIGS
from jaxbp.bench.methods import make_problem, make_step, prepare_jax, value_and_grad_fn


def compiled_ops(method: str, problem) -> tuple[dict[str, str], int, list[str]]:
    """name → op kind ("dot" for products), the entry computation's op count, the dots."""
    optimizer = optax.sgd(0.1)
    step = make_step(value_and_grad_fn(method, "sigmoid"), optimizer)
    text = step.lower(problem.params, optimizer.init(problem.params), problem.x, problem.y)
    text = text.compile().as_text()
    entry = text[text.index("ENTRY") :]
    entry = entry[: entry.index("\n}")]
    kinds, dots = {}, []
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if not m or m.group(3) in (
            "parameter",
            "constant",
            "tuple",
            "get-tuple-element",
            "bitcast",
        ):
            continue
        name, shape, op = m.groups()
        is_dot = op == "dot"
        called = re.search(r"calls=%([\w.\-]+)", line)
        if called and not is_dot:
            body = text[text.index("%" + called.group(1) + " ") :]
            body = body[: body.index("\n}")]
            d = re.search(
                r"dot\(.*?lhs_contracting_dims=\{(\d)\}, rhs_contracting_dims=\{(\d)\}", body
            )
            is_dot = d is not None
            dims = d.groups() if d else None
        elif is_dot:
            d = re.search(r"lhs_contracting_dims=\{(\d)\}, rhs_contracting_dims=\{(\d)\}", line)
            dims = d.groups()
        kinds[name] = "dot" if is_dot else "other"
        if is_dot:
            dots.append(f"{shape} contracting lhs {dims[0]} rhs {dims[1]}")
    return kinds, len(kinds), sorted(dots)


def profile(method: str, problem, steps: int) -> dict[str, float]:
    """ms per step of dot ops and of other ops, from a profiler trace of ``steps`` steps."""
    prepared = prepare_jax(method, problem)
    prepared.run(3)
    folder = tempfile.mkdtemp(prefix="jaxbp-profile-")
    try:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            prepared.run(steps)
        (path,) = glob.glob(folder + "/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            per_op[e["name"]] += e["dur"] / 1e3 / steps
    return per_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,course,mnist,wide,deep")
    parser.add_argument("--methods", default="hand,autodiff")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print("| config | method | ops | dots | dot ms/step | other ms/step | dot share |")
    print("|---|---|---:|---:|---:|---:|---:|")
    same = {}
    for name in args.configs.split(","):
        problem = make_problem(CONFIGS[name])
        for method in args.methods.split(","):
            kinds, n_ops, dots = compiled_ops(method, problem)
            per_op = profile(method, problem, args.steps if name != "wide" else 3)
            dot = sum(v for k, v in per_op.items() if kinds.get(k) == "dot")
            other = sum(v for k, v in per_op.items() if kinds.get(k) == "other")
            same.setdefault(name, []).append(dots)
            print(
                f"| {name} | {method} | {n_ops} | {len(dots)} | {dot:.3f} | {other:.3f} "
                f"| {100 * dot / (dot + other):.0f} % |",
                flush=True,
            )
    print()
    for name, lists in same.items():
        verdict = "the same" if all(d == lists[0] for d in lists) else "DIFFERENT"
        print(f"{name}: the methods' matrix products (shape, contracting dims) are {verdict}")


if __name__ == "__main__":
    main()
