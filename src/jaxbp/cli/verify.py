"""``jaxbp verify`` — every verifier check on a generated network: the hand gradient against rev /
fwd / fd, every other gradient source, every layer's δ, eager / jit / vmap / jit∘vmap with the
recompilation guard, and the VJP identities — or, with ``--case FILE.py:FUNCTION``, the checks on
your own gradient. Exit 0 when all pass, 1 when any fails, 2 on bad arguments."""

from __future__ import annotations

import math
import time
from pathlib import Path

from jaxbp.cli import cache
from jaxbp.cli.demo import ACTIVATION_NAMES, OUTPUT_NAMES

DTYPES = ("float32", "float64")

DEFAULTS = {
    "sizes": "64,32,10",
    "activation": "sigmoid",
    "output": "softmax_ce",
    "l2": "0",
    "dtype": "float64",
    "modes": "rev,fwd,fd",
    "batch": "16",
    "seed": "0",
    "grad": "manual",
    "fd_budget": "auto",
    "devices": None,
    "sections": "all",
}
"""The flags' defaults; argparse leaves them None, so that a flag given explicitly is known."""

MODE_NAMES = ("rev", "fwd", "fd")
GRAD_NAMES = ("manual", "graph", "scan", "custom_vjp")
SECTION_NAMES = ("gradient", "sources", "deltas", "transforms", "backward_vjp", "loss_vjp")
"""Valid values for ``--help`` without importing JAX; tests keep them equal to
:data:`jaxbp.verify.MODES`, :data:`jaxbp.verify.GRAD_SOURCES`, :data:`jaxbp.verify.mlp.SECTIONS`."""

MLP_FLAGS = ("sizes", "activation", "output", "l2", "dtype", "batch", "grad", "devices", "sections")
"""The flags that describe the generated network: not combinable with ``--case``."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="verify hand-derived gradients against autodiff and finite differences",
        description=__doc__,
    )
    p.add_argument("--sizes", help="layer widths, input first (default 64,32,10)")
    p.add_argument(
        "--activation",
        help="hidden activation, or one per hidden layer comma-separated: "
        f"{', '.join(ACTIVATION_NAMES)} (default sigmoid)",
    )
    p.add_argument(
        "--output", help=f"output layer and cost: {', '.join(OUTPUT_NAMES)} (default softmax_ce)"
    )
    p.add_argument("--l2", help="L2 coefficient λ ≥ 0 (default 0)")
    p.add_argument("--dtype", help="float32 or float64 (default float64)")
    p.add_argument(
        "--modes",
        help=f"oracles, comma-separated: {', '.join(MODE_NAMES)} (default all: rev,fwd,fd)",
    )
    p.add_argument("--batch", help="number of generated examples (default 16)")
    p.add_argument("--seed", help="seed of parameters, data and directions (default 0)")
    p.add_argument(
        "--grad",
        help="gradient source to check: manual (the δ recursion, default), "
        f"{', '.join(GRAD_NAMES[1:])}",
    )
    p.add_argument(
        "--fd-budget",
        help="coordinates checked by fwd/fd in total: 'auto' (default: every one while the loss "
        "evaluations stay within the FLOP budget, else a sample plus random projections), N, or "
        "'none' (every coordinate)",
    )
    p.add_argument(
        "--devices",
        help="also check the data-parallel hand gradient with the batch sharded over N devices "
        "(jaxbp.distributed; on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    )
    p.add_argument(
        "--sections",
        help=f"checks to run, comma-separated: {', '.join(SECTION_NAMES)} (default all)",
    )
    p.add_argument(
        "--case",
        metavar="FILE.py:FUNCTION",
        help="check your own gradient instead of a generated network: FUNCTION() takes no "
        "arguments and returns (grad_fn, loss_fn, params, args), a mapping with those keys and "
        "optional 'options' (keywords of jaxbp.verify.check), or {'custom_vjp': f, "
        "'reference': ref, 'primals': (...)}; --modes, --seed, --fd-budget and --json apply, "
        "the network flags do not; float64 is enabled",
    )
    p.add_argument("--json", metavar="PATH", help="write the full record as JSON to PATH")
    cache.add_flag(p)
    p.set_defaults(run=run)


def explicit(args) -> dict:
    """The flags given on the command line (argparse name → text)."""
    return {name: getattr(args, name) for name in DEFAULTS if getattr(args, name, None) is not None}


def _value(args, name: str):
    given = getattr(args, name, None)
    return DEFAULTS[name] if given is None else given


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
    from jaxbp.cli import UsageError
    from jaxbp.cli.demo import parse_activation, parse_sizes
    from jaxbp.losses import OUTPUTS
    from jaxbp.verify import GRAD_SOURCES, MODES
    from jaxbp.verify.mlp import SECTIONS

    args = _resolved(args)
    sizes = parse_sizes(args.sizes)
    for name in args.activation.split(","):
        _choice("--activation", name.strip(), ACTIVATION_NAMES)
    activation = parse_activation(args.activation, sizes)
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
    text = args.fd_budget.strip().lower()
    budget = (
        {"none": None, "auto": "auto"}.get(text)
        if text in ("none", "auto")
        else (_int("--fd-budget", args.fd_budget, 0))
    )
    if args.json:
        _check_json(args.json)
    return {
        "sizes": sizes,
        "activation": activation,
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


def _resolved(args):
    """A copy of ``args`` with every flag not given replaced by its default."""
    import argparse

    values = vars(args).copy()
    values.update({name: _value(args, name) for name in DEFAULTS})
    return argparse.Namespace(**values)


def run(args) -> int:
    from jaxbp.cli import UsageError

    if getattr(args, "case", None) is not None:
        return run_case(args)
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
        _write_json(args.json, record)
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


# ------------------------------------------------------------------------- --case FILE.py:FUNCTION

CASE_KEYS = ("grad_fn", "loss_fn", "params", "args")
CUSTOM_VJP_KEYS = ("custom_vjp", "reference", "primals")
CASE_CONTRACT = (
    "expected (grad_fn, loss_fn, params, args), a mapping with keys grad_fn, loss_fn, params, "
    "args (and optional options), or a mapping with keys custom_vjp, reference, primals (and "
    "optional options)"
)


class _UserCodeFailed(Exception):
    """An exception raised inside the case's own functions, with the name of the function."""

    def __init__(self, who: str, error: BaseException):
        super().__init__(who)
        self.who, self.error = who, error


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exception(e: BaseException) -> str:
    """``Type: first line of the message``, one line."""
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {_one_line(first)}" if first else type(e).__name__


