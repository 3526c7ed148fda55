"""Configuration of ``jaxbp train``: the option table, TOML files, layering, validation, hash.

Every option is a config key and a flag (``batch_size`` ↔ ``--batch-size``). Layers, lowest
first: built-in defaults, the run directory's ``config.toml`` (with ``--resume``), ``--config
FILE.toml``, then the flags. :func:`resolve` validates the result and fills every derived
default (learning rate, batch size, initialisation, schedule, seeds), so that the ``config.toml``
written into a run directory is complete. Nothing here touches the file system except reading.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import NamedTuple

from jaxbp.cli import UsageError


class Option(NamedTuple):
    """One configuration key.

    Attributes:
      name: the config key; the flag is ``--`` + name with ``_`` → ``-``.
      kind: how values are parsed: str, int, float, bool, ints (a list), batch (int or "all"),
        activation (a name or one per hidden layer), column (first/last/number), path.
      default: the value when no layer sets it (None: derived or unset).
      help: the flag's help text.
      hashed: part of the config hash checked on ``--resume`` (False: may change on resume).
    """

    name: str
    kind: str
    default: object
    help: str
    hashed: bool = True


OPTIONS = (
    Option("dataset", "str", "digits", "built-in dataset (default digits)"),
    Option("data", "path", None, "training data file: CSV, NPZ (x, y), IDX images or .mat"),
    Option("test_data", "path", None, "a file with the test split (e.g. UCI .tes)"),
    Option("labels", "path", None, "IDX labels file for --data"),
    Option("test_labels", "path", None, "IDX labels file for --test-data"),
    Option("label_column", "column", "last", "CSV label column: first, last or a 1-based number"),
    Option("test_rows", "int", None, "use the last N rows of --data as the test split"),
    Option("classes", "int", None, "number of classes of spirals/blobs"),
    Option("samples", "int", None, "number of examples of spirals/blobs"),
    Option("data_seed", "int", 0, "seed of the train/val/test split and synthetic data"),
    Option("val_fraction", "float", 0.1, "stratified validation share of the training data"),
    Option("test_fraction", "float", 0.2, "stratified test share when there is no test file"),
    Option("scaling", "str", "capped", "feature scaling fitted on the training split"),
    Option("hidden", "ints", [256], "hidden layer widths, e.g. 64,64 ('none' for no hidden)"),
    Option("activation", "activation", "relu", "hidden activation, or one per hidden layer"),
    Option("output", "str", "softmax_ce", "output layer and cost"),
    Option("init", "str", None, "initialisation: ng, glorot, he (default: he for relu-like)"),
    Option("optimizer", "str", "adam", "sgd, momentum, adam, adamw or lbfgs"),
    Option("lr", "float", None, "learning rate α (default per optimizer)"),
    Option("schedule", "str", None, "learning-rate schedule (default cosine; lbfgs constant)"),
    Option("momentum", "float", 0.9, "β of --optimizer momentum"),
    Option("weight_decay", "float", 1e-4, "decoupled weight decay of adamw"),
    Option("epochs", "int", 40, "number of epochs (passes over the training split)", False),
    Option("batch_size", "batch", None, "minibatch rows or 'all' (default 64; lbfgs: all)"),
    Option("l2", "float", 3.0, "L2 coefficient λ of J(Θ) over the whole training split"),
    Option("grad", "str", "manual", "gradient source: manual (δ recursion), autodiff, graph"),
    Option("seed", "int", 0, "training seed (initialisation and minibatch order)"),
    Option("seeds", "ints", None, "several seeds trained at once by vmap, e.g. 0,1,2,3,4"),
    Option("patience", "int", 0, "early stopping after N epochs without validation gain"),
    Option("shadow_every", "int", 0, "compare manual and autodiff gradients every N epochs", False),
    Option("dtype", "str", "float32", "float32 or float64"),
    Option("precision", "str", "float32", "gradient compute: float32, or bf16 (manual grad only)"),
    Option("devices", "int", None, "devices each minibatch is split over (default: all)", False),
    Option("platform", "str", None, "cpu, gpu or tpu (default: JAX's own choice)", False),
    Option("checkpoint_every", "int", 1, "write the checkpoint every N epochs", False),
    Option("plots", "bool", True, "write PNG plots", False),
    Option("out", "path", None, "run directory (default runs/<dataset>-<timestamp>)", False),
)
OPTION = {o.name: o for o in OPTIONS}

DATA_KEYS = ("data", "test_data", "labels", "test_labels", "test_rows", "label_column")
"""Keys that only make sense with a data file; a layer choosing ``dataset`` clears them."""

PATH_KEYS = ("data", "test_data", "labels", "test_labels")
"""File paths: where to find the data, not what it is — the data fingerprint is hashed instead."""

DTYPES = ("float32", "float64")
RELU_LIKE = ("relu", "leaky_relu", "elu")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_value(option: Option, value, where: str):
    """Converts a flag string or a TOML value to the option's type; UsageError naming ``where``."""
    kind = option.kind

    def bad(expected):
        return UsageError(f"{where}: expected {expected}, got {value!r}")

    if kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if kind == "column":
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise bad("first, last or a column number")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad("an integer") from None
    if kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(number):
            raise bad("a finite number")
        return number
    if kind == "batch":
        if isinstance(value, str) and value.strip().lower() in ("all", "full"):
            return "all"
        return parse_value(Option(option.name, "int", None, ""), value, where)
    if kind == "ints":
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none"):
                return []
            items = text.split(",")
        elif isinstance(value, list):
            items = value
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [value]
        else:
            raise bad("comma-separated integers")
        try:
            return [int(str(i).strip()) for i in items if not isinstance(i, bool)]
        except ValueError:
            raise bad("comma-separated integers") from None
    if kind == "activation":
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value[0] if len(value) == 1 else list(value)
        if isinstance(value, str) and value:
            names = [s.strip() for s in value.split(",")]
            return names[0] if len(names) == 1 else names
        raise bad("an activation name or comma-separated names")
    raise AssertionError(kind)


