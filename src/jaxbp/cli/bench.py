"""``jaxbp bench`` — time one training step of every gradient method on the benchmark networks,
beside PyTorch and scikit-learn, against the machine's measured GEMM peak (docs/benchmarks.md)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from jaxbp.cli.demo import ACTIVATION_NAMES
from jaxbp.files import write_atomic

DTYPES = ("float32", "float64")
PRECISIONS = ("default", "bfloat16", "tensorfloat32", "float32", "highest")
CONFIG_NAMES = ("tiny", "course", "mnist", "wide", "deep", "cnn")
METHOD_NAMES = (
    "hand", "scan", "vmap", "custom_vjp", "autodiff", "torch", "sklearn", "hand_bf16", "torch_bf16",
)  # fmt: skip
"""Valid names for ``--help`` without importing JAX; tests keep them equal to
:data:`jaxbp.bench.CONFIGS` and :data:`jaxbp.bench.METHODS`."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark the training step: hand-derived vs jax.grad vs PyTorch vs scikit-learn",
        description=__doc__,
    )
    p.add_argument("--quick", action="store_true", help="a subset that runs in under 3 minutes")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--configs",
        "--config",
        help=f"comma-separated configuration names: {', '.join(CONFIG_NAMES)} "
        "(cnn: LeNet on 28x28x1 images; default: all; --quick: tiny,course,mnist)",
    )
    p.add_argument("--sizes", help="a custom network instead of --configs, e.g. 64,32,10")
    p.add_argument("--batch", type=int, default=64, help="batch size of --sizes (default 64)")
    p.add_argument(
        "--methods", help=f"comma-separated methods: {', '.join(METHOD_NAMES)} (default: all)"
    )
    p.add_argument(
        "--activation",
        default="sigmoid",
        help=f"hidden activation: {', '.join(ACTIVATION_NAMES)} (default sigmoid)",
    )
    p.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    p.add_argument(
        "--matmul-precision",
        default="default",
        help="jax.default_matmul_precision of the JAX steps: default, bfloat16 (bf16 matmuls "
        "on accelerators), tensorfloat32, float32, highest",
    )
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds of timed samples per method and configuration (default 3; --quick 1)",
    )
    p.add_argument(
        "--peak-shapes",
        help="GEMM shapes MxKxN,... for the peak (default 1024x1024x1024,2048x2048x2048,"
        "1024x2048x2048,256x2048x2048; --quick the first and third)",
    )
    p.add_argument(
        "--no-accuracy", action="store_true", help="skip the time-to-97 %% run on digits"
    )
    p.add_argument(
        "--no-epoch",
        action="store_true",
        help="skip timing the step inside jaxbp train's epoch (hand-derived vs jax.grad)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip timing jaxbp.verify.check against jax.test_util.check_grads (the verify "
        "section: the 784-512-512-10 float32 MLP at batch 256, or the --sizes network)",
    )
    p.add_argument(
        "--devices",
        help="also measure data-parallel scaling over these device counts, e.g. 1,2,4 "
        "(jaxbp.distributed.bench_scaling; on a CPU the devices are forced slices of its cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of parameters and data")
    p.set_defaults(run=run)


def _names(text: str, valid, flag: str) -> list[str]:
    from jaxbp.cli import UsageError

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in valid]
    if not names or bad:
        raise UsageError(f"{flag}: unknown name(s) {bad or text!r}; valid: {', '.join(valid)}")
    return names


