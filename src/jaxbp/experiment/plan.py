"""Before a run writes anything: the file names of a run directory, the data a config trains
on (:func:`load_data`), the config of a run to resume (:func:`resume_config`) and :func:`plan`,
which reads and checks everything — config, data, run directory, its lock, checkpoint — and
writes nothing. The runner takes the run directory (:data:`LOCK`) only when it executes the plan.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from jaxbp.experiment.config import ConfigError, TrainConfig
from jaxbp.experiment.rules import config_hash, describe_difference

CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
MODEL = "model.npz"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.toml"
PLOTS = ("loss.png", "accuracy.png", "confusion_matrix.png")
TENSORBOARD = "tensorboard"
OUTPUTS = (CONFIG, METRICS, SUMMARY, *PLOTS, CHECKPOINT, BEST, MODEL, TENSORBOARD)
"""Every file a run writes (``tensorboard``: a folder of TensorBoard event files);
``overwrite=True`` removes exactly these (and :func:`leftovers`)."""
LOCK = ".jaxbp-run.lock"
"""The lock file of a run directory (:func:`jaxbp.files.acquire_lock`): it names the process
that owns the directory, from its start to its end, and stays behind only when that process
was killed — a *stale* lock, which ``resume`` or ``overwrite`` takes over."""
_LEFTOVER = re.compile(
    r"\.(?:(?P<name>.+)\.[a-z0-9_]{8}\.tmp|jaxbp-write-check\.[a-z0-9_]{8})"
)  # jaxbp.files.write_atomic's ".<name>.XXXXXXXX.tmp" and check_writable's probe


def received(value) -> str:
    """What an argument received, for an error message: ``str 'iris'``, ``int 3``."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def check_config(config) -> TrainConfig:
    """``config`` when it is a :class:`TrainConfig`; TypeError naming the argument and what it
    received otherwise."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {received(config)}")
    return config


def is_leftover(entry: Path) -> bool:
    """Whether ``entry`` is a temporary file of jaxbp's atomic writes of a run file (or of its
    writability probe), left by a process killed while writing it."""
    match = _LEFTOVER.fullmatch(entry.name)
    if match is None or not entry.is_file():
        return False
    return match["name"] is None or match["name"] in OUTPUTS


def is_own(entry: Path) -> bool:
    """Whether ``entry`` of a run directory is something a run writes (:data:`OUTPUTS`, its
    :data:`LOCK` and :func:`leftovers`; the tensorboard folder only while it holds TensorBoard
    event files alone)."""
    if entry.name == LOCK:
        return entry.is_file()
    if is_leftover(entry):
        return True
    if entry.name not in OUTPUTS:
        return False
    if entry.name == TENSORBOARD:
        return entry.is_dir() and all(
            f.is_file() and f.name.startswith("events.out.tfevents.") for f in entry.iterdir()
        )
    return entry.is_file()


def leftovers(run_dir: Path) -> list[Path]:
    """The temporary files of interrupted writes in ``run_dir`` (:func:`is_leftover`)."""
    return sorted(e for e in Path(run_dir).iterdir() if is_leftover(e))


def remove_outputs(run_dir: Path) -> None:
    """Removes what a run writes from ``run_dir`` (``overwrite``) — its outputs and leftover
    temporary files, never its lock (held by the run that overwrites) nor anything else."""
    import shutil

    for name in OUTPUTS:
        entry = run_dir / name
        if entry.is_dir() and is_own(entry):
            shutil.rmtree(entry)
        elif entry.is_file():
            entry.unlink()
    for entry in leftovers(run_dir):
        entry.unlink()


def is_run_dir(path) -> bool:
    """Whether ``path`` is a run directory: it holds a run's config.toml with its model or
    checkpoint, or a run's lock."""
    path = Path(path)
    if (path / LOCK).is_file():
        return True
    return (path / CONFIG).is_file() and any((path / n).is_file() for n in (MODEL, CHECKPOINT))


def enclosing_run_dir(path) -> Path | None:
    """The run directory ``path`` is (or lies inside), or None: for commands that must never
    write into one."""
    path = Path(path).expanduser().absolute()
    for folder in (path, *path.parents):
        if folder.is_dir() and is_run_dir(folder):
            return folder
    return None


