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

BATCH = 64
EPOCHS = 40
L2 = 3.0
FULL_ROWS = 1200
MAX_EPOCHS = 200
BATCHES_PER_EPOCH = 8
"""The training defaults, tuned on digits (1294 training rows): batches of :data:`BATCH` rows,
:data:`EPOCHS` epochs, L2 coefficient :data:`L2`. On a training split of m < :data:`FULL_ROWS`
rows (iris 108, wine 128, spirals and blobs 432 by default) they are scaled by s = m /
:data:`FULL_ROWS` (:func:`data_defaults`): epochs 40 / s (at most :data:`MAX_EPOCHS`), l2 3 · s
(the same penalty per example: ``l2`` weighs the whole split), and batches of at most m /
:data:`BATCHES_PER_EPOCH` rows, so that an epoch takes at least 8 steps."""

INT64_MAX = 2**63 - 1
"""TOML integers are signed 64-bit: config.toml cannot hold a larger one."""
SEED_MAX = 2**32 - 1
"""Training seeds are ``jax.random.key`` seeds, which are uint32."""
STEP_MAX = 2**31 - 1
"""The optimizer counts its steps (and early stopping its epochs) in an int32."""
STATE_COPIES = 4
"""Training holds about this many copies of the parameters per seed: the parameters, their
gradient and Adam's two moments."""