def read_toml(path, *, what: str = "--config") -> dict:
    """A config file's keys, each validated and parsed. Relative data-file paths (``data``,
    ``test_data``, ``labels``, ``test_labels``) are relative to the config file's folder.

    Raises:
      UsageError: missing or invalid TOML, or an unknown key (with the closest valid key).
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what}: no such file {str(p)!r}")
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{what} {p}: invalid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {p}: cannot read ({e})") from None
    parsed = {}
    for key, value in raw.items():
        if key not in OPTION:
            close = difflib.get_close_matches(key, list(OPTION), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{what} {p}: unknown key {key!r}{hint}")
        parsed[key] = parse_value(OPTION[key], value, f"{what} {p}: key {key!r}")
        if key in PATH_KEYS:
            parsed[key] = str(p.parent / Path(parsed[key]).expanduser())
    return parsed


def layer(config: dict, update: dict) -> dict:
    """``config`` overridden by ``update``. A layer that picks a data source clears the other
    source's keys from lower layers (``--dataset`` clears ``data`` …, ``--data`` clears
    ``dataset``), and ``seed``/``seeds`` replace each other likewise."""
    out = dict(config)
    if "dataset" in update and "data" in update:
        raise UsageError("--dataset and --data: give one data source, not both")
    if "seed" in update and "seeds" in update:
        raise UsageError("--seed and --seeds: give one, not both")
    if "dataset" in update:
        for key in DATA_KEYS:
            out[key] = OPTION[key].default
    if "data" in update:
        out["dataset"] = None
    if "seed" in update:
        out["seeds"] = None
    if "seeds" in update:
        out["seed"] = OPTION["seed"].default
    out.update(update)
    return out


def defaults() -> dict:
    return {
        o.name: (list(o.default) if isinstance(o.default, list) else o.default) for o in OPTIONS
    }


def check_choice(key: str, value, valid) -> None:
    if value not in valid:
        raise UsageError(f"{flag(key)}: unknown {value!r}; valid values are {', '.join(valid)}")


def resolve(config: dict) -> dict:
    """Validates a layered config and fills its derived defaults. No I/O.

    Raises:
      UsageError: naming the flag and the value received.
    """
    from jaxbp.activations import ACTIVATIONS
    from jaxbp.data import BUILTIN, LABEL_COLUMNS, SCALINGS
    from jaxbp.distributed.platform import PLATFORMS
    from jaxbp.distributed.precision import PRECISIONS
    from jaxbp.losses import OUTPUTS
    from jaxbp.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES
    from jaxbp.params import SCHEMES
    from jaxbp.train import GRAD_SOURCES

    c = dict(config)
    if c["data"] is None:
        if c["dataset"] is None:
            raise UsageError("no data: give --dataset NAME or --data PATH")
        check_choice("dataset", c["dataset"], BUILTIN)
    lc = c["label_column"]
    if lc not in LABEL_COLUMNS and not (lc.isdigit() and int(lc) >= 1):
        raise UsageError(f"--label-column: expected first, last or a column number ≥ 1, got {lc!r}")
    check_choice("scaling", c["scaling"], SCALINGS)
    check_choice("output", c["output"], tuple(OUTPUTS))
    check_choice("optimizer", c["optimizer"], OPTIMIZERS)
    check_choice("grad", c["grad"], GRAD_SOURCES)
    check_choice("dtype", c["dtype"], DTYPES)
    check_choice("precision", c["precision"], PRECISIONS)
    if c["precision"] != "float32" and c["grad"] != "manual":
        raise UsageError(f"--precision: {c['precision']} needs --grad manual, got {c['grad']!r}")
    if c["platform"] is not None:
        check_choice("platform", c["platform"], PLATFORMS)
    if c["devices"] is not None and c["devices"] < 1:
        raise UsageError(f"--devices: must be ≥ 1, got {c['devices']}")
    hidden = c["hidden"]
    if any(h < 1 for h in hidden):
        raise UsageError(f"--hidden: widths must be positive integers, got {hidden}")
    names = [c["activation"]] if isinstance(c["activation"], str) else c["activation"]
    for name in names:
        check_choice("activation", name, tuple(ACTIVATIONS))
    if not isinstance(c["activation"], str) and len(names) != len(hidden):
        raise UsageError(
            f"--activation: {len(names)} names for {len(hidden)} hidden layer(s); give one name "
            "or one per hidden layer"
        )
    if c["init"] is None:
        c["init"] = "he" if all(n in RELU_LIKE for n in names) else "glorot"
    check_choice("init", c["init"], SCHEMES)
    lbfgs = c["optimizer"] == "lbfgs"
    if c["schedule"] is None:
        c["schedule"] = "constant" if lbfgs else "cosine"
    check_choice("schedule", c["schedule"], SCHEDULES)
    if lbfgs and c["schedule"] != "constant":
        raise UsageError(
            f"--schedule: lbfgs sets its own step by line search; got {c['schedule']!r}"
        )
    if c["lr"] is None:
        c["lr"] = DEFAULT_LR[c["optimizer"]]
    if not c["lr"] > 0:
        raise UsageError(f"--lr: the learning rate must be > 0, got {c['lr']}")
    if c["batch_size"] is None:
        c["batch_size"] = "all" if lbfgs else 64
    if c["batch_size"] != "all" and c["batch_size"] < 1:
        raise UsageError(f"--batch-size: must be ≥ 1 or 'all', got {c['batch_size']}")
    if lbfgs and c["batch_size"] != "all":
        raise UsageError(f"--batch-size: lbfgs is full-batch; use 'all', got {c['batch_size']}")
    for key, low in (("epochs", 1), ("patience", 0), ("shadow_every", 0), ("checkpoint_every", 1)):
        if c[key] < low:
            raise UsageError(f"{flag(key)}: must be ≥ {low}, got {c[key]}")
    for key in ("l2", "weight_decay"):
        if c[key] < 0:
            raise UsageError(f"{flag(key)}: must be ≥ 0, got {c[key]}")
    if not 0 <= c["momentum"] < 1:
        raise UsageError(f"--momentum: must be in [0, 1), got {c['momentum']}")
    if not 0 <= c["val_fraction"] < 1:
        raise UsageError(f"--val-fraction: must be in [0, 1), got {c['val_fraction']}")
    if not 0 < c["test_fraction"] < 1:
        raise UsageError(f"--test-fraction: must be in (0, 1), got {c['test_fraction']}")
    if c["patience"] > 0 and c["val_fraction"] == 0:
        raise UsageError("--patience: early stopping needs a validation split (--val-fraction > 0)")
    if c["seeds"] is None:
        c["seeds"] = [c["seed"]]
    seeds = c["seeds"]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: need distinct non-negative integers, got {seeds}")
    c["seed"] = seeds[0]
    if c["data_seed"] < 0:
        raise UsageError(f"--data-seed: must be ≥ 0, got {c['data_seed']}")
    for key in ("test_rows", "classes", "samples"):
        if c[key] is not None and c[key] < 1:
            raise UsageError(f"{flag(key)}: must be ≥ 1, got {c[key]}")
    for key in PATH_KEYS:
        if c[key] is not None:
            c[key] = str(Path(c[key]).expanduser().resolve())
    return c


def to_toml(config: dict, header: str = "") -> str:
    """A flat config as TOML text (keys in :data:`OPTIONS` order; None values left out, and
    ``seed`` too when ``seeds`` — which includes it — is there)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for option in OPTIONS:
        value = config.get(option.name)
        if value is None or (option.name == "seed" and config.get("seeds") is not None):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, list):
            text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
        else:
            text = json.dumps(value, ensure_ascii=False)
        lines.append(f"{option.name} = {text}")
    return "\n".join(lines) + "\n"


def hashed_config(config: dict, data_fingerprint: str) -> dict:
    """The part of a resolved config that fixes the training trajectory, plus the data's
    fingerprint. ``epochs`` counts only when a schedule depends on the run's length."""
    out = {o.name: config[o.name] for o in OPTIONS if o.hashed and o.name not in PATH_KEYS}
    if config["schedule"] != "constant":
        out["epochs"] = config["epochs"]
    out["data_fingerprint"] = data_fingerprint
    return out


def config_hash(hashed: dict) -> str:
    """SHA-256 of the canonical JSON of :func:`hashed_config`."""
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()


def describe_difference(old: dict, new: dict) -> str:
    """'lr 0.001 → 0.01, hidden [64] → [32]' for the keys that differ."""
    keys = sorted(set(old) | set(new))
    parts = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(parts) or "no visible difference"