def parse(args):
    """Checks the arguments; returns (configs, methods, dtype name, precision, budget)."""
    from jaxbp.bench import CONFIGS, METHODS, QUICK, custom_config
    from jaxbp.cli import UsageError
    from jaxbp.cli.demo import parse_sizes

    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype: expected one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.matmul_precision not in PRECISIONS:
        raise UsageError(
            f"--matmul-precision: expected one of {', '.join(PRECISIONS)}, "
            f"got {args.matmul_precision!r}"
        )
    if not args.lr > 0:
        raise UsageError(f"--lr: must be > 0, got {args.lr}")
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 3.0)
    if not budget > 0:
        raise UsageError(f"--budget: must be > 0 seconds, got {budget}")
    if args.sizes is not None:
        if args.configs is not None:
            raise UsageError("--sizes: give either --sizes or --configs, not both")
        if args.batch < 1:
            raise UsageError(f"--batch: must be ≥ 1, got {args.batch}")
        configs = [custom_config(parse_sizes(args.sizes), args.batch)]
    else:
        names = (
            _names(args.configs, tuple(CONFIGS), "--configs")
            if args.configs is not None
            else (QUICK if args.quick else tuple(CONFIGS))
        )
        configs = [CONFIGS[n] for n in names]
    methods = _names(args.methods, METHODS, "--methods") if args.methods else list(METHODS)
    precision = None if args.matmul_precision == "default" else args.matmul_precision
    devices = parse_devices(args.devices, configs) if args.devices is not None else None
    shapes = parse_shapes(args.peak_shapes) if args.peak_shapes is not None else None
    return configs, methods, args.dtype, precision, budget, devices, shapes


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """ "1024x1024x1024,256x2048x2048" → [(1024, 1024, 1024), (256, 2048, 2048)]."""
    from jaxbp.cli import UsageError

    shapes = []
    for part in text.split(","):
        try:
            shape = tuple(int(v) for v in part.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise UsageError(
                f"--peak-shapes: expected comma-separated MxKxN with positive sizes, got {text!r}"
            )
        shapes.append(shape)
    return shapes


def parse_devices(text: str, configs) -> list[int]:
    """ "1,2,4" → [1, 2, 4], each dividing every MLP configuration's batch (scaling is measured
    for the MLPs only; at least one must be among ``configs``)."""
    from jaxbp.cli import UsageError

    configs = [c for c in configs if c.kind == "mlp"]
    if not configs:
        raise UsageError(
            "--devices: data-parallel scaling is measured for the MLP configurations only; "
            "add one to --configs"
        )

    try:
        counts = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--devices: expected comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--devices: device counts must be ≥ 1, got {text!r}")
    for c in configs:
        bad = [n for n in counts if c.batch % n]
        if bad:
            raise UsageError(
                f"--devices: {c.name}'s batch {c.batch} does not split evenly over {bad} device(s)"
            )
    return counts


def run(args) -> int:
    from jaxbp.cli import UsageError

    configs, methods, dtype_name, precision, budget, devices, shapes = parse(args)
    if args.json:
        from jaxbp.files import check_writable

        try:  # refused before minutes of timing, not after
            check_writable(args.json)
        except ValueError as e:
            raise UsageError(f"--json: {e}") from None

    # PyTorch and scikit-learn run in worker processes of their own (jaxbp.bench.peers), with
    # their libraries' default waiting policies and this process's thread count.
    import jax

    if dtype_name == "float64":
        jax.config.update("jax_enable_x64", True)
    if devices:
        from jaxbp.distributed.platform import request_cpu_devices

        try:  # before any JAX operation; affects the CPU backend only
            request_cpu_devices(max(devices))
        except RuntimeError as e:
            raise UsageError(f"--devices: {e}") from None
    import jax.numpy as jnp

    from jaxbp.activations import resolve
    from jaxbp.bench import run_bench
    from jaxbp.bench.accuracy import time_to_accuracy

    for c in configs:
        try:
            resolve(args.activation, len(c.sizes) - 2)
        except ValueError as e:
            raise UsageError(f"--activation: {e}") from None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    accuracy = None
    if not args.no_accuracy:
        dtype = jnp.dtype(dtype_name)

        def accuracy():
            return time_to_accuracy(dtype=dtype, seed=args.seed, log=log)

    result = run_bench(
        configs,
        methods=methods,
        dtype=jnp.dtype(dtype_name),
        activation=args.activation,
        lr=args.lr,
        precision=precision,
        budget_s=budget,
        peak_shapes=shapes,
        quick=args.quick,
        accuracy=accuracy,
        epoch=not args.no_epoch,
        seed=args.seed,
        log=log,
    )
    if devices:
        result["scaling"] = scaling(result, configs, devices, args, precision, log)
    if not args.no_verify:
        result["verify"] = verify_section(args, log)
    result["command"] = command(args)
    print(render(result))
    if args.json:
        write_atomic(Path(args.json), json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def verify_section(args, log) -> dict:
    """jaxbp.verify.check against jax.test_util.check_grads (jaxbp.bench.verify), in float32 on
    the target's 784-512-512-10 network at batch 256, or on the --sizes network and --batch."""
    from jaxbp.bench.verify import TARGET_BATCH, TARGET_SIZES, bench_verify
    from jaxbp.cli.demo import parse_sizes

    if args.sizes is not None:
        sizes, batch = tuple(parse_sizes(args.sizes)), args.batch
    else:
        sizes, batch = TARGET_SIZES, TARGET_BATCH
    return bench_verify(
        sizes,
        batch,
        "float32",
        activation=args.activation,
        repeats=1 if args.quick else 3,
        budget_s=60.0,
        seed=args.seed,
        log=log,
    )


def scaling(result: dict, configs, devices, args, precision, log) -> list[dict]:
    """Data-parallel throughput per device count for each MLP configuration (bench_scaling)."""
    import math

    from jaxbp.cli import UsageError
    from jaxbp.distributed import bench_scaling

    out = []
    for c, row in zip(configs, result["configs"], strict=True):
        if c.kind != "mlp":  # jaxbp.distributed's data-parallel step is the MLP's
            continue
        hand = row["methods"].get("hand", {})
        step_s = hand["step_ms"] / 1e3 if hand.get("step_ms") else 0.01
        steps = max(1, min(1000, math.ceil(0.2 / step_s)))  # ≈ 0.2 s per timing
        log(f"scaling {c.name} over {devices} device(s), {steps} steps per timing")
        try:
            rows = bench_scaling(
                devices,
                sizes=c.sizes,
                batch=c.batch,
                steps=steps,
                activation=args.activation,
                precision="bf16" if precision == "bfloat16" else "float32",
                repeats=5,
            )
        except ValueError as e:
            raise UsageError(f"--devices: {e}") from None
        out.append({"name": c.name, "rows": rows})
    return out


def command(args) -> str:
    """The ``jaxbp bench`` command line that reproduces this run (options away from defaults)."""
    parts = ["jaxbp", "bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value, default in (
        ("--configs", args.configs, None),
        ("--sizes", args.sizes, None),
        ("--batch", args.batch if args.sizes else 64, 64),
        ("--methods", args.methods, None),
        ("--activation", args.activation, "sigmoid"),
        ("--dtype", args.dtype, "float32"),
        ("--matmul-precision", args.matmul_precision, "default"),
        ("--lr", args.lr, 0.1),
        ("--budget", args.budget, None),
        ("--devices", args.devices, None),
        ("--peak-shapes", args.peak_shapes, None),
        ("--seed", args.seed, 0),
        ("--json", args.json, None),
    ):
        if value != default:
            parts += [flag, str(value)]
    if args.no_accuracy:
        parts.append("--no-accuracy")
    if args.no_epoch:
        parts.append("--no-epoch")
    if args.no_verify:
        parts.append("--no-verify")
    return " ".join(shlex.quote(p) for p in parts)


def _fmt(v, spec: str, empty: str = "—") -> str:
    return empty if v is None else format(v, spec)


def render(result: dict) -> str:
    """The results as text tables: machine, GEMM peak, one table per configuration, targets."""
    from jaxbp.bench.suite import describe_cpu

    m, s = result["machine"], result["settings"]
    lines = [
        f"{describe_cpu(m)}",
        f"{m['cores']} cores, {m.get('threads', m['cores'])} threads per peer, each peer in its "
        f"own process, backend {m['backend']} ({m['device']}), "
        f"jax {m['jax']}, torch {m['torch'] or 'not installed'}, sklearn {m['sklearn'] or 'not installed'}",
        f"{s['dtype']}, activation {s['activation']}, softmax_ce, {s['optimizer']}, "
        f"matmul precision {s['matmul_precision'] or 'default'}, load average {m['loadavg'][0]:.2f}"
        if m.get("loadavg")
        else f"{s['dtype']}, activation {s['activation']}",
    ]
    peak = result["gemm_peak"]
    shapes = ", ".join(
        f"{'x'.join(map(str, p['shape']))}: {p['gflops']:.0f}" for p in peak["per_shape"]
    )
    lines.append(f"GEMM peak {peak['gflops']:.1f} GFLOP/s (M x K x N → GFLOP/s: {shapes})")
    if peak.get("torch_per_shape"):
        shapes = ", ".join(
            f"{'x'.join(map(str, p['shape']))}: {p['gflops']:.0f}" for p in peak["torch_per_shape"]
        )
        lines.append(f"  PyTorch's a @ b, same rounds, its own process, for reference: {shapes}")
    for c in result["configs"]:
        lines.append("")
        sizes = c.get("model") or "-".join(map(str, c["sizes"]))
        lines.append(
            f"{c['name']}: {sizes}, batch {c['batch']}, {c['flops_per_step'] / 1e6:.1f} MFLOP/step"
        )
        header = (
            f"  {'method':<52} {'step ms':>10} {'IQR':>5} {'GFLOP/s':>8} {'% peak':>7} "
            f"{'vs hand':>8} {'compile s':>9} {'mem MiB':>8}"
        )
        lines.append(header)
        for name, row in c["methods"].items():
            if row["status"] != "ok":
                lines.append(f"  {row['label']:<52} {row['status']}: {row['reason']}")
                continue
            ratio = 1.0 if name == "hand" else c["ratios"].get(f"hand/{name}")
            vs = None if not ratio else 1 / ratio
            lines.append(
                f"  {row['label']:<52} {row['step_ms']:>10.4g} {100 * row['spread']:>4.0f}% "
                f"{row['gflops']:>8.1f} {_fmt(row['pct_peak'], '>6.1f')}% {_fmt(vs, '>7.2f')}x "
                f"{_fmt(row['compile_s'], '>9.2f')} {_fmt(row['memory_mib'], '>8.1f')}"
            )
        if c.get("in_epoch"):
            e = c["in_epoch"]
            lines.append(
                f"  inside jaxbp train's epoch ({e['minibatches']} minibatches of {c['batch']}): "
                f"hand-derived {e['manual_ms']:.4g} ms/step, jax.grad {e['autodiff_ms']:.4g} "
                f"ms/step, hand / jax.grad {e['ratio']:.3f}"
            )
    tta = result.get("time_to_accuracy")
    if tta:
        lines.append("")
        lines.append(render_tta(tta))
    for sc in result.get("scaling") or ():
        from jaxbp.distributed import scaling_markdown

        lines += ["", f"data-parallel scaling, {sc['name']} (jaxbp.distributed.bench_scaling):"]
        if sc["rows"] and sc["rows"][-1].get("forced_cpu_devices"):
            lines.append("  (forced CPU devices share the same cores: overhead, not speed-up)")
        lines += ["  " + line for line in scaling_markdown(sc["rows"]).splitlines()]
    if result.get("verify"):
        from jaxbp.bench.verify import render as render_verify

        lines += ["", render_verify(result["verify"])]
    if result["targets"]:
        lines += ["", *render_targets(result["targets"])]
    return "\n".join(lines)


def render_targets(targets: list[dict]) -> list[str]:
    """The performance targets, one line each: met or UNMET, the measured value, the threshold.

    In the product's terms only; the JSON's ``issue`` field keeps which tracker issue set each
    one (docs/benchmarks.md, "JSON output")."""
    lines = ["targets:"]
    for t in targets:
        op = "≥" if "peak" in t["target"] else ("<" if "PyTorch" in t["target"] else "≤")
        lines.append(
            f"  {'met  ' if t['met'] else 'UNMET'} {t['target']:<28} {t['config']:<7} "
            f"{t['value']:.3f} (target {op} {t['threshold']})"
        )
    return lines


def render_tta(tta: dict) -> str:
    """The time-to-accuracy lines."""
    rows = [
        f"time to {100 * tta['target']:.0f} % test accuracy on digits ({tta['setup']}), "
        f"median of {tta['repeats']} alternated runs:"
    ]
    for name, r in tta["runs"].items():
        acc = _fmt(r.get("test_accuracy"), ".4f")
        runs = ", ".join(f"{t:.2f}" for t in r["wall_s_all"])
        reached = "" if r["reached"] else f" — target NOT reached (accuracy {acc})"
        extra = ""
        if r.get("compile_s") is not None:
            extra = f", compile {r['compile_s']:.2f} s, first run {r['first_wall_s']:.2f} s"
        rows.append(
            f"  {name:<28} {r['wall_s']:.2f} s (runs {runs}; accuracy {acc}, "
            f"{r['epochs']} epochs{extra}){reached}"
        )
    if tta.get("ratio") is not None:
        rows.append(f"  ratio jaxbp / scikit-learn: {tta['ratio']:.3f}")
    return "\n".join(rows)