def lock_refusal(run_dir: Path, state: str, owner, *, take_stale: bool) -> ConfigError | None:
    """Why a run may not take ``run_dir`` whose lock is in ``state``
    (:data:`jaxbp.files.LOCK_STATES`, with its :class:`~jaxbp.files.LockOwner`), or None when it
    may: the lock is free, or stale and ``take_stale`` (``resume`` / ``overwrite``)."""
    lock = run_dir / LOCK
    if state == "free" or (state == "stale" and take_stale):
        return None
    if state == "held":
        who = owner.describe() if owner is not None else "a process writing its lock this instant"
        return ConfigError(
            "out",
            f"run directory {run_dir} is in use by {who} (lock {lock}); wait for that run to "
            "finish, or choose another {out}",
        )
    if state == "stale":
        resume = (
            "{resume} to continue it from its checkpoint or "
            if (run_dir / CHECKPOINT).is_file()
            else ""
        )
        return ConfigError(
            "out",
            f"run directory {run_dir} was left by {owner.describe()}, which is no longer "
            f"running (stale lock {lock}); pass {resume}{{overwrite}} to start it again",
        )
    if state == "elsewhere":
        return ConfigError(
            "out",
            f"run directory {run_dir} is locked by {owner.describe()}, another host, and "
            f"whether that process still runs cannot be told from here; if it does not, "
            f"delete {lock}",
        )
    return ConfigError(
        "out",
        f"run directory {run_dir} has a lock file {lock} that names no owner (being written "
        "this instant, or damaged); if no jaxbp run is using the directory, delete the file",
    )


