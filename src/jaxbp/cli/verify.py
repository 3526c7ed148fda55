"""``jaxbp verify`` — every verifier check on a generated network: the hand gradient against rev /
fwd / fd, every other gradient source, every layer's δ, eager / jit / vmap / jit∘vmap with the
recompilation guard, and the VJP identities. Exit 0 when all pass, 1 when any fails, 2 on bad
arguments."""

from __future__ import annotations

import math
import time
from pathlib import Path

DTYPES = ("float32", "float64")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="verify hand-derived gradients against autodiff and finite differences",
        description=__doc__,
    )
    p.add_argument(
        "--sizes", default="64,32,10", help="layer widths, input first (default 64,32,10)"
    )
    p.add_argument(
        "--activation",
        default="sigmoid",
        help="hidden activation, or one per hidden layer comma-separated (default sigmoid)",
    )
    p.add_argument(
        "--output", default="softmax_ce", help="output layer and cost (default softmax_ce)"
    )
    p.add_argument("--l2", default="0", help="L2 coefficient λ ≥ 0 (default 0)")
    p.add_argument("--dtype", default="float64", help="float32 | float64 (default float64)")
    p.add_argument("--modes", default="rev,fwd,fd", help="oracles, comma-separated (default all)")
    p.add_argument("--batch", default="16", help="number of generated examples (default 16)")
    p.add_argument("--seed", default="0", help="seed of parameters, data and directions")
    p.add_argument(
        "--grad",
        default="manual",
        help="gradient source to check: manual (the δ recursion), graph, scan, custom_vjp",
    )
    p.add_argument(
        "--fd-budget",
        default="20000",
        help="parameters checked elementwise by fwd/fd; above it, projections ('none': no limit)",
    )
    p.add_argument(
        "--devices",
        default=None,
        help="also check the data-parallel hand gradient with the batch sharded over N devices "
        "(jaxbp.distributed; on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    )
    p.add_argument(
        "--sections",
        default="all",
        help="checks to run, comma-separated: gradient, sources, deltas, transforms, "
        "backward_vjp, loss_vjp (default all)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full record as JSON to PATH")
    p.set_defaults(run=run)


def _int(flag: str, text: str, minimum: int) -> int:
    from jaxbp.cli import UsageError

    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag}: expected an integer ≥ {minimum}, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{flag}: expected an integer ≥ {minimum}, got {text!r}")
    return value


def _choice(flag: str, text: str, valid) -> str:
    from jaxbp.cli import UsageError

    if text not in valid:
        raise UsageError(f"{flag}: unknown {text!r}; valid choices are {', '.join(valid)}")
    return text


def parse_args(args) -> dict:
    """Validates every flag; a :class:`~jaxbp.cli.UsageError` naming the flag and the choices."""
    from jaxbp.activations import ACTIVATIONS
    from jaxbp.cli import UsageError
    from jaxbp.cli.demo import parse_sizes
    from jaxbp.losses import OUTPUTS
    from jaxbp.verify import GRAD_SOURCES, MODES
    from jaxbp.verify.mlp import SECTIONS

    sizes = parse_sizes(args.sizes)
    names = tuple(a.strip() for a in args.activation.split(","))
    for name in names:
        _choice("--activation", name, tuple(ACTIVATIONS))
    n_hidden = len(sizes) - 2
    if len(names) > 1 and len(names) != n_hidden:
        raise UsageError(
            f"--activation: got {len(names)} names for {n_hidden} hidden layer(s) of --sizes "
            f"{args.sizes}; give one name, or one per hidden layer"
        )
    modes = tuple(m.strip() for m in args.modes.split(","))
    for mode in modes:
        _choice("--modes", mode, MODES)
    try:
        l2 = float(args.l2)
    except ValueError:
        l2 = math.nan
    if not (math.isfinite(l2) and l2 >= 0):
        raise UsageError(f"--l2: expected a finite number ≥ 0, got {args.l2!r}")
    if args.sections.strip() == "all":
        sections = SECTIONS
    else:
        sections = tuple(name.strip() for name in args.sections.split(","))
        for name in sections:
            _choice("--sections", name, SECTIONS)
        if len(set(sections)) != len(sections):
            raise UsageError(f"--sections: a section is named twice in {args.sections!r}")
    budget = None if args.fd_budget.lower() == "none" else _int("--fd-budget", args.fd_budget, 0)
    if args.json:
        parent = Path(args.json).expanduser().resolve().parent
        if not parent.is_dir():
            raise UsageError(f"--json: directory {str(parent)!r} does not exist")
    return {
        "sizes": sizes,
        "activation": names[0] if len(names) == 1 else names,
        "output": _choice("--output", args.output, tuple(OUTPUTS)),
        "l2": l2,
        "dtype": _choice("--dtype", args.dtype, DTYPES),
        "modes": modes,
        "batch": _int("--batch", args.batch, 1),
        "seed": _int("--seed", args.seed, 0),
        "grad": _choice("--grad", args.grad, GRAD_SOURCES),
        "fd_budget": budget,
        "devices": None if args.devices is None else _int("--devices", args.devices, 1),
        "sections": sections,
    }