def data_defaults(rows: int | None) -> tuple[int, int, float]:
    """``(batch_size, epochs, l2)`` by default on a training split of ``rows`` rows (None:
    unknown, a data file before it is read): digits' 64, 40, 3.0, scaled down for fewer than
    :data:`FULL_ROWS` rows as :data:`FULL_ROWS` says.

    >>> data_defaults(108), data_defaults(128), data_defaults(1294), data_defaults(None)
    ((13, 200, 0.27), (16, 200, 0.32), (64, 40, 3.0), (64, 40, 3.0))
    """
    if rows is None or rows >= FULL_ROWS:
        return BATCH, EPOCHS, L2
    s = rows / FULL_ROWS
    batch = max(1, min(BATCH, rows // BATCHES_PER_EPOCH))
    return batch, min(MAX_EPOCHS, round(EPOCHS / s)), float(f"{L2 * s:.2g}")


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


def check(c: dict, training_rows: int | None = None) -> None:  # noqa: C901 - every rule
    """Validates the type-checked field values ``c`` and fills the derived defaults in place.

    ``training_rows``: the training split's row count when known (a data file once read); a
    built-in dataset's is computed from its shape (:func:`builtin_training_rows`). It decides
    the data-dependent defaults (:func:`data_defaults`) and bounds (batch size, epochs).

    Raises:
      ConfigError: the first bad field, naming it, the value received and any limit.
    """
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
            raise ConfigError(
                key, f"only used with a data file ({{data}}), got {c[key]!r} with {c['dataset']}"
            )
    lc = c["label_column"]
    if lc not in LABEL_COLUMNS and not (lc.isdigit() and int(lc) >= 1):
        raise ConfigError(
            "label_column", f"expected first, last or a column number ≥ 1, got {lc!r}"
        )
    _check_source(c)
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
    if c["batch_size"] != "all" and c["batch_size"] is not None and c["batch_size"] < 1:
        raise ConfigError("batch_size", f"must be ≥ 1 or 'all', got {c['batch_size']}")
    if lbfgs and c["batch_size"] not in ("all", None):
        raise ConfigError("batch_size", f"lbfgs is full-batch; use 'all', got {c['batch_size']}")
    for key, low in (("epochs", 1), ("patience", 0), ("shadow_every", 0), ("checkpoint_every", 1)):
        if c[key] is not None and c[key] < low:
            raise ConfigError(key, f"must be ≥ {low}, got {c[key]}")
    for key in ("l2", "weight_decay"):
        if c[key] is not None and c[key] < 0:
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
    if c["patience"] > STEP_MAX:
        raise ConfigError(
            "patience",
            f"at most {STEP_MAX} (early stopping counts epochs in an int32), got {c['patience']}",
        )
    _check_seeds(c)
    if c["data_seed"] < 0:
        raise ConfigError("data_seed", f"must be ≥ 0, got {c['data_seed']}")
    for key in ("test_rows", "classes", "samples"):
        if c[key] is not None and c[key] < 1:
            raise ConfigError(key, f"must be ≥ 1, got {c[key]}")
    _check_synthetic(c)
    rows = training_rows if training_rows is not None else builtin_training_rows(c)
    batch, epochs, l2 = data_defaults(rows)
    if c["batch_size"] is None:
        c["batch_size"] = "all" if lbfgs else batch
    if c["epochs"] is None:
        c["epochs"] = epochs
    if c["l2"] is None:
        c["l2"] = l2
    _check_length(c, rows)
    _check_memory(c, cnn)
    _check_int64(c)
    for key in PATH_KEYS:
        if c[key] is not None:
            c[key] = str(Path(c[key]).expanduser().resolve())


def _check_source(c: dict) -> None:
    """Options of one kind of data source given with another: refused, not ignored."""
    from jaxbp.data import SYNTHETIC
    from jaxbp.data.files import file_format

    dataset = c["dataset"]
    if dataset is not None and c["label_column"] != "last":
        raise ConfigError(
            "label_column",
            f"only used with a CSV data file ({{data}}), got {c['label_column']!r} with the "
            f"built-in dataset {dataset!r}",
        )
    if c["data"] is not None and c["label_column"] != "last":
        kind = file_format(c["data"])
        if kind != "csv":
            raise ConfigError(
                "label_column",
                f"only used with a CSV data file, got {c['label_column']!r} with the {kind} "
                f"file {c['data']}",
            )
    if c["test_labels"] is not None and c["test_data"] is None:
        raise ConfigError(
            "test_labels",
            f"only used with a test data file ({{test_data}}), got {c['test_labels']!r}",
        )
    if c["test_rows"] is not None and c["test_data"] is not None:
        raise ConfigError(
            "test_rows",
            f"the test split is {c['test_data']} ({{test_data}}); {{test_rows}} takes it from "
            f"{{data}} instead, got {c['test_rows']}",
        )
    for key in ("classes", "samples"):
        if c[key] is not None and dataset not in SYNTHETIC:
            what = f"the built-in dataset {dataset!r}" if dataset else f"the data file {c['data']}"
            raise ConfigError(
                key,
                f"only the synthetic datasets ({', '.join(SYNTHETIC)}) take it, got {c[key]} "
                f"with {what}",
            )


def _check_seeds(c: dict) -> None:
    """``seed`` or ``seeds`` (whichever was given, named as given) in jax.random.key's uint32
    range; ``seeds`` distinct; fills ``seeds`` from ``seed`` and ``seed`` from ``seeds``."""
    if c["seeds"] is None:
        if not 0 <= c["seed"] <= SEED_MAX:
            raise ConfigError(
                "seed",
                f"must be in [0, {SEED_MAX}] (a uint32 seed of jax.random.key), got {c['seed']}",
            )
        c["seeds"] = (c["seed"],)
    seeds = c["seeds"]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"need distinct non-negative integers, got {list(seeds)}")
    if max(seeds) > SEED_MAX:
        raise ConfigError(
            "seeds",
            f"each must be in [0, {SEED_MAX}] (uint32 seeds of jax.random.key), got "
            f"{max(seeds)} in {list(seeds)}",
        )
    if c["seed"] not in (FIELD_DEFAULT["seed"], seeds[0]):
        raise ConfigError("seed", f"{c['seed']} is not the first of seeds {list(seeds)}")
    c["seed"] = seeds[0]


def _check_synthetic(c: dict) -> None:
    """The size of spirals and blobs (:func:`jaxbp.data.builtin.check_classes_samples`: at
    least 2 classes, an example per class, what the machine's memory holds)."""
    from jaxbp.data import SYNTHETIC, DataError
    from jaxbp.data.builtin import SYNTHETIC_DEFAULTS, check_classes_samples

    if c["dataset"] not in SYNTHETIC:
        return
    classes, samples = SYNTHETIC_DEFAULTS[c["dataset"]]
    classes = classes if c["classes"] is None else c["classes"]
    samples = samples if c["samples"] is None else c["samples"]
    try:
        check_classes_samples(c["dataset"], classes, samples)
    except DataError as e:  # "classes: need at least 2, got 1"
        field, _, reason = str(e).partition(": ")
        if field not in ("classes", "samples"):
            raise
        raise ConfigError(field, reason) from None


def builtin_training_rows(c: dict) -> int | None:
    """The training split's row count of a built-in dataset, from its shape and the split
    fractions, without loading it (:func:`jaxbp.data.split.training_rows`); None for a file."""
    from jaxbp.data.builtin import shape
    from jaxbp.data.split import training_rows

    if c["dataset"] is None:
        return None
    s = shape(c["dataset"], classes=c["classes"], samples=c["samples"])
    return training_rows(
        s.class_counts,
        test_fraction=c["test_fraction"],
        val_fraction=c["val_fraction"],
        own_test=s.own_test,
    )


def _check_length(c: dict, rows: int | None) -> None:
    """The batch size within the training split, and the run's length within the optimizer's
    int32 step counter: epochs × steps per epoch ≤ :data:`STEP_MAX`."""
    batch = c["batch_size"]
    if rows is not None and batch != "all" and batch > rows:
        raise ConfigError(
            "batch_size",
            f"{batch} is more than the {rows} training examples; use a smaller size or 'all'",
        )
    steps = 1 if rows is None or batch == "all" else max(1, rows // batch)
    limit = STEP_MAX // steps
    if c["epochs"] > limit:
        per = (
            f"{steps} steps an epoch ({rows} training rows in batches of {batch})"
            if steps > 1
            else "at least one step an epoch"
        )
        raise ConfigError(
            "epochs",
            f"at most {limit}: the optimizer counts its steps in an int32 (at most {STEP_MAX}) "
            f"and this run takes {per}; got {c['epochs']}",
        )


def _check_int64(c: dict) -> None:
    """Every integer within TOML's signed 64-bit range, which config.toml must hold."""
    for key, value in c.items():
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if (
                isinstance(v, int)
                and not isinstance(v, bool)
                and not -INT64_MAX - 1 <= v <= INT64_MAX
            ):
                raise ConfigError(
                    key,
                    f"at most {INT64_MAX} in magnitude (a TOML integer, as config.toml stores "
                    f"it), got {v}",
                )


def parameter_count(c: dict, features: int, classes: int) -> int:
    """The number of parameters of the network of resolved fields ``c`` on ``features`` inputs
    and ``classes`` classes; for a cnn a lower bound (its flattened conv output taken as one
    pixel of the last block's channels, its input as one channel)."""
    if c["model"] == "cnn":
        k2 = c["kernel_size"] ** 2
        count, previous = 0, 1
        for ch in c["channels"]:
            count += k2 * previous * ch + ch
            previous = ch
        widths = (previous, *c["hidden"], classes)
    else:
        count, widths = 0, (features, *c["hidden"], classes)
    return count + sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))