def check_contents(run_dir: Path, *, overwrite: bool) -> None:
    """Refuses a fresh run's ``run_dir`` that holds anything besides its lock — unless
    ``overwrite``, which refuses only what a run does not write (:func:`is_own`)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError("out", f"{run_dir} exists and is not a directory")
    entries = [e for e in run_dir.iterdir() if e.name != LOCK]
    if entries and not overwrite:
        raise ConfigError(
            "out",
            f"run directory {run_dir} already exists; pass {{overwrite}} to replace it or "
            "{resume} to continue it",
        )
    foreign = sorted(e.name for e in entries if not is_own(e))
    if foreign:
        more = ", …" if len(foreign) > 3 else ""
        raise ConfigError(
            "overwrite",
            f"{run_dir} holds files a run does not write ({', '.join(foreign[:3])}{more}); "
            "refusing to replace it",
        )


MODEL_FORMAT = "jaxbp-model-1"


def resume_config(run_dir) -> TrainConfig:
    """The configuration a run directory was trained with (its ``config.toml``), to continue
    it: layer changes on it with :meth:`TrainConfig.updated` and pass it to :func:`run` with
    ``resume=True``.

    Raises:
      TypeError: ``run_dir`` is not a path.
      ConfigError: (field ``resume``) no checkpoint or no config.toml in ``run_dir``, or an
        invalid config.toml.
    """
    import os

    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir: expected a path (str or os.PathLike), got {received(run_dir)}")
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError("resume", f"no checkpoint {run_dir / CHECKPOINT} to continue from")
    try:
        return TrainConfig.from_toml(run_dir / CONFIG)
    except (FileNotFoundError, ConfigError) as e:
        raise ConfigError("resume", str(e)) from None


class Plan(NamedTuple):
    """Everything decided before anything is written."""

    config: TrainConfig
    dataset: object
    run_dir: Path
    hashed: dict
    hash: str
    fresh: bool
    initial: tuple | None = None
    """The starting parameters (``init_from``; a leading seed axis), else None."""
    image_shape: tuple | None = None
    """(H, W, C) a cnn reads each row as (:func:`jaxbp.experiment.network.image_shape`)."""
    overwrite: bool = False
    """Replace what a run wrote in ``run_dir`` (and take over a stale lock)."""
    auto_named: bool = False
    """``run_dir`` is the default ``runs/<data>-<timestamp>``: the runner reserves the first
    free one of it, ``…-2``, ``…-3`` … (another process may take a name after the plan)."""


def load_data(config: TrainConfig):
    """The :class:`jaxbp.data.Dataset` a config trains on: loaded, split and scaled exactly as
    :func:`run` does (the config is resolved first).

    Raises:
      TypeError: ``config`` is not a :class:`TrainConfig`.
      ConfigError: a bad field. jaxbp.data.DataError: bad or unreadable data, naming the file.
    """
    from jaxbp.data import DataError, load_dataset

    c = check_config(config).resolve()
    try:
        return load_dataset(
            c.dataset,
            data=c.data,
            test_data=c.test_data,
            labels=c.labels,
            test_labels=c.test_labels,
            label_column=c.label_column,
            test_rows=c.test_rows,
            classes=c.classes,
            samples=c.samples,
            val_fraction=c.val_fraction,
            test_fraction=c.test_fraction,
            seed=c.data_seed,
            scaling=c.scaling,
        )
    except OSError as e:  # a file that exists but cannot be read (permissions, I/O error)
        raise DataError(f"{e.filename or c.data}: cannot read it ({e.strerror or e})") from None


def _check_resume(c: TrainConfig, run_dir: Path, hashed: dict, digest: str) -> None:
    """Refuses a resumption whose config the checkpoint cannot continue. ``epochs`` may grow
    (or shrink, not below the checkpoint's epoch) with a constant learning rate; a decaying
    schedule spans the run's length from its first step, and a run that stopped early trains
    no further, so there it must stay as it was."""
    from jaxbp import checkpoint

    try:
        meta = checkpoint.read_meta(run_dir / CHECKPOINT)
    except checkpoint.CheckpointError as e:
        raise ConfigError("resume", str(e)) from None
    old = meta.get("hashed_config", {})
    if meta.get("config_hash") != digest:
        differ = {k for k in set(old) | set(hashed) if old.get(k) != hashed.get(k)}
        if differ == {"epochs"}:
            raise ConfigError(
                "epochs",
                f"{c.epochs}: the run in {run_dir} decays its learning rate over its "
                f"{old['epochs']} epochs ({{schedule}} {c.schedule}), so another length would "
                f"change every step from the first; resume with {{epochs}} {old['epochs']}, or "
                f"train on from its weights in a new run ({{init_from}} {run_dir}); only a "
                "constant schedule lets a resumed run change its epochs",
            )
        raise ConfigError(
            "resume",
            f"config hash mismatch with the checkpoint in {run_dir} "
            f"({describe_difference(old, hashed)}); resume with the run's own settings or start "
            "a new run",
        )
    done = meta.get("epoch", 0)
    if c.epochs < done:
        raise ConfigError(
            "epochs",
            f"{c.epochs} is fewer than the {done} epochs the checkpoint in {run_dir} has completed",
        )
    if meta.get("stopped") and c.epochs > meta.get("epochs", c.epochs):
        raise ConfigError(
            "epochs",
            f"{c.epochs}: the run in {run_dir} stopped early at epoch {done} (no validation "
            f"gain in {c.patience} epochs), so more epochs would not train it; train on from its "
            f"weights in a new run ({{init_from}} {run_dir})",
        )


def _secondary_process() -> bool:
    """Whether this is a process > 0 of a multi-host run (``jax.distributed`` initialised):
    process 0 owns the run directory (its lock, its files); the others only read its
    checkpoint on resume. Asks JAX for the process index only when distributed, so that a
    single-process run starts no backend here."""
    import jax

    return jax.distributed.is_initialized() and jax.process_index() > 0


def plan(config: TrainConfig, *, resume: bool, overwrite: bool) -> Plan:
    """Reads and validates everything — config, data, run directory and its lock, checkpoint —
    and writes nothing.

    Raises:
      TypeError: ``config`` is not a :class:`TrainConfig`.
      ConfigError: a bad field, a run directory this run may not take (in use, left by a killed
        run without ``resume`` / ``overwrite``, holding other files), or a checkpoint that
        cannot be continued. jaxbp.data.DataError: bad data.
    """
    from jaxbp.data import fingerprint
    from jaxbp.files import inspect_lock

    check_config(config)
    if resume and overwrite:
        raise ConfigError("resume", "{resume} and {overwrite}: choose one")
    c = config.resolve()
    if c.tensorboard:
        from jaxbp.experiment.tensorboard import check_available

        check_available()
    dataset = load_data(c)
    n_train = dataset.x_train.shape[0]
    if c.data is not None:  # a file's row count is known only now: the defaults and bounds
        c = config.resolve(training_rows=n_train)  # that depend on it (TrainConfig) follow it
    if c.batch_size != "all" and c.batch_size > n_train:
        raise ConfigError(
            "batch_size",
            f"{c.batch_size} is more than the {n_train} training examples; use a smaller size "
            "or 'all'",
        )
    from jaxbp.experiment.network import image_shape

    shape = image_shape(c, dataset)
    hashed = c.hashed(fingerprint(dataset))
    initial = None
    if c.init_from is not None and c.model == "cnn":
        from jaxbp.experiment.warmstart import initial_tree

        initial, hashed["init_fingerprint"] = initial_tree(c, dataset, shape)
    elif c.init_from is not None:
        from jaxbp.experiment.warmstart import initial_params

        sizes = (dataset.num_features, *c.hidden, dataset.num_classes)
        initial, hashed["init_fingerprint"] = initial_params(c.init_from, sizes, c.seeds, c.dtype)
    digest = config_hash(hashed)
    auto_named = c.out is None
    if auto_named:  # the runner reserves this name or the next free one
        name = c.dataset or Path(c.data).stem
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        c = dataclasses.replace(c, out=str(Path("runs") / f"{name}-{stamp}"))
    run_dir = Path(c.out)
    writer = not _secondary_process()  # a multi-host run's processes > 0 write to scratch
    if not auto_named:
        if writer:
            state, owner = inspect_lock(run_dir / LOCK)
            refusal = lock_refusal(run_dir, state, owner, take_stale=resume or overwrite)
            if refusal is not None:
                raise refusal
        if resume:
            _check_resume(c, run_dir, hashed, digest)
        elif writer:
            check_contents(run_dir, overwrite=overwrite)
    from jaxbp.files import check_creatable_dir

    try:  # a place that cannot hold the run is refused now, before any training
        if writer:
            check_creatable_dir(run_dir)
    except ValueError as e:
        raise ConfigError("out", str(e)) from None
    return Plan(
        c, dataset, run_dir, hashed, digest, not resume, initial, shape, overwrite, auto_named
    )