def run(args) -> int:
    from jaxbp.cli import UsageError

    options = parse_args(args)
    import jax

    if options["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    from jaxbp.verify import verify_mlp

    devices = options.pop("devices")
    if devices is not None and devices > len(jax.devices()):
        raise UsageError(
            f"--devices: {devices} requested but {len(jax.devices())} "
            f"{jax.default_backend()} device(s) are available "
            "(on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )
    if devices is not None and options["batch"] % devices:
        raise UsageError(
            f"--batch: {options['batch']} examples do not split evenly over --devices {devices}"
        )
    t0 = time.perf_counter()
    try:
        result = verify_mlp(**options)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    sharded = None
    if devices is not None:
        sharded = _sharded(options, devices)
    wall = time.perf_counter() - t0
    o = options
    print(
        f"jaxbp verify: sizes {o['sizes']}, activation {o['activation']}, output {o['output']}, "
        f"l2 {o['l2']}, {o['dtype']}, m = {o['batch']}, seed {o['seed']}, grad {o['grad']}, "
        f"modes {','.join(o['modes'])}, sections {','.join(o['sections'])}, "
        f"backend {jax.default_backend()}\n"
    )
    print(result)
    if sharded is not None:
        print(f"\nsharded over {devices} device(s): data-parallel hand gradient vs autodiff")
        print(sharded)
    ok = result.ok and (sharded is None or sharded.ok)
    print(f"wall time {wall:.2f} s: {'PASS' if ok else 'FAIL'}")
    if args.json:
        record = result.to_dict()
        record["seconds"]["wall"] = wall
        if sharded is not None:
            record["sharded"] = {"devices": devices, **sharded.to_dict()}
            record["ok"] = ok
        import json

        from jaxbp.files import write_atomic

        write_atomic(Path(args.json).expanduser(), json.dumps(record, indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    return 0 if ok else 1


def _sharded(options: dict, devices: int):
    """The same network and batch, checked with the batch split over ``devices`` devices."""
    import jax.numpy as jnp

    from jaxbp.distributed import data_mesh
    from jaxbp.distributed.verify import sharded_check
    from jaxbp.verify.mlp import make_problem

    o = options
    params, x, y = make_problem(
        o["sizes"],
        activation=o["activation"],
        output=o["output"],
        dtype=jnp.dtype(o["dtype"]),
        batch=o["batch"],
        seed=o["seed"],
    )
    return sharded_check(
        data_mesh(devices),
        params,
        x,
        y,
        activation=o["activation"],
        output=o["output"],
        l2=o["l2"],
        modes=o["modes"],
        fd_budget=o["fd_budget"],
    )