def _check_memory(c: dict, cnn: bool) -> None:
    """The network's parameters and the optimizer's state (:data:`STATE_COPIES` copies per
    seed) within the machine's memory, naming the field that makes them too many, its largest
    value that fits and the memory."""
    from jaxbp.data.builtin import gib, machine_memory, shape

    if c["dataset"] is not None:
        s = shape(c["dataset"], classes=c["classes"], samples=c["samples"])
        features, classes = s.features, len(s.class_counts)
    else:
        features, classes = 1, 2  # a file not yet read: the smallest network it can be
    per_param = (8 if c["dtype"] == "float64" else 4) * STATE_COPIES * len(c["seeds"])
    memory = machine_memory()

    def fits(fields: dict) -> bool:
        return parameter_count(fields, features, classes) * per_param <= memory

    if fits(c):
        return
    fields = ("hidden", "channels", "kernel_size") if cnn else ("hidden",)
    for key in fields:
        values = c[key] if isinstance(c[key], tuple) else (c[key],)
        i = max(range(len(values)), key=values.__getitem__) if values else None
        if i is None:
            continue

        def with_value(v, key=key, values=values, i=i):
            new = (*values[:i], v, *values[i + 1 :])
            return {**c, key: new if isinstance(c[key], tuple) else v}

        if not fits(with_value(1)):
            continue
        low, high = 1, values[i]  # the largest value that fits, by bisection
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(with_value(mid)) else (low, mid - 1)
        count = parameter_count(c, features, classes)
        what = {"hidden": "a width of", "channels": "a block of", "kernel_size": "a kernel of"}
        raise ConfigError(
            key,
            f"{what[key]} {values[i]} makes a network of {count:.3g} parameters: with the "
            f"optimizer's state ({STATE_COPIES} {c['dtype']} copies × {len(c['seeds'])} seed(s)) "
            f"{gib(count * per_param)}, more than this machine's {gib(memory)} of memory; at "
            f"most {low} here, got {list(values) if isinstance(c[key], tuple) else values[i]}",
        )
    count = parameter_count(c, features, classes)
    raise ConfigError(
        fields[0],
        f"the network's {count:.3g} parameters with the optimizer's state need "
        f"{gib(count * per_param)}, more than this machine's {gib(memory)} of memory",
    )


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