def _describe(obj) -> str:
    import reprlib

    return _one_line(f"a {type(obj).__name__} {reprlib.repr(obj)}", 160)


def _guarded(who: str, fn):
    """``fn``, with any exception it raises tagged with ``who`` (grad_fn, loss_fn, …)."""

    def call(*a, **kw):
        try:
            return fn(*a, **kw)
        except _UserCodeFailed:
            raise
        except Exception as e:
            raise _UserCodeFailed(who, e) from e

    return call


def _case_spec(text: str):
    """``FILE.py:FUNCTION`` → (path, function name); a UsageError for each way it is wrong."""
    from jaxbp.cli import UsageError

    file_part, sep, func = text.rpartition(":")
    if not sep or not func.isidentifier():
        raise UsageError(
            f"--case: expected FILE.py:FUNCTION, got {text!r} (no :FUNCTION after the file)"
        )
    path = Path(file_part).expanduser()
    if path.suffix != ".py":
        raise UsageError(
            f"--case: expected FILE.py:FUNCTION, got {text!r}: {file_part!r} is not a .py file"
        )
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"--case: file {file_part!r} {what} (got {text!r})")
    return path, func


def _import_case(path: Path):
    """Imports ``path`` as a module of its own name (no sys.path change); returns (module, name)."""
    import hashlib
    import importlib.util
    import sys

    from jaxbp.cli import UsageError

    name = "_jaxbp_case_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise UsageError(f"--case: cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and typing look the module up by name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise UsageError(f"--case: importing {str(path)!r} raised {_exception(e)}") from None
    return module, name


