"""The configuration of one experiment: :class:`TrainConfig`, a frozen, typed value.

One field per ``jaxbp train`` option, with the same name (``batch_size`` ↔ ``--batch-size``;
``plots`` ↔ ``--no-plots``, ``tensorboard`` ↔ ``--tensorboard``). Every rule lives in :meth:`TrainConfig.resolve` (the rules themselves in
:mod:`jaxbp.experiment.rules`), which checks the
types strictly (``True`` is not an integer, ``"0.01"`` is not a number), validates every value
and fills the derived defaults (learning rate, batch size, initialisation, schedule, seeds), so
that the ``config.toml`` written into a run directory is complete. Errors are
:class:`ConfigError` — a ``ValueError`` whose message starts with the field's name.

Example:
  >>> from jaxbp.experiment import TrainConfig
  >>> c = TrainConfig(dataset="iris", hidden=(8,), epochs=3).resolve()
  >>> c.lr, c.batch_size, c.l2, c.init, c.seeds
  (0.003, 13, 0.27, 'he', (0,))
  >>> TrainConfig.from_toml(c.to_toml()).resolve() == c
  True
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import NamedTuple


class ConfigError(ValueError):
    """A bad configuration value.

    Attributes:
      field: the field (or ``run`` argument) at fault; the message starts with it — or with
        ``source`` when there is one.
      reason: what was wrong, with the value received.
      source: the TOML file the value came from, or None.
    """

    def __init__(self, field: str, reason: str, source: str | None = None):
        self.field, self.source, self.template = field, source, reason
        self.reason = self.render(lambda name: f"{name}=True" if name in RUN_ARGUMENTS else name)
        super().__init__(f"{source or field}: {self.reason}")

    def render(self, name_of) -> str:
        """The reason with each field or ``run`` argument it mentions (written ``{name}`` in
        the template) spelled by ``name_of`` — the CLI passes the flag."""
        known = (*FIELD, *RUN_ARGUMENTS)
        return re.sub(
            r"\{(\w+)\}", lambda m: name_of(m[1]) if m[1] in known else m[0], self.template
        )


RUN_ARGUMENTS = ("resume", "overwrite")
"""Arguments of :func:`jaxbp.experiment.run` that errors may name besides the fields."""


class _Meta(NamedTuple):
    kind: str  # str, path, column, bool, int, float, ints, batch, activation
    help: str
    hashed: bool = True


def _f(default, kind: str, help: str, hashed: bool = True):
    return dataclasses.field(default=default, metadata={"jaxbp": _Meta(kind, help, hashed)})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; immutable, compared and hashed by value.

    ``None`` means "derived" (filled by :meth:`resolve`) or "unset". Lists are tuples.
    Help for each field: ``TrainConfig.help(name)``; the CLI shows the same text.

    Defaults that depend on the data: ``batch_size``, ``epochs`` and ``l2`` are digits' tuned
    64, 40 and 3.0 on a training split of m ≥ 1200 rows (digits has 1294, MNIST-1D 3600, and a
    data file until it is read); on fewer rows they scale with s = m / 1200 — epochs 40 / s (at
    most 200), l2 3 · s (``l2`` weighs the whole split, so the penalty per example stays the
    same) and batches of at most m / 8 rows (so that an epoch is at least 8 optimizer steps):
    iris (108 training rows) gets batch 13, 200 epochs, l2 0.27; wine (128) 16, 200, 0.32
    (:func:`jaxbp.experiment.rules.data_defaults`).

    Bounds: seeds in [0, 2³² − 1] (``jax.random.key``'s uint32); epochs × steps per epoch ≤
    2³¹ − 1 (the optimizer's int32 step counter); the network's parameters with the optimizer's
    state within the machine's memory; every integer within TOML's int64 range.
    """

    dataset: str | None = _f(None, "str", "built-in dataset (default digits when no --data)")
    data: str | None = _f(None, "path", "training data file: CSV, NPZ (x, y), IDX images or .mat")
    test_data: str | None = _f(None, "path", "a file with the test split (e.g. UCI .tes)")
    labels: str | None = _f(None, "path", "IDX labels file for --data")
    test_labels: str | None = _f(None, "path", "IDX labels file for --test-data")
    label_column: str = _f("last", "column", "CSV label column: first, last or a 1-based number")
    test_rows: int | None = _f(None, "int", "use the last N rows of --data as the test split")
    classes: int | None = _f(None, "int", "number of classes of spirals/blobs")
    samples: int | None = _f(None, "int", "number of examples of spirals/blobs")
    data_seed: int = _f(0, "int", "seed of the train/val/test split and synthetic data")
    val_fraction: float = _f(0.1, "float", "stratified validation share of the training data")
    test_fraction: float = _f(0.2, "float", "stratified test share when there is no test file")
    scaling: str = _f("capped", "str", "feature scaling fitted on the training split")
    model: str = _f(
        "mlp",
        "str",
        "network: mlp (dense layers, --hidden) or cnn (LeNet-style: --channels conv blocks of "
        "conv k×k SAME → activation → 2×2 max pool, then --hidden dense layers; needs images: "
        "digits 8×8, IDX files, or s² ≥ k² features taken as s×s×1)",
    )
    channels: tuple[int, ...] | None = _f(
        None, "ints", "cnn: output channels of each conv block, e.g. 16,32 (default 16,32)"
    )
    kernel_size: int | None = _f(None, "int", "cnn: the k of the k×k convolutions (default 5)")
    dropout: float | None = _f(
        None,
        "float",
        "cnn: probability of dropping each unit of the hidden dense layers in training "
        "(inverted dropout, a fresh mask every step; default 0)",
    )
    shift: int | None = _f(
        None,
        "int",
        "cnn: augmentation: translate each training image by a random offset of up to N pixels "
        "along each axis, zero fill, a fresh draw every step (default 0: none)",
    )
    hidden: tuple[int, ...] | None = _f(
        None,
        "ints",
        "hidden (dense) layer widths, e.g. 64,64 ('none': no hidden; default 256 for mlp, "
        "120,84 for cnn)",
    )
    activation: str | tuple[str, ...] = _f(
        "relu", "activation", "hidden activation, or one per hidden layer (mlp)"
    )
    output: str = _f("softmax_ce", "str", "output layer and cost")
    init: str | None = _f(None, "str", "initialisation: ng, glorot, he (default: he for relu-like)")
    init_from: str | None = _f(
        None,
        "path",
        "start from the weights of a run directory, a model/checkpoint .npz or the course's "
        ".mat (Theta1, Theta2, …)",
    )
    optimizer: str = _f("adam", "str", "sgd, momentum, adam, adamw or lbfgs")
    lr: float | None = _f(None, "float", "learning rate α (default per optimizer)")
    schedule: str | None = _f(
        None, "str", "learning-rate schedule (default cosine; lbfgs constant)"
    )
    momentum: float = _f(0.9, "float", "β of --optimizer momentum")
    weight_decay: float = _f(1e-4, "float", "decoupled weight decay of adamw")
    epochs: int | None = _f(
        None,
        "int",
        "number of epochs (passes over the training split; default 40), on m < 1200 training "
        "rows 40·1200/m, at most 200 (iris, wine: 200)",
        False,
    )
    batch_size: int | str | None = _f(
        None,
        "batch",
        "minibatch rows or 'all' (default 64; at most m/8 on m training rows, so that an "
        "epoch is ≥ 8 steps: iris 13, wine 16; lbfgs: all)",
    )
    l2: float | None = _f(
        None,
        "float",
        "L2 coefficient λ of J(Θ) over the whole training split (default 3.0; on m < 1200 "
        "training rows 3·m/1200, the same penalty per row: iris 0.27, wine 0.32)",
    )
    grad: str = _f(
        "manual",
        "str",
        "gradient source: manual (δ recursion), autodiff (jax.grad), graph, scan, custom_vjp, "
        "vmap (jaxbp.sources); cnn: manual (the layers' hand-derived backward), autodiff, "
        "custom_vjp",
    )
    seed: int = _f(0, "int", "training seed in [0, 2³² − 1] (initialisation and minibatch order)")
    seeds: tuple[int, ...] | None = _f(
        None, "ints", "several seeds trained at once by vmap, e.g. 0,1,2,3,4"
    )
    patience: int = _f(0, "int", "early stopping after N epochs without validation gain")
    shadow_every: int = _f(0, "int", "compare manual and autodiff gradients every N epochs", False)
    dtype: str = _f("float32", "str", "float32 or float64")
    precision: str = _f(
        "float32", "str",
        "gradient compute: float32, or bf16 (products in bfloat16, float32 accumulation and "
        "parameters; manual grad only)",
    )  # fmt: skip
    devices: int | None = _f(
        None, "int", "devices each minibatch is split over (default: all)", False
    )
    loop: str | None = _f(
        None,
        "str",
        "how an epoch runs: scan (one XLA program: lax.scan over minibatches, vmap over seeds) "
        "or steps (one program per minibatch, seeds in turn: XLA:CPU runs convolutions 5-10x "
        "slower inside a loop or under vmap) (default: steps for cnn on a CPU, else scan)",
        False,
    )
    platform: str | None = _f(None, "str", "cpu, gpu or tpu (default: JAX's own choice)", False)
    checkpoint_every: int = _f(1, "int", "write the checkpoint every N epochs", False)
    plots: bool = _f(True, "bool", "write PNG plots", False)
    tensorboard: bool = _f(
        False, "bool", "log each epoch's scalars for TensorBoard (needs tensorboardX)", False
    )
    out: str | None = _f(None, "path", "run directory (default runs/<dataset>-<timestamp>)", False)

    # --- construction -----------------------------------------------------------------------

    @staticmethod
    def help(name: str) -> str:
        """The help text of field ``name``."""
        return FIELD[name].help

    @classmethod
    def from_toml(cls, source) -> TrainConfig:
        """A config from a TOML file (a ``Path``, or a ``str`` without ``=`` or a newline) or
        from TOML text. Relative data paths in a file are relative to that file's folder.
        Unset keys keep their defaults; nothing is resolved.

        Raises:
          ConfigError: an unknown key (with the closest valid one) or a value of the wrong type,
            naming the file and key.
          FileNotFoundError: a path that is not a file.
        """
        return cls().updated(**read_toml(source))

    def to_toml(self, header: str = "") -> str:
        """The config as TOML text (``None`` values left out, and ``seed`` when ``seeds`` —
        which includes it — is set); ``header`` lines become comments."""
        lines = [f"# {line}" for line in header.splitlines()]
        for name in FIELD:
            value = getattr(self, name)
            if value is None or (name == "seed" and self.seeds is not None):
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (int, float)):
                text = repr(value)
            elif isinstance(value, tuple):
                text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
            else:
                text = json.dumps(value, ensure_ascii=False)
            lines.append(f"{name} = {text}")
        return "\n".join(lines) + "\n"

    def updated(self, **changes) -> TrainConfig:
        """This config with ``changes`` applied as a layer above it: choosing one data source
        clears the other (``dataset`` clears ``data``, ``test_data``, ``labels`` …; ``data``
        clears ``dataset``), and ``seed`` / ``seeds`` replace each other likewise.

        Raises:
          ConfigError: an unknown field, or both of a pair in the same layer.
        """
        for name in changes:
            if name not in FIELD:
                close = difflib.get_close_matches(name, list(FIELD), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(name, f"unknown field{hint}")
        if "dataset" in changes and "data" in changes:
            raise ConfigError("dataset", "give one data source, not both {dataset} and {data}")
        if "seed" in changes and "seeds" in changes:
            raise ConfigError("seed", "give one of {seed} and {seeds}, not both")
        cleared = {}
        if "dataset" in changes:
            cleared.update({k: FIELD_DEFAULT[k] for k in DATA_KEYS})
        if "data" in changes:
            cleared["dataset"] = None
        if "seed" in changes:
            cleared["seeds"] = None
        if "seeds" in changes:
            cleared["seed"] = FIELD_DEFAULT["seed"]
        return dataclasses.replace(self, **{**cleared, **changes})

    # --- validation -------------------------------------------------------------------------

    def resolve(self, *, training_rows: int | None = None) -> TrainConfig:
        """Validates every field and fills the derived defaults. No I/O besides making data
        paths absolute. Idempotent: ``c.resolve().resolve() == c.resolve()``.

        Args:
          training_rows: the training split's row count, when known — a data file's, once
            read; a built-in dataset's is known from its shape. It decides the defaults that
            depend on the data (see the class) and bounds ``batch_size`` and ``epochs``.

        Raises:
          ConfigError: the first bad field, naming it, the value received and the limit it
            broke: a value out of range (seeds outside [0, 2³² − 1], a run of more than
            2³¹ − 1 optimizer steps, a network whose training state exceeds the machine's
            memory, an integer outside TOML's int64 range …), an option that does not apply to
            the data source or the model, an inconsistent combination.
        """
        from jaxbp.experiment.rules import check

        c = {name: check_type(name, getattr(self, name)) for name in FIELD}
        check(c, training_rows)
        return TrainConfig(**c)

    def hashed(self, data_fingerprint: str) -> dict:
        """The part of a resolved config that fixes the training trajectory, plus the data's
        fingerprint. ``epochs`` counts only when the schedule depends on the run's length; the
        CNN's fields (:data:`CNN_KEYS`) only for a cnn, so that an MLP's hash is what it was
        before they existed (and its runs still resume); fields added later still
        (:data:`LATER_KEYS`) only where they differ from the value that was implied before."""
        out = {}
        for name, meta in FIELD.items():
            if self.model == "mlp" and name in CNN_KEYS:
                continue
            if name in LATER_KEYS and getattr(self, name) == LATER_KEYS[name]:
                continue
            if meta.hashed and name not in PATH_KEYS:
                value = getattr(self, name)
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.schedule != "constant":
            out["epochs"] = self.epochs
        out["data_fingerprint"] = data_fingerprint
        return out


FIELD: dict[str, _Meta] = {f.name: f.metadata["jaxbp"] for f in dataclasses.fields(TrainConfig)}
"""Every field's kind, help text and whether it is part of the config hash, in CLI order."""
FIELD_DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

DATA_KEYS = ("data", "test_data", "labels", "test_labels", "test_rows", "label_column")
"""Fields that only make sense with a data file; choosing ``dataset`` clears them."""
CNN_KEYS = ("model", "channels", "kernel_size", "dropout", "shift")
"""Fields added for ``model = "cnn"``: part of the config hash only for a cnn."""
LATER_KEYS = {"shift": 0}
"""Fields added after runs existed, with the value those runs implied: hashed only when they
differ from it, so that the earlier runs' hashes hold (and they still resume)."""
PATH_KEYS = ("data", "test_data", "labels", "test_labels", "init_from")
"""File paths: where the data and the starting weights are, not what they are — their
fingerprints are hashed instead."""


def check_type(name: str, value):
    """``value`` as field ``name``'s type, strictly: lists become tuples, an int is accepted
    for a float, ``None`` for optional fields; nothing is parsed from strings.

    Raises:
      ConfigError: a value of another type (``True`` for an integer, ``"0.01"`` for a number).
    """
    kind = FIELD[name].kind
    if value is None and FIELD_DEFAULT[name] is None:
        return None

    def bad(expected):
        return ConfigError(name, f"expected {expected}, got {value!r}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if kind in ("str", "path"):
        if isinstance(value, Path) and kind == "path":
            return str(value)
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if kind == "column":
        if is_int(value):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise bad("first, last or a column number")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if kind == "int":
        if is_int(value):
            return value
        raise bad("an integer")
    if kind == "float":
        if not (is_int(value) or isinstance(value, float)):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if kind == "batch":
        if value == "all" or is_int(value):
            return value
        raise bad("an integer or 'all'")
    if kind == "ints":
        if is_int(value):
            return (value,)
        if isinstance(value, (list, tuple)) and all(is_int(v) for v in value):
            return tuple(value)
        raise bad("a list of integers")
    if kind == "activation":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return value[0] if len(value) == 1 else tuple(value)
        raise bad("an activation name or a list of names")
    raise AssertionError(kind)


def parse_text(name: str, text: str):
    """Field ``name``'s value from command-line text (``"64,64"``, ``"all"``, ``"none"``).

    Raises:
      ConfigError: text that is not of the field's kind; an empty ``hidden`` (say ``none``
        for no hidden layer).
    """
    kind = FIELD[name].kind
    s = text.strip()

    def bad(expected):
        return ConfigError(name, f"expected {expected}, got {text!r}")

    if kind == "int":
        try:
            return int(s)
        except ValueError:
            raise bad("an integer") from None
    if kind == "float":
        try:
            value = float(s)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if kind == "batch":
        if s.lower() in ("all", "full"):
            return "all"
        try:
            return int(s)
        except ValueError:
            raise bad("an integer or 'all'") from None
    if kind == "ints":
        if s.lower() == "none":
            return ()
        if not s:
            extra = "; say 'none' for no hidden layer" if name == "hidden" else ""
            raise bad(f"comma-separated integers{extra}")
        try:
            return tuple(int(i) for i in s.split(","))
        except ValueError:
            raise bad("comma-separated integers") from None
    if kind == "activation":
        names = tuple(n.strip() for n in s.split(","))
        if not all(names):
            raise bad("an activation name or comma-separated names")
        return names[0] if len(names) == 1 else names
    return check_type(name, text)


def read_toml(source) -> dict:
    """The keys of a TOML file or text, each type-checked (:func:`check_type`). Relative data
    paths in a file are made relative to its folder. See :meth:`TrainConfig.from_toml`."""
    if isinstance(source, str) and ("=" in source or "\n" in source or not source.strip()):
        where, base, text = "<toml text>", None, source
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        where, base = str(p), p.parent
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("config", f"cannot read {p} ({e})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"invalid TOML in {where} ({e})") from None
    parsed = {}
    for key, value in raw.items():
        if key not in FIELD:
            close = difflib.get_close_matches(key, list(FIELD), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(key, f"unknown key {key!r}{hint}", where)
        try:
            parsed[key] = check_type(key, value)
        except ConfigError as e:
            raise ConfigError(key, f"key {key!r}: {e.reason}", where) from None
        if key in PATH_KEYS and base is not None:
            parsed[key] = str(base / Path(parsed[key]).expanduser())
    return parsed
