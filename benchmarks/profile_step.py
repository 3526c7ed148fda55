"""Profile evidence for docs/benchmarks.md: where a training step's time goes, and how far it is
from the time of its matrix products alone.

For each configuration and gradient method (default: hand-derived and plain ``jax.grad``):

1. compiles the jitted step that ``jaxbp bench`` times and lists its XLA ops: how many, and the
   matrix products (shape, contracting dimensions) — equal lists mean both methods run the same
   GEMMs, and where they differ the products only one method runs are listed;
2. runs it under ``jax.profiler`` (a Perfetto trace) and splits the per-op time into products
   (XLA ``dot``s, inside YNNPACK fusions or not) and everything else;
3. times, interleaved with the steps (:func:`jaxbp.bench.timing.interleaved`), a program that
   does only the step's products — a Wᵀ, δᵀ a and δ W per layer, same shapes, in ``jax.grad``'s
   layouts, all independent so XLA may overlap them — the time a step would take if everything
   else were free.
4. with ``--torch``, the same two for PyTorch, each in PyTorch's own worker process
   (:mod:`jaxbp.bench.torch_worker`): its autograd step and its products alone, so that the
   libraries' matrix products and the rest of each step can be compared separately.

    PYTHONPATH=src python benchmarks/profile_step.py --configs mnist,wide,deep --torch
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
from jaxbp.bench.peers import prepare_torch, torch_worker
from jaxbp.bench.timing import interleaved, paired_ratio

SKIP = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")


def compiled_ops(method: str, problem) -> tuple[dict[str, str], list[str]]:
    """op name → "dot" or "other" for the compiled step's entry computation, and its products."""
    optimizer = optax.sgd(0.1)
    step = make_step(value_and_grad_fn(method, "sigmoid"), optimizer)
    lowered = step.lower(problem.params, optimizer.init(problem.params), problem.x, problem.y)
    text = lowered.compile().as_text()
    entry = text[text.index("ENTRY") :]
    entry = entry[: entry.index("\n}")]
    kinds, dots = {}, []
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if not m or m.group(3) in SKIP:
            continue
        name, shape, op = m.groups()
        source = line
        called = re.search(r"calls=%([\w.\-]+)", line)
        if op != "dot" and called:
            body = text[text.index("%" + called.group(1) + " ") :]
            source = body[: body.index("\n}")]
        dims = re.search(r"lhs_contracting_dims=\{(\d)\}, rhs_contracting_dims=\{(\d)\}", source)
        kinds[name] = "dot" if dims else "other"
        if dims:
            dots.append(f"{shape.split('{')[0]} lhs {dims.group(1)} rhs {dims.group(2)}")
    return kinds, sorted(dots)


def op_times(run, steps: int) -> collections.Counter:
    """ms per step of every op, from a profiler trace of ``steps`` steps of ``run``."""
    folder = tempfile.mkdtemp(prefix="jaxbp-profile-")
    try:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            run(steps)
        (path,) = glob.glob(folder + "/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            per_op[e["name"]] += e["dur"] / 1e3 / steps
    return per_op


def products_only(config):
    """``run(n)``: n calls of a program doing only the step's matrix products (module
    docstring, item 3), on random data."""
    m, sizes = config.batch, config.sizes
    arrays = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        ka, kw, kd = jax.random.split(jax.random.fold_in(jax.random.key(1), l), 3)
        arrays.append(
            (
                jax.random.normal(ka, (m, n_in)),
                jax.random.normal(kw, (n_out, n_in)),
                jax.random.normal(kd, (m, n_out)),
            )
        )

    @jax.jit
    def products(arrays):
        out = []
        for l, (a, W, d) in enumerate(arrays):
            out += [a @ W.T, d.T @ a]  # eqs. F2 and B3
            if l > 0:
                out.append(d @ W)  # eq. B2 (not needed below the first weight layer)
        return out

    jax.block_until_ready(products(arrays))

    def run(n: int) -> None:
        out = None
        for _ in range(n):
            out = products(arrays)
        jax.block_until_ready(out)

    return run


def torch_products_only(config):
    """Like :func:`products_only`, in PyTorch's worker process (its seconds per call)."""
    call, _ = torch_worker()
    name = f"products-{config.name}"
    call("products", name, list(config.sizes), config.batch, "float32")
    return lambda n: call("run", name, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,course,mnist,wide,deep")
    parser.add_argument("--methods", default="hand,autodiff")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per method (timing)")
    parser.add_argument(
        "--torch", action="store_true", help="also PyTorch's step and products, in its process"
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(
        "| config | method | ops | products | product ms | other ms | products' share "
        "| step / products-only |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for name in args.configs.split(","):
        config = CONFIGS[name]
        problem = make_problem(config)
        runs = {m: prepare_jax(m, problem).run for m in methods}
        runs["products only"] = products_only(config)
        if args.torch:
            runs["torch"] = prepare_torch(problem).run
            runs["torch products only"] = torch_products_only(config)
        timings = interleaved(runs, budget_s=args.budget)
        if args.torch:
            ms = {k: timings[k].median * 1e3 for k in runs}
            verdicts.append(
                f"{name}: step ms — hand {ms[methods[0]]:.3f}, PyTorch {ms['torch']:.3f}; "
                f"products alone — XLA {ms['products only']:.3f}, PyTorch "
                f"{ms['torch products only']:.3f}; rest of the step — hand "
                f"{ms[methods[0]] - ms['products only']:.3f}, PyTorch "
                f"{ms['torch'] - ms['torch products only']:.3f}"
            )
        lists = []
        for method in methods:
            kinds, dots = compiled_ops(method, problem)
            lists.append(dots)
            per_op = op_times(runs[method], 3 if name == "wide" else 20)
            dot = sum(v for k, v in per_op.items() if kinds.get(k) == "dot")
            other = sum(v for k, v in per_op.items() if kinds.get(k) == "other")
            bound = paired_ratio(timings[method], timings["products only"])
            print(
                f"| {name} | {method} | {len(kinds)} | {len(dots)} | {dot:.3f} | {other:.3f} "
                f"| {100 * dot / (dot + other):.0f} % | {bound:.2f} |",
                flush=True,
            )
        same = all(d == lists[0] for d in lists)
        verdicts.append(f"{name}: the matrix products are {'the same' if same else 'DIFFERENT'}")
        products_ms = timings["products only"].median * 1e3
        verdicts[-1] += f" ({len(lists[0])}; products alone {products_ms:.3f} ms)"
        if not same:  # name the products only one method runs: result shape, contracting dims
            for method, dots in zip(methods, lists, strict=True):
                others = collections.Counter(d for ds in lists if ds is not dots for d in ds)
                own = collections.Counter(dots) - others
                listed = "; ".join(f"{n} × {d}" for d, n in sorted(own.items()))
                verdicts.append(f"  only in {method}: {listed or 'none'}")
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
