"""Every rule of a :class:`~jaxbp.experiment.TrainConfig`, in one place: :func:`check`, which
:meth:`TrainConfig.resolve` calls on type-checked values; and the config hash a resumed run must
match."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jaxbp.experiment.config import FIELD_DEFAULT, PATH_KEYS, ConfigError

DTYPES = ("float32", "float64")
RELU_LIKE = ("relu", "leaky_relu", "elu")
MODELS = ("mlp", "cnn")
LOOPS = ("scan", "steps")
MLP_HIDDEN = (256,)
CNN_CHANNELS = (16, 32)
CNN_KERNEL = 5
CNN_HIDDEN = (120, 84)
"""The networks' derived defaults: ``hidden`` 256 for mlp; conv blocks of 16 and 32 channels,
5×5 kernels and dense layers of 120 and 84 for cnn (LeNet-5's dense widths; the channels chosen
on digits' data seeds 1–4, experiments/README.md)."""


def choices(name: str) -> tuple[str, ...]:
    """The valid values of field ``name`` when it takes one of a fixed set (``--help`` lists
    them), else ``()``."""
    from jaxbp.activations import ACTIVATIONS
    from jaxbp.data import BUILTIN, SCALINGS
    from jaxbp.distributed.platform import PLATFORMS
    from jaxbp.losses import OUTPUTS
    from jaxbp.optim import OPTIMIZERS, SCHEDULES
    from jaxbp.params import SCHEMES
    from jaxbp.precision import PRECISIONS
    from jaxbp.train import GRAD_SOURCES

    table = {
        "dataset": BUILTIN,
        "scaling": SCALINGS,
        "model": MODELS,
        "loop": LOOPS,
        "activation": tuple(ACTIVATIONS),
        "output": tuple(OUTPUTS),
        "init": SCHEMES,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "grad": GRAD_SOURCES,
        "dtype": DTYPES,
        "precision": PRECISIONS,
        "platform": PLATFORMS,
    }
    return tuple(table.get(name, ()))


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(name, f"unknown {value!r}; valid values are {', '.join(valid)}")


def check(c: dict) -> None:  # noqa: C901 - every rule, in one place
    """Validates the type-checked field values ``c`` and fills the derived defaults in place."""
    from jaxbp.data import BUILTIN, LABEL_COLUMNS, SCALINGS
    from jaxbp.distributed.platform import PLATFORMS
    from jaxbp.losses import OUTPUTS
    from jaxbp.optim import DEFAULT_LR, OPTIMIZERS, SCHEDULES
    from jaxbp.params import SCHEMES
    from jaxbp.precision import PRECISIONS
    from jaxbp.sources import LAYER_NAMES
    from jaxbp.train import GRAD_SOURCES

    if c["data"] is None:
        if c["dataset"] is None:
            c["dataset"] = "digits"
        _choice("dataset", c["dataset"], BUILTIN)
    elif c["dataset"] is not None:
        raise ConfigError(
            "dataset", f"give one data source, not both {{dataset}} {c['dataset']!r} and {{data}}"
        )
    for key in ("test_data", "labels", "test_labels", "test_rows"):
        if c["data"] is None and c[key] is not None:
            raise ConfigError(key, "only used with a data file ({data})")
    lc = c["label_column"]
    if lc not in LABEL_COLUMNS and not (lc.isdigit() and int(lc) >= 1):
        raise ConfigError(
            "label_column", f"expected first, last or a column number ≥ 1, got {lc!r}"
        )
    _choice("scaling", c["scaling"], SCALINGS)
    _choice("output", c["output"], tuple(OUTPUTS))
    _choice("optimizer", c["optimizer"], OPTIMIZERS)
    _choice("model", c["model"], MODELS)
    cnn = c["model"] == "cnn"
    if cnn:
        if c["grad"] not in LAYER_NAMES:
            raise ConfigError(
                "grad",
                f"{c['grad']!r} is a source for {{model}} mlp only; valid sources for {{model}} cnn "
                f"are {', '.join(LAYER_NAMES)}",
            )
    else:
        _choice("grad", c["grad"], GRAD_SOURCES)
    _choice("dtype", c["dtype"], DTYPES)
    _choice("precision", c["precision"], PRECISIONS)
    if c["precision"] != "float32" and (c["grad"] != "manual" or cnn):
        needs = "{grad} manual" if not cnn else "{model} mlp with {grad} manual"
        got = repr(c["grad"]) if not cnn else "model cnn"
        raise ConfigError("precision", f"{c['precision']} needs {needs}, got {got}")
    if c["platform"] is not None:
        _choice("platform", c["platform"], PLATFORMS)
    if c["devices"] is not None and c["devices"] < 1:
        raise ConfigError("devices", f"must be ≥ 1, got {c['devices']}")
    if c["loop"] is not None:
        _choice("loop", c["loop"], LOOPS)
    _check_network(c, cnn)
    names = [c["activation"]] if isinstance(c["activation"], str) else list(c["activation"])
    if c["init"] is None:
        c["init"] = "he" if cnn or all(n in RELU_LIKE for n in names) else "glorot"
    _choice("init", c["init"], SCHEMES)
    if cnn and c["init"] != "he":
        raise ConfigError(
            "init", f"{{model}} cnn initialises its layers with he, got {c['init']!r}"
        )
    lbfgs = c["optimizer"] == "lbfgs"
    if c["schedule"] is None:
        c["schedule"] = "constant" if lbfgs else "cosine"
    _choice("schedule", c["schedule"], SCHEDULES)
    if lbfgs and c["schedule"] != "constant":
        raise ConfigError(
            "schedule", f"lbfgs sets its own step by line search; got {c['schedule']!r}"
        )
    if c["lr"] is None:
        c["lr"] = DEFAULT_LR[c["optimizer"]]
    if not c["lr"] > 0:
        raise ConfigError("lr", f"the learning rate must be > 0, got {c['lr']}")
    if c["batch_size"] is None:
        c["batch_size"] = "all" if lbfgs else 64
    if c["batch_size"] != "all" and c["batch_size"] < 1:
        raise ConfigError("batch_size", f"must be ≥ 1 or 'all', got {c['batch_size']}")
    if lbfgs and c["batch_size"] != "all":
        raise ConfigError("batch_size", f"lbfgs is full-batch; use 'all', got {c['batch_size']}")
    for key, low in (("epochs", 1), ("patience", 0), ("shadow_every", 0), ("checkpoint_every", 1)):
        if c[key] < low:
            raise ConfigError(key, f"must be ≥ {low}, got {c[key]}")
    for key in ("l2", "weight_decay"):
        if c[key] < 0:
            raise ConfigError(key, f"must be ≥ 0, got {c[key]}")
    if not 0 <= c["momentum"] < 1:
        raise ConfigError("momentum", f"must be in [0, 1), got {c['momentum']}")
    if not 0 <= c["val_fraction"] < 1:
        raise ConfigError("val_fraction", f"must be in [0, 1), got {c['val_fraction']}")
    if not 0 < c["test_fraction"] < 1:
        raise ConfigError("test_fraction", f"must be in (0, 1), got {c['test_fraction']}")
    if c["patience"] > 0 and c["val_fraction"] == 0:
        raise ConfigError(
            "patience", "early stopping needs a validation split ({val_fraction} > 0)"
        )
    if c["seeds"] is None:
        c["seeds"] = (c["seed"],)
    seeds = c["seeds"]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"need distinct non-negative integers, got {list(seeds)}")
    if c["seed"] not in (FIELD_DEFAULT["seed"], seeds[0]):
        raise ConfigError("seed", f"{c['seed']} is not the first of seeds {list(seeds)}")
    c["seed"] = seeds[0]
    if c["data_seed"] < 0:
        raise ConfigError("data_seed", f"must be ≥ 0, got {c['data_seed']}")
    for key in ("test_rows", "classes", "samples"):
        if c[key] is not None and c[key] < 1:
            raise ConfigError(key, f"must be ≥ 1, got {c[key]}")
    for key in PATH_KEYS:
        if c[key] is not None:
            c[key] = str(Path(c[key]).expanduser().resolve())


