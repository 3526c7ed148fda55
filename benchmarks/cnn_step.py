"""The ``cnn`` configuration's training step, measured for docs/benchmarks.md ("cnn"): the
hand-derived step against ``jax.grad``'s and PyTorch's, each run in a process of its own, and
the two JAX steps' compiled programs compared op by op.

``time`` (the default) starts ``--processes`` fresh Python processes one after the other; each
times the methods with ``jaxbp bench``'s own harness (:func:`jaxbp.bench.bench_config`: shuffled
rounds, per-round ratios, their median) and prints its row as JSON. The parent reports every
process's step times and hand / X ratios and, over the processes, the median of those ratios.
A process per repetition means a fresh XLA compilation, thread pool and allocator each time, so
the spread over processes includes what one process's rounds cannot see.

``hlo`` compiles the hand-derived and ``jax.grad`` steps exactly as ``jaxbp bench`` does and
counts, in the optimized HLO of each, the convolutions (with their shapes and ``dim_labels``),
transposes, copies, reverses, reduce-windows, select-and-scatters, fusions — including the ops
inside fusions — and, before optimization, the StableHLO ops. ``--dump DIR`` writes the four
texts.

``profile`` runs both steps under ``jax.profiler`` and lists each one's ops by time per step
(with the profiler's overhead; ops XLA runs concurrently are summed), grouped as convolutions,
scatters (the pooling's gradient in ``jax.grad``'s step), products (``dot``) and the rest.

``--prototype FILE`` replaces ``jaxbp.layers.Conv2D`` / ``MaxPool2D`` (whichever FILE defines)
by FILE's, in every process, before anything is built — to measure a proposed change to
src/jaxbp/layers/conv.py or pooling.py without editing them. ``--ab FILE`` instead keeps the
layers as they are and adds a method ``hand+FILE`` — the hand-derived step with FILE's layers —
to the same shuffled rounds, so that the change is measured against the layers as they are in
the same process (its ratios: ``hand/hand+FILE``, ``hand+FILE/autodiff``).

    PYTHONPATH=src python benchmarks/cnn_step.py time --processes 5 --budget 3 --methods hand,autodiff,torch
    PYTHONPATH=src python benchmarks/cnn_step.py hlo --dump /tmp/cnn_hlo
    PYTHONPATH=src python benchmarks/cnn_step.py profile
    PYTHONPATH=src python benchmarks/cnn_step.py time --ab benchmarks/pool_scatter.py
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path


def install_prototype(path: str | None) -> dict:
    """Puts FILE's ``Conv2D`` / ``MaxPool2D`` into :mod:`jaxbp.layers` (module docstring);
    returns what it replaced (name → previous value, None where there was none)."""
    if not path:
        return {}
    import importlib.util

    import jaxbp.layers

    spec = importlib.util.spec_from_file_location(f"cnn_prototype_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    replaced = {}
    for name in ("Conv2D", "MaxPool2D"):
        if hasattr(module, name):
            replaced[name] = getattr(jaxbp.layers, name, None)
            setattr(jaxbp.layers, name, getattr(module, name))
    return replaced


def restore(replaced: dict) -> None:
    import jaxbp.layers

    for name, value in replaced.items():
        if value is None:
            delattr(jaxbp.layers, name)
        else:
            setattr(jaxbp.layers, name, value)


def ab_row(config, args) -> dict:
    """``bench_config``'s methods plus ``hand+FILE`` in the same rounds (``--ab``)."""
    from jaxbp.bench import suite
    from jaxbp.bench.configs import config_flops
    from jaxbp.bench.methods import make_problem, prepare_jax
    from jaxbp.bench.timing import interleaved, paired_ratio

    problem = make_problem(config, seed=args.seed)
    kw = dict(activation=args.activation, lr=0.1, precision=None)
    prepared = {m: suite.prepare(m, problem, **kw) for m in args.methods.split(",")}
    label = "hand+" + Path(args.ab).stem
    replaced = install_prototype(args.ab)
    try:  # the model is built and compiled here: the prototype's functions are traced now
        prepared[label] = prepare_jax("hand", problem, **kw)
    finally:
        restore(replaced)
    runs = {m: p.run for m, p in prepared.items() if p.status == "ok"}
    t = interleaved(runs, budget_s=args.budget)
    flops = config_flops(config)
    methods = {
        m: {
            "step_ms": t[m].median * 1e3,
            "samples": len(t[m].samples),
            "gflops": flops / t[m].median / 1e9,
        }
        if m in t
        else {"status": p.status, "reason": p.reason}
        for m, p in prepared.items()
    }
    ratios = {f"hand/{m}": paired_ratio(t["hand"], t[m]) for m in t if m != "hand"}
    if "autodiff" in t:
        ratios[f"{label}/autodiff"] = paired_ratio(t[label], t["autodiff"])
    return {"name": config.name, "batch": config.batch, "methods": methods, "ratios": ratios}


