"""Before/after measurement of a change to the hand-derived gradient: the training step with
``jaxbp.value_and_grad`` as of a git revision ("before") and as in the working tree ("after"),
beside plain ``jax.grad``, interleaved in one process (docs/benchmarks.md, "Changes to the core").

    PYTHONPATH=src python benchmarks/ab_core.py --rev 1936228 --configs tiny,course,mnist
    PYTHONPATH=src python benchmarks/ab_core.py --rev HEAD --configs deep,64-256-10@512

A configuration is a name of ``jaxbp bench`` or any network as ``SIZES@BATCH`` (sizes joined by
``-``).

Only ``src/jaxbp/backprop.py`` is taken from the revision; the rest of jaxbp is the working tree's.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import jaxbp
from jaxbp.bench import CONFIGS
from jaxbp.bench.configs import custom_config
from jaxbp.bench.methods import make_problem, make_step
from jaxbp.bench.timing import interleaved, paired_ratio

ROOT = Path(__file__).resolve().parents[1]


def backprop_at(rev: str):
    """``jaxbp/backprop.py`` as of ``rev``, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/jaxbp/backprop.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "backprop_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("backprop_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(name: str):
    """A named configuration, or ``SIZES@BATCH`` such as ``64-256-10@512``."""
    if name in CONFIGS:
        return CONFIGS[name]
    sizes, _, batch = name.partition("@")
    return custom_config([int(n) for n in sizes.split("-")], int(batch))


def runner(value_and_grad, problem):
    optimizer = optax.sgd(0.1)
    step = make_step(value_and_grad, optimizer)
    state = [jax.tree.map(jnp.array, problem.params)]
    state.append(optimizer.init(state[0]))
    compiled = step.lower(state[0], state[1], problem.x, problem.y).compile()

    def run(n: int) -> None:
        for _ in range(n):
            state[0], state[1], _ = compiled(state[0], state[1], problem.x, problem.y)
        jax.block_until_ready(state[0])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="git revision of the 'before' backprop.py")
    parser.add_argument("--configs", default="tiny,course,mnist,wide,deep")
    parser.add_argument("--budget", type=float, default=4.0)
    args = parser.parse_args()
    before = backprop_at(args.rev)
    kw = dict(activation="sigmoid", output="softmax_ce")
    sources = {
        "before": lambda p, x, y: before.value_and_grad(p, x, y, **kw),
        "after": lambda p, x, y: jaxbp.value_and_grad(p, x, y, **kw),
        "jax.grad": lambda p, x, y: jaxbp.autodiff_value_and_grad(p, x, y, **kw),
    }
    print("| config | before ms | after ms | jax.grad ms | after / before | before / jax.grad "
          "| after / jax.grad |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        problem = make_problem(config(name))
        t = interleaved({k: runner(v, problem) for k, v in sources.items()}, budget_s=args.budget)
        ms = {k: v.median * 1e3 for k, v in t.items()}
        print(
            f"| {name} | {ms['before']:.4g} | {ms['after']:.4g} | {ms['jax.grad']:.4g} "
            f"| {paired_ratio(t['after'], t['before']):.3f} "
            f"| {paired_ratio(t['before'], t['jax.grad']):.3f} "
            f"| {paired_ratio(t['after'], t['jax.grad']):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