def _check_network(c: dict, cnn: bool) -> None:
    """The architecture's fields: hidden widths and activations; for cnn its conv blocks."""
    from jaxbp.activations import ACTIVATIONS

    for key in ("channels", "kernel_size", "dropout", "shift"):
        if not cnn and c[key] is not None:
            raise ConfigError(
                key, f"only used with {{model}} cnn, got {c[key]!r} for {{model}} mlp"
            )
    if c["hidden"] is None:
        c["hidden"] = CNN_HIDDEN if cnn else MLP_HIDDEN
    hidden = c["hidden"]
    if any(h < 1 for h in hidden):
        raise ConfigError("hidden", f"widths must be positive integers, got {list(hidden)}")
    if cnn:
        if c["channels"] is None:
            c["channels"] = CNN_CHANNELS
        if not c["channels"] or any(ch < 1 for ch in c["channels"]):
            raise ConfigError(
                "channels",
                f"one positive channel count per conv block, at least one block; got "
                f"{list(c['channels'])}",
            )
        if c["kernel_size"] is None:
            c["kernel_size"] = CNN_KERNEL
        if c["kernel_size"] < 1:
            raise ConfigError("kernel_size", f"must be ≥ 1, got {c['kernel_size']}")
        if c["dropout"] is None:
            c["dropout"] = 0.0
        if not 0 <= c["dropout"] < 1:  # NaN fails the comparison too
            raise ConfigError(
                "dropout", f"the probability of dropping must be in [0, 1), got {c['dropout']}"
            )
        if c["dropout"] and c["optimizer"] == "lbfgs":
            raise ConfigError(
                "dropout",
                "L-BFGS's line search needs one objective, but dropout draws a new mask every "
                f"step; use {{dropout}} 0 with {{optimizer}} lbfgs (got {c['dropout']})",
            )
        if c["shift"] is None:
            c["shift"] = 0
        if c["shift"] < 0:
            raise ConfigError(
                "shift", f"the largest translation must be ≥ 0 pixels, got {c['shift']}"
            )
        if c["shift"] and c["optimizer"] == "lbfgs":
            raise ConfigError(
                "shift",
                "L-BFGS's line search needs one objective, but the augmentation draws new "
                f"translations every step; use {{shift}} 0 with {{optimizer}} lbfgs (got {c['shift']})",
            )
    names = [c["activation"]] if isinstance(c["activation"], str) else list(c["activation"])
    for name in names:
        _choice("activation", name, tuple(ACTIVATIONS))
    if cnn and not isinstance(c["activation"], str):
        raise ConfigError(
            "activation",
            f"{{model}} cnn uses one activation after every conv and dense layer, got {names}",
        )
    if not isinstance(c["activation"], str) and len(names) != len(hidden):
        raise ConfigError(
            "activation",
            f"{len(names)} names for {len(hidden)} hidden layer(s); give one name or one per "
            "hidden layer",
        )


def config_hash(hashed: dict) -> str:
    """SHA-256 of the canonical JSON of :meth:`TrainConfig.hashed`."""
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()


def describe_difference(old: dict, new: dict) -> str:
    """'lr 0.001 → 0.01, hidden [64] → [32]' for the keys that differ."""
    keys = sorted(set(old) | set(new))
    parts = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(parts) or "no visible difference"