def worker(args) -> None:
    """One process's measurement: ``bench_config`` on ``cnn``, its row as one JSON line."""
    install_prototype(args.prototype)
    from jaxbp.bench import CONFIGS, bench_config

    config = CONFIGS["cnn"]
    if args.batch:
        config = config._replace(batch=args.batch)
    if args.ab:
        row = ab_row(config, args)
    else:
        row = bench_config(
            config,
            methods=args.methods.split(","),
            activation=args.activation,
            budget_s=args.budget,
            seed=args.seed,
        )
    row["loadavg"] = list(os.getloadavg())
    print(json.dumps(row))


def time_in_processes(args) -> dict:
    """``--processes`` workers in turn; per-process rows and the medians over processes."""
    cmd = [sys.executable, __file__, "worker", "--methods", args.methods, "--budget"]
    cmd += [str(args.budget), "--activation", args.activation, "--seed", str(args.seed)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.prototype:
        cmd += ["--prototype", args.prototype]
    if args.ab:
        cmd += ["--ab", args.ab]
    load_start = list(os.getloadavg())
    rows = []
    for i in range(args.processes):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        ms = {m: r.get("step_ms") for m, r in rows[-1]["methods"].items()}
        print(
            f"process {i + 1}/{args.processes}: "
            + ", ".join(f"{m} {v:.2f} ms" for m, v in ms.items() if v)
            + "; "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1]["ratios"].items())
            + f"; load {rows[-1]['loadavg'][0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    ratios = {k: [r["ratios"][k] for r in rows if k in r["ratios"]] for k in rows[0]["ratios"]}
    steps = {
        m: [r["methods"][m]["step_ms"] for r in rows if r["methods"][m].get("step_ms")]
        for m in rows[0]["methods"]
    }
    return {
        "processes": args.processes,
        "budget_s": args.budget,
        "activation": args.activation,
        "batch": rows[0]["batch"],
        "prototype": args.prototype,
        "ab": args.ab,
        "loadavg_start": load_start,
        "loadavg_end": list(os.getloadavg()),
        "rows": rows,
        "median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_range": {k: [min(v), max(v)] for k, v in ratios.items()},
        "median_step_ms": {m: statistics.median(v) for m, v in steps.items() if v},
        "rounds": {m: [r["methods"][m].get("samples") for r in rows] for m in rows[0]["methods"]},
    }