def _case_function(module, name: str, path: Path, func: str):
    from jaxbp.cli import UsageError

    if func not in vars(module):
        defined = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == name
        )
        raise UsageError(
            f"--case: {str(path)!r} has no function {func!r}; the callables it defines: "
            + (", ".join(defined) or "none")
        )
    fn = vars(module)[func]
    if not callable(fn):
        raise UsageError(f"--case: {path.name}:{func} is {_describe(fn)}, not a function")
    return fn


def _interpret(case, where: str) -> dict:
    """The case's return value → {kind, functions…, options}; a UsageError saying what it got."""
    from collections.abc import Mapping

    from jaxbp.cli import UsageError

    def bad(what: str):
        return UsageError(f"--case: {where} returned {what}; {CASE_CONTRACT}")

    if isinstance(case, Mapping):
        keys = [str(k) for k in case]
        required = CUSTOM_VJP_KEYS if "custom_vjp" in case else CASE_KEYS
        missing = [k for k in required if k not in case]
        unknown = [k for k in keys if k not in (*required, "options")]
        if missing or unknown:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise bad(f"a mapping with keys {', '.join(keys) or '(none)'} ({'; '.join(parts)})")
        found = dict(case)
    elif isinstance(case, (tuple, list)):
        if len(case) != 4:
            raise bad(f"a {type(case).__name__} of {len(case)} item(s)")
        found = dict(zip(CASE_KEYS, case, strict=True))
    else:
        raise bad(_describe(case))
    kind = "custom_vjp" if "custom_vjp" in found else "check"
    functions = ("custom_vjp", "reference") if kind == "custom_vjp" else ("grad_fn", "loss_fn")
    for key in functions:
        if not callable(found[key]):
            raise bad(f"{key} = {_describe(found[key])}, which is not callable")
    seq = "primals" if kind == "custom_vjp" else "args"
    if not isinstance(found[seq], (tuple, list)):
        raise bad(f"{seq} = {_describe(found[seq])}; {seq} must be a tuple")
    found[seq] = tuple(found[seq])
    options = found.get("options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise bad(f"options = {_describe(options)}; options must be a dict of keyword arguments")
    found["options"] = dict(options)
    found["kind"] = kind
    return found


def _accepts(fn) -> tuple[set, bool]:
    """The keyword names ``fn`` takes, and whether it takes any (``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return set(), True
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _plain(value):
    """Options as JSON-ready values (anything else as its repr)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return _one_line(repr(value), 200)


def _case_flags(args) -> dict:
    """``--modes``, ``--seed``, ``--fd-budget`` given explicitly, as check options."""
    from jaxbp.cli import UsageError
    from jaxbp.verify import MODES

    given = explicit(args)
    network = [f for f in MLP_FLAGS if f in given]
    if network:
        flag = "--" + network[0].replace("_", "-")
        raise UsageError(
            f"--case: cannot be combined with {flag} (got {given[network[0]]!r}); the case "
            "file defines its own problem"
        )
    flags = {}
    if "modes" in given:
        flags["modes"] = tuple(m.strip() for m in given["modes"].split(","))
        for mode in flags["modes"]:
            _choice("--modes", mode, MODES)
    if "seed" in given:
        flags["key"] = _int("--seed", given["seed"], 0)
    if "fd_budget" in given:
        text = given["fd_budget"].strip().lower()
        if text in ("none", "auto"):  # 'auto': jaxbp.verify.check's own sizing
            flags["fd_budget"] = None if text == "none" else "auto"
        else:
            flags["fd_budget"] = _int("--fd-budget", given["fd_budget"], 0)
    if args.json:
        _check_json(args.json)
    return flags


FLAG_OF = {"modes": "--modes", "key": "--seed", "fd_budget": "--fd-budget"}


def _check_json(path: str) -> None:
    """Refuses a ``--json`` path that cannot be written, before any check runs."""
    from jaxbp.cli import UsageError
    from jaxbp.files import check_writable

    try:
        check_writable(path)
    except ValueError as e:
        raise UsageError(f"--json: {e}") from None


def _write_json(path: str, record: dict) -> None:
    """Writes the ``--json`` record; a write that fails even so (disk full) is one line, exit 2."""
    import json

    from jaxbp.cli import UsageError
    from jaxbp.files import write_atomic

    try:
        write_atomic(Path(path).expanduser(), json.dumps(record, indent=2, allow_nan=False))
    except OSError as e:
        raise UsageError(f"--json: cannot write {path} ({e.strerror or e})") from None
    print(f"wrote {path}")


def run_case(args) -> int:
    """``jaxbp verify --case FILE.py:FUNCTION``: the checks on the user's own gradient."""
    import sys

    from jaxbp.cli import UsageError

    flags = _case_flags(args)
    path, func = _case_spec(args.case)
    import jax

    jax.config.update("jax_enable_x64", True)  # before the case builds its arrays
    from jaxbp import verify

    module, module_name = _import_case(path)
    try:
        fn = _case_function(module, module_name, path, func)
        where = f"{path.name}:{func}()"
        try:
            found = _interpret(fn(), where)
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"--case: calling {where} raised {_exception(e)}") from None
        kind = found["kind"]
        if kind == "custom_vjp":
            checker = getattr(verify, "check_custom_vjp", None)
            if checker is None:
                raise UsageError(
                    f"--case: {where} returned a custom_vjp case, but this jaxbp has no "
                    "jaxbp.verify.check_custom_vjp"
                )
        else:
            checker = verify.check
        checker_name = f"jaxbp.verify.{getattr(checker, '__name__', kind)}"
        names, any_keyword = _accepts(checker)
        options = dict(found["options"])
        options.pop("raise_on_fail", None)
        unknown = [k for k in options if k not in names and not any_keyword]
        if unknown:
            raise UsageError(
                f"--case: {where} returned options {', '.join(map(repr, unknown))} that "
                f"{checker_name} does not take; it takes "
                + ", ".join(sorted(names - {"raise_on_fail"}))
            )
        for key, value in flags.items():
            if key not in names and not any_keyword:
                raise UsageError(f"{FLAG_OF[key]}: {checker_name} takes no {key!r} option")
            options[key] = value
        if "raise_on_fail" in names or any_keyword:
            options["raise_on_fail"] = False
        if "title" in names and "title" not in options:
            options["title"] = f"{path.name}:{func}"

        t0 = time.perf_counter()
        try:
            if kind == "custom_vjp":
                report = checker(
                    found["custom_vjp"], _guarded("reference", found["reference"]),
                    *found["primals"], **options,
                )  # fmt: skip
            else:
                report = checker(
                    _guarded("grad_fn", found["grad_fn"]), _guarded("loss_fn", found["loss_fn"]),
                    found["params"], *found["args"], **options,
                )  # fmt: skip
        except _UserCodeFailed as e:
            raise UsageError(f"--case: {where}: {e.who} raised {_exception(e.error)}") from None
        except Exception as e:
            if kind == "check" and not isinstance(e, (ValueError, TypeError)):
                raise
            raise UsageError(f"--case: {where}: {checker_name} raised {_exception(e)}") from None
        wall = time.perf_counter() - t0
        meta = getattr(report, "meta", {}) or {}
        header = [checker_name]
        modes = meta.get("modes", options.get("modes"))
        if modes:
            header.append(f"modes {','.join(modes)}")
        key = meta.get("key")
        seed = meta.get("seed", key.get("seed") if isinstance(key, dict) else options.get("key"))
        if seed is not None:
            header.append(f"seed {seed}")
        header.append(f"backend {jax.default_backend()}")
        print(f"jaxbp verify --case {args.case}: {', '.join(header)}\n")
        print(report)
        ok = bool(report.ok)
        print(f"wall time {wall:.2f} s: {'PASS' if ok else 'FAIL'}")
        if args.json:
            record = report.to_dict() if hasattr(report, "to_dict") else {"report": str(report)}
            record["ok"] = ok
            record["case"] = {
                "spec": args.case,
                "file": str(path.resolve()),
                "function": func,
                "kind": kind,
                "checker": checker_name,
                "options": _plain({k: v for k, v in options.items() if k != "raise_on_fail"}),
            }
            record.setdefault("seconds", {})["wall"] = wall
            _write_json(args.json, record)
        return 0 if ok else 1
    finally:
        sys.modules.pop(module_name, None)