def markdown(result: dict) -> str:
    """The per-process table and the medians."""
    methods = [m for m in result["rows"][0]["methods"] if result["median_step_ms"].get(m)]
    ratios = list(result["median_ratio"])
    head = "| process | load | " + " | ".join(f"{m} ms" for m in methods)
    head += " | " + " | ".join(ratios) + " |"
    lines = [head, "|" + "---:|" * (2 + len(methods) + len(ratios))]
    for i, r in enumerate(result["rows"], 1):
        cells = [f"{r['methods'][m]['step_ms']:.2f}" for m in methods]
        cells += [f"{r['ratios'][k]:.3f}" for k in ratios]
        lines.append(f"| {i} | {r['loadavg'][0]:.2f} | " + " | ".join(cells) + " |")
    cells = [f"**{result['median_step_ms'][m]:.2f}**" for m in methods]
    cells += [f"**{result['median_ratio'][k]:.3f}**" for k in ratios]
    lines.append("| median | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- HLO -------------------------------------------------------------------------------------

COUNTED = (
    "convolution",
    "transpose",
    "copy",
    "reverse",
    "reduce-window",
    "select-and-scatter",
    "scatter",
    "gather",
    "pad",
    "dot",
    "fusion",
    "reduce",
    "broadcast",
    "select",
    "compare",
    "custom-call",
)


def compiled_step(method: str, args):
    """(lowered step, its arguments) of the step ``jaxbp bench`` times."""
    import optax

    from jaxbp.bench import CONFIGS
    from jaxbp.bench.methods import cnn_value_and_grad_fn, lenet, make_problem, make_step

    config = CONFIGS["cnn"]
    if args.batch:
        config = config._replace(batch=args.batch)
    problem = make_problem(config, seed=args.seed)
    spec = problem.model
    model = lenet(spec, args.activation, dtype=problem.x.dtype)
    optimizer = optax.sgd(0.1)
    step = make_step(cnn_value_and_grad_fn(method, model, spec.classes), optimizer)
    arguments = (problem.params, optimizer.init(problem.params), problem.x, problem.y)
    return step.lower(*arguments), arguments


def hlo_texts(method: str, args):
    """(StableHLO before optimization, optimized HLO) of the step ``jaxbp bench`` times."""
    lowered, _ = compiled_step(method, args)
    return lowered.as_text(), lowered.compile().as_text()


def entry_opcodes(text: str) -> dict[str, str]:
    """Entry-computation instruction name → its kind: ``convolution``, ``scatter`` (a fusion
    holding one, or the op), ``dot`` (likewise) or its opcode."""
    bodies = {}
    for m in re.finditer(r"^(?:ENTRY )?%([\w.\-]+) .*?\{\n(.*?)^\}", text, re.M | re.S):
        bodies[m.group(1)] = m.group(2)
    entry = re.search(r"^ENTRY .*?\{\n(.*?)^\}", text, re.M | re.S).group(1)
    kinds = {}
    for line in entry.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(", line)
        if not m:
            continue
        name, op = m.groups()
        called = re.search(r"calls=%([\w.\-]+)", line)
        body = bodies.get(called.group(1), "") if called else line
        for kind in ("convolution", "scatter", "dot"):
            if f" {kind}(" in body or op == kind:
                op = kind
                break
        kinds[name] = op
    return kinds


def op_times(method: str, args, steps: int = 10):
    """(ms per step of each entry op, op kinds) of ``method``'s step, from a profiler trace."""
    import glob
    import gzip
    import shutil
    import tempfile

    import jax
    import jax.numpy as jnp

    lowered, arguments = compiled_step(method, args)
    compiled = lowered.compile()
    kinds = entry_opcodes(compiled.as_text())
    state = [jax.tree.map(jnp.array, a) for a in arguments[:2]]  # the step donates them
    x, y = arguments[2:]

    def run(n):
        out = None
        for _ in range(n):
            state[0], state[1], out = compiled(state[0], state[1], x, y)
        jax.block_until_ready(out)

    run(3)
    folder = tempfile.mkdtemp(prefix="jaxbp-cnn-profile-")
    try:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            run(steps)
        (path,) = glob.glob(folder + "/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in kinds:
            per_op[e["name"]] += e["dur"] / 1e3 / steps
    return per_op, kinds


def profile(args) -> None:
    install_prototype(args.prototype)
    for method in ("hand", "autodiff"):
        per_op, kinds = op_times(method, args)
        groups = collections.Counter()
        for name, ms in per_op.items():
            k = kinds[name]
            groups[k if k in ("convolution", "scatter", "dot") else "other"] += ms
        total = sum(per_op.values())
        print(
            f"\n{method}: {total:.2f} ms of ops per step; "
            + ", ".join(f"{k} {v:.2f}" for k, v in groups.most_common())
        )
        for name, ms in per_op.most_common(args.top):
            print(f"  {ms:8.3f} ms  {kinds[name]:<14} {name}")


def op_counts(text: str) -> collections.Counter:
    """Every HLO instruction's opcode, counted over all computations (fusion bodies too)."""
    ops = re.findall(r"^\s*(?:ROOT )?%[\w.\-]+ = .*? ([a-z][\w\-]*)\(", text, re.M)
    return collections.Counter(ops)


def convolutions(text: str) -> list[str]:
    """Each optimized-HLO convolution as ``out = conv(lhs, rhs) dim_labels window``."""
    shapes = dict(re.findall(r"^\s*(?:ROOT )?(%[\w.\-]+) = (\w+\[[\d,]*\])", text, re.M))
    shapes.update(re.findall(r"(%[\w.\-]+): (\w+\[[\d,]*\])", text))  # parameters
    out = []
    for line in text.splitlines():
        if " convolution(" not in line:
            continue
        shape = re.search(r"= (\w+\[[\d,]*\])\S* convolution\(", line).group(1)
        operands = re.search(r"convolution\(([^)]*)\)", line).group(1)
        operand_shapes = [shapes.get(o.strip(), o.strip()) for o in operands.split(",")]
        window = re.search(r"window=\{([^}]*)\}", line)
        labels = re.search(r"dim_labels=(\S+?)[,\s]", line + " ")
        out.append(
            f"{shape} = conv({', '.join(operand_shapes)}) "
            f"{labels.group(1) if labels else ''} {{{window.group(1) if window else ''}}}"
        )
    return out


def stablehlo_counts(text: str) -> collections.Counter:
    return collections.Counter(re.findall(r"(stablehlo\.[\w.]+|chlo\.[\w.]+)", text))


def hlo(args) -> None:
    install_prototype(args.prototype)
    texts = {m: hlo_texts(m, args) for m in ("hand", "autodiff")}
    if args.dump:
        d = Path(args.dump)
        d.mkdir(parents=True, exist_ok=True)
        for m, (pre, post) in texts.items():
            (d / f"{m}.stablehlo.mlir").write_text(pre)
            (d / f"{m}.optimized.hlo").write_text(post)
    post = {m: op_counts(t[1]) for m, t in texts.items()}
    pre = {m: stablehlo_counts(t[0]) for m, t in texts.items()}
    print("optimized HLO, instructions by opcode (fusion bodies included):")
    print("| opcode | hand | autodiff |")
    print("|---|---:|---:|")
    keys = sorted(set(post["hand"]) | set(post["autodiff"]))
    shown = [k for k in COUNTED if k in keys] + [k for k in keys if k not in COUNTED]
    for k in shown:
        if k in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
            continue
        a, b = post["hand"].get(k, 0), post["autodiff"].get(k, 0)
        mark = " ←" if a != b else ""
        print(f"| {k} | {a} | {b}{mark} |")
    print("\nStableHLO before optimization, ops that differ:")
    for k in sorted(set(pre["hand"]) | set(pre["autodiff"])):
        a, b = pre["hand"].get(k, 0), pre["autodiff"].get(k, 0)
        if a != b:
            print(f"  {k}: hand {a}, autodiff {b}")
    for m, (_, text) in texts.items():
        print(f"\n{m}: convolutions in the optimized HLO")
        for c in convolutions(text):
            print("  " + c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="time", choices=("time", "hlo", "profile", "worker")
    )
    parser.add_argument("--top", type=int, default=12, help="profile: ops listed per method")
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--methods", default="hand,custom_vjp,autodiff,torch")
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--activation", default="sigmoid")
    parser.add_argument("--batch", type=int, default=0, help="default: the cnn config's (256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prototype", help="a file with Conv2D and/or MaxPool2D to use instead")
    parser.add_argument("--ab", help="time: add the hand step with this file's layers (above)")
    parser.add_argument("--json", help="write the time result here")
    parser.add_argument("--dump", help="hlo: write the StableHLO and optimized HLO texts here")
    args = parser.parse_args()
    if args.mode == "worker":
        worker(args)
    elif args.mode == "hlo":
        hlo(args)
    elif args.mode == "profile":
        profile(args)
    else:
        result = time_in_processes(args)
        print(markdown(result))
        print(
            f"\nload average {result['loadavg_start'][0]:.2f} at the start, "
            f"{result['loadavg_end'][0]:.2f} at the end; rounds per process "
            + ", ".join(f"{m} {v}" for m, v in result["rounds"].items())
        )
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
