"""One training run, from a :class:`TrainConfig` to a run directory: :func:`run`.

:func:`run` resolves the config, loads and splits the data, checks the run directory (and the
checkpoint, when resuming) before writing anything, then builds the mesh, takes the run
directory (its lock, :data:`LOCK`, held until the run ends however it ends), places the data,
builds the optimizer and the gradient source, initialises every seed, trains, checks the hand
gradients against autodiff (``shadow_every``), checkpoints and evaluates. ``jaxbp train`` calls
exactly this function, so a config gives the same bits from Python and from the command line.
A file that cannot be written mid-run (disk full, permission or file system lost) raises
:class:`RunWriteError`, naming the file and the checkpoint to resume from.

Files of a run directory (:data:`OUTPUTS`): ``config.toml`` (fully resolved), ``metrics.jsonl``
(one line per epoch, each appended whole; a torn last line is dropped on resume),
``summary.json``, the plots, ``checkpoint.npz`` (the training state, for ``resume``),
``best.npz`` (the training state at the epoch of the highest validation accuracy, mean over
seeds — or of the lowest training cost without a validation split; same format, kept beside
the last) and ``model.npz`` (the final parameters of every seed with the training split's
feature scaling and class names, for :func:`jaxbp.experiment.load_run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from jaxbp.experiment import report
from jaxbp.experiment.config import ConfigError, TrainConfig
from jaxbp.experiment.inference import classes_meta
from jaxbp.experiment.plan import (
    BEST,
    CHECKPOINT,
    CONFIG,
    LOCK,
    METRICS,
    MODEL,
    MODEL_FORMAT,
    OUTPUTS,
    PLOTS,
    SUMMARY,
    TENSORBOARD,
    Plan,
    check_config,
    check_contents,
    leftovers,
    load_data,
    lock_refusal,
    plan,
    received,
    remove_outputs,
    resume_config,
)
from jaxbp.files import Lock, LockError, LockOwner, acquire_lock, append_line, write_atomic

__all__ = [
    "OUTPUTS",
    "EpochEnd",
    "RunInterrupted",
    "RunStart",
    "RunWriteError",
    "Summary",
    "TrainingStopped",
    "load_data",
    "resume_config",
    "run",
]


class EpochEnd(NamedTuple):
    """What a callback of :func:`run` receives after each epoch.

    Attributes:
      epoch: the epoch just completed (1-based).
      epochs: the run's total number of epochs.
      start: the epoch the run (or its resumption) started from.
      metrics: that epoch's metrics.jsonl record (means over seeds, ``per_seed`` when several).
      name: the data's short name (built-in name or file name).
    """

    epoch: int
    epochs: int
    start: int
    metrics: dict
    name: str


@dataclasses.dataclass(frozen=True)
class Summary:
    """The result of :func:`run`: summary.json's values (``summary["test_accuracy"]``) and
    where the run went.

    Attributes:
      values: the contents of summary.json.
      run_dir: the run directory.
      outputs: the file names written there.
      primary: False on the processes > 0 of a multi-host run (which write to scratch).
    """

    values: dict
    run_dir: Path
    outputs: tuple[str, ...]
    primary: bool = True

    def __getitem__(self, key):
        return self.values[key]


class TrainingStopped(RuntimeError):
    """Training stopped on a NaN loss or a failed shadow check; the message names the epoch,
    the cause, the last checkpoint and the best state, each with its training cost, and — after
    a divergence — how to start again from the best state with other settings.

    Attributes:
      checkpoint: the last checkpoint written; epoch: its epoch.
      best: ``(path, epoch)`` of best.npz, or None (no epoch completed).
      restart: after a divergence, the :class:`TrainConfig` changes that start a new run from
        the best state (``init_from``) with a learning rate ten times lower; else None.
      run_dir: the run directory.
    """

    def __init__(
        self, cause: Exception, checkpoint: Path, epoch: int, best=None, *, history=(), lr=None
    ):
        self.checkpoint, self.epoch, self.best = checkpoint, epoch, best
        self.run_dir = Path(checkpoint).parent
        losses = {h["epoch"]: h["train_loss"] for h in history}

        def cost(e):
            return f", training cost {losses[e]:.4g}" if e in losses else ""

        message = f"{cause}; the last checkpoint is {checkpoint} (epoch {epoch}{cost(epoch)})"
        if best is not None:
            message += f"; the best state is {best[0]} (epoch {best[1]}{cost(best[1])})"
        self.restart = None
        if isinstance(cause, FloatingPointError) and lr is not None:
            self.restart = {"lr": float(f"{lr / 10:.3g}")}
            if best is not None:
                self.restart["init_from"] = str(best[0])
            start = "from the best state" if best is not None else "afresh"
            changes = ", ".join(f"{k}={v!r}" for k, v in self.restart.items())
            message += f"; to start again {start} with a lower learning rate: {changes}"
        super().__init__(message)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: still a ``KeyboardInterrupt``, telling where the run can be
    resumed from.

    Attributes:
      run_dir: the run directory; epoch: the epoch of its last checkpoint (``resume`` starts
        there); epochs_done: the epochs completed when it was interrupted.
    """

    def __init__(self, run_dir: Path, epoch: int, epochs_done: int):
        self.run_dir, self.epoch, self.epochs_done = run_dir, epoch, epochs_done
        super().__init__(
            f"interrupted after epoch {epochs_done}; {run_dir / CHECKPOINT} holds epoch {epoch}"
        )


def _score(line: dict):
    """``(score, criterion)`` of an epoch for best.npz, higher is better: the validation
    accuracy (mean over seeds), or without a validation split minus the training cost J(Θ);
    ``(None, None)`` when the cost is not finite."""
    import math

    if line["val_accuracy"] is not None:
        return line["val_accuracy"], "val_accuracy"
    loss = line["train_loss"]
    if loss is None or not math.isfinite(loss):
        return None, None
    return -loss, "train_loss"


def _mesh(c: TrainConfig):
    """The data mesh of ``devices`` devices of ``platform``; ConfigError if unavailable."""
    import jax

    from jaxbp.distributed import data_mesh, select_platform

    try:
        devices = select_platform(c.platform) if c.platform else jax.devices()
    except RuntimeError as e:
        raise ConfigError("platform", str(e)) from None
    n = c.devices or len(devices)
    if n > len(devices):
        raise ConfigError(
            "devices",
            f"{n} requested but {len(devices)} {devices[0].platform} device(s) are available "
            "(on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)",
        )
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError("devices", f"a multi-host run uses all {len(devices)} devices, got {n}")
    return data_mesh(devices[:n])


def place(tree, mesh):
    """The single place where arrays go to devices: the data splits and the training state,
    replicated on every device of ``mesh``; each minibatch is then split over the mesh by the
    data-parallel gradient source (:mod:`jaxbp.distributed`)."""
    from jaxbp.distributed import replicate

    return replicate(mesh, tree)


def _platform(mesh) -> str:
    """The platform of the mesh's devices (``cpu``, ``gpu``, ``tpu``)."""
    return mesh.devices.flat[0].platform


def _device_count(array) -> int:
    try:
        return len(array.sharding.device_set)
    except AttributeError:
        return 1


class RunStart(NamedTuple):
    """What ``on_start`` of :func:`run` receives once the run directory is this run's (its
    lock taken) and the checkpoint to resume is loaded, just before the first epoch.

    Attributes:
      run_dir: the run directory (a default name is final only now).
      start: the epoch training starts from (the checkpoint's when resuming, else 0).
      epochs: the run's total number of epochs.
      resumed: whether the run continues a checkpoint.
      took_over: the :class:`jaxbp.files.LockOwner` of the stale lock this run took over (a
        run killed in this directory), or None.
    """

    run_dir: Path
    start: int
    epochs: int
    resumed: bool
    took_over: LockOwner | None = None


class RunWriteError(OSError):
    """A file of the run directory could not be written mid-run — disk full, permission or
    file system lost: an ``OSError`` (``errno``, ``strerror``, ``filename`` of the cause) whose
    message names the file, what it was to hold and the last checkpoint on disk.

    Attributes:
      path: the file; what: what it was to hold; run_dir: the run directory; epoch: the epoch
        of the last checkpoint written (``resume`` continues there), or None when there is none.
    """

    def __init__(self, cause: OSError, path: Path, what: str, run_dir: Path, epoch: int | None):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path, self.what, self.run_dir, self.epoch = Path(path), what, run_dir, epoch

    def __str__(self) -> str:
        text = f"could not write {self.path} ({self.what}): {self.strerror}"
        if self.epoch is None:
            return f"{text}; no checkpoint was written, so the run cannot be resumed"
        return f"{text}; the last checkpoint is epoch {self.epoch}"


class _Writes:
    """The run directory's files as this run writes them: :meth:`to` turns an ``OSError`` into a
    :class:`RunWriteError` naming the file, what it holds and the checkpoint on disk."""

    def __init__(self, run_dir: Path, epoch: int | None):
        self.run_dir = run_dir
        self.epoch = epoch
        """The epoch of the last checkpoint on disk (None: none yet)."""

    @contextlib.contextmanager
    def to(self, name: str | None, what: str):
        """Yields the path of file ``name`` of the run directory. ``name`` None: several files
        (the plots, the removal of leftovers), and the error names the one that failed."""
        path = self.run_dir / name if name is not None else self.run_dir
        try:
            yield path
        except RunWriteError:
            raise
        except OSError as e:
            failed = path if name is not None or e.filename is None else Path(e.filename)
            raise RunWriteError(e, failed, what, self.run_dir, self.epoch) from e


def _check_arguments(config, out, callbacks, resume, overwrite, on_start) -> list:
    """:func:`run`'s arguments checked, naming the one at fault; the callbacks as a list."""
    if config is not None:
        check_config(config)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected a path (str or os.PathLike), got {received(out)}")
    for name, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected True or False, got {received(value)}")
    if on_start is not None and not callable(on_start):
        raise TypeError(f"on_start: expected a callable, got {received(on_start)}")
    if callbacks is None:
        return []
    if (
        callable(callbacks)
        or isinstance(callbacks, (str, bytes))
        or not hasattr(callbacks, "__iter__")
    ):
        raise TypeError(f"callbacks: expected a sequence of callables, got {received(callbacks)}")
    callbacks = list(callbacks)
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"callbacks[{i}]: expected a callable, got {received(callback)}")
    return callbacks


def run(
    config: TrainConfig | None,
    out=None,
    *,
    callbacks: Sequence[Callable[[EpochEnd], None]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_start: Callable[[RunStart], None] | None = None,
) -> Summary:
    """Trains ``config`` into a run directory and evaluates it on the test split.

    The run directory belongs to this run from start to end: a lock file in it (:data:`LOCK`)
    names the process; a second run into it is refused while that process lives. A process
    killed there leaves a *stale* lock, which ``resume`` and ``overwrite`` take over (and
    ``on_start`` reports); a default name is reserved atomically, so that runs started in the
    same second get names of their own.

    Args:
      config: the run's configuration (resolved here); with ``resume`` and None, the run
        directory's own ``config.toml``.
      out: the run directory (overrides ``config.out``; default ``runs/<data>-<timestamp>``,
        or ``…-2``, ``…-3`` … when taken).
      callbacks: each called with an :class:`EpochEnd` after every epoch (e.g. a progress bar).
      resume: continue the run in ``out`` from its checkpoint; the config must hash the same.
        ``epochs`` may grow (or shrink, not below the checkpoint's epoch) under a constant
        learning-rate schedule; a decaying schedule spans the run's length, and a run that
        stopped early trains no further, so there ``epochs`` must stay.
      overwrite: replace a run already in ``out`` (only files a run writes may be there).
      on_start: called with a :class:`RunStart` once the run directory is this run's and the
        checkpoint loaded, before the first epoch (on the process that writes the directory).

    Returns:
      The :class:`Summary`; its values are those written to summary.json.

    Raises:
      TypeError: an argument of the wrong type, naming it and the value received.
      ConfigError: a bad field, a run directory in use or not this run's to take, or a
        checkpoint that cannot be continued — before anything is written.
      jaxbp.data.DataError: bad data, naming the file, before anything is written.
      RunWriteError: a file of the run directory could not be written (disk full, permission or
        file system lost), naming it and the last checkpoint to resume from.
      TrainingStopped: a NaN loss or a failed shadow check during training.
      RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``) during training, naming the checkpoint
        to resume from.

    Example:
      >>> from jaxbp.experiment import TrainConfig, run
      >>> s = run(TrainConfig(dataset="iris", hidden=(8,), epochs=3), "runs/iris-demo")
      >>> 0 <= s["test_accuracy"] <= 1
      True
    """
    callbacks = _check_arguments(config, out, callbacks, resume, overwrite, on_start)
    if config is None:
        if not resume or out is None:
            raise ConfigError("config", "needed unless resuming a run directory (out)")
        config = resume_config(out)
    if out is not None:
        config = dataclasses.replace(config, out=os.fspath(out))
    if resume and config.out is None:
        raise ConfigError("resume", "name the run directory to continue ({out})")
    if resume and not (Path(config.out) / CHECKPOINT).is_file():
        raise ConfigError(
            "resume", f"no checkpoint {Path(config.out) / CHECKPOINT} to continue from"
        )
    return _execute(plan(config, resume=resume, overwrite=overwrite), callbacks, on_start)


def _reserve(first: Path) -> Path:
    """The first of ``first``, ``first-2``, ``first-3`` … that this process creates (``mkdir``
    without ``exist_ok``: atomic, so two processes never get the same one)."""
    first.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = first, 2
    while True:
        try:
            candidate.mkdir()
        except FileExistsError:
            candidate, n = first.with_name(f"{first.name}-{n}"), n + 1
            continue
        return candidate


def _claim(p: Plan) -> tuple[Path, Lock]:
    """Makes the run directory this run's: creates it (a default name: the first free one) and
    takes its lock, then checks again what :func:`plan` saw — another process may have
    written there since. A refusal leaves the directory as it was.

    Returns:
      The run directory and its :class:`jaxbp.files.Lock`.

    Raises:
      ConfigError: the directory is in use, left by a killed run (without ``resume`` /
        ``overwrite``), or holds what this run may not replace.
      RunWriteError: the directory or its lock cannot be created.
    """
    run_dir = p.run_dir
    try:
        if p.auto_named:
            run_dir = _reserve(run_dir)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(run_dir / LOCK, take_stale=p.overwrite or not p.fresh)
    except LockError as e:
        raise lock_refusal(run_dir, e.state, e.owner, take_stale=False) from None
    except OSError as e:
        epoch = None if p.fresh else checkpoint_epoch(run_dir)
        raise RunWriteError(e, run_dir / LOCK, "the run's lock", run_dir, epoch) from e
    with _released_on_error(lock):
        if p.fresh:
            check_contents(run_dir, overwrite=p.overwrite)
    return run_dir, lock


@contextlib.contextmanager
def _released_on_error(lock: Lock):
    """Releases ``lock`` when the block raises (noting on the error a lock left behind)."""
    try:
        yield
    except BaseException as error:
        try:
            lock.release()
        except OSError as e:
            error.add_note(f"the lock {lock.path} stays behind ({e.strerror or e}); it is stale")
        raise


def checkpoint_epoch(run_dir: Path) -> int | None:
    """The epoch of the checkpoint in ``run_dir``, or None when there is none to read."""
    from jaxbp import checkpoint

    try:
        return int(checkpoint.read_meta(Path(run_dir) / CHECKPOINT)["epoch"])
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError):
        return None


def read_history(path: Path, epoch: int) -> list[dict]:
    """metrics.jsonl's records of epochs 1 … ``epoch`` (the checkpoint's), to resume from.

    A last line that does not parse — torn by a process or a disk that failed while appending
    it — is dropped, and so are the records after the checkpoint (those epochs are trained
    again: the checkpoint is the truth).

    Raises:
      ConfigError: (field ``resume``) a line before the last that is not a record, or records
        missing for an epoch the checkpoint has completed.
    """
    pieces = path.read_bytes().split(b"\n") if path.is_file() else []
    history = []
    for i, piece in enumerate(pieces):
        if not piece.strip():
            continue
        try:
            record = json.loads(piece.decode("utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError(f"no epoch in {record!r:.60}")
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if not any(p.strip() for p in pieces[i + 1 :]):
                break  # the torn last line
            raise ConfigError(
                "resume", f"{path}, line {i + 1}: not a metrics record ({e}); the file is damaged"
            ) from None
        if record["epoch"] <= epoch:
            history.append(record)
    if [h["epoch"] for h in history] != list(range(1, epoch + 1)):
        have = ", ".join(str(h["epoch"]) for h in history) or "none"
        raise ConfigError(
            "resume",
            f"{path} holds the records of epochs {have}, but the checkpoint has completed "
            f"{epoch}; the run's history cannot be continued",
        )
    return history


def _execute(p: Plan, callbacks, on_start=None) -> Summary:
    """Executes a :func:`plan`: the run directory is taken (:func:`_claim`) before anything is
    written to it, and released however the run ends."""
    import jax

    mesh = _mesh(p.config)  # refused before anything is written
    if jax.process_index() > 0:  # multi-host: only process 0 writes the run directory
        scratch = Path(tempfile.mkdtemp(prefix=f"jaxbp-process{jax.process_index()}-"))
        return _train(p, p.run_dir, scratch, mesh, callbacks, None, None)
    run_dir, lock = _claim(p)
    with _released_on_error(lock):
        summary = _train(p, run_dir, run_dir, mesh, callbacks, on_start, lock.replaced)
    with _Writes(run_dir, summary["epochs"]).to(LOCK, "the run's lock, removed at the end"):
        lock.release()
    return summary


def _train(  # noqa: C901 - the run, step by step
    p: Plan, source: Path, run_dir: Path, mesh, callbacks, on_start, took_over
) -> Summary:
    """The run itself: resumes from ``source``'s checkpoint (``p.fresh``: starts afresh) and
    writes into ``run_dir`` (the same, or scratch on the processes > 0 of a multi-host run)."""
    import jax

    c = p.config
    if c.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jaxbp
    from jaxbp import checkpoint, shadow
    from jaxbp import train as T
    from jaxbp.data import one_hot
    from jaxbp.experiment import network
    from jaxbp.optim import make_optimizer, needs_value_fn

    t_start = time.perf_counter()
    main = jax.process_index() == 0
    if main:
        c = dataclasses.replace(c, out=str(run_dir))  # a default name is final only now
    ds = p.dataset
    dtype = jnp.dtype(c.dtype)
    k = ds.num_classes
    sizes = [ds.num_features, *c.hidden, k]
    seeds = list(c.seeds)
    n_train = ds.x_train.shape[0]
    batch = None if c.batch_size == "all" else c.batch_size
    steps_per_epoch = 1 if batch is None else n_train // batch
    x, y, x_val, y_val = place(
        (
            np.asarray(ds.x_train, dtype),
            one_hot(ds.y_train, k, dtype),
            np.asarray(ds.x_val, dtype),
            one_hot(ds.y_val, k, dtype),
        ),
        mesh,
    )
    x_test, y_test = place((np.asarray(ds.x_test, dtype), one_hot(ds.y_test, k, dtype)), mesh)
    optimizer = make_optimizer(
        c.optimizer,
        lr=c.lr,
        schedule=c.schedule,
        total_steps=c.epochs * steps_per_epoch,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
    )
    grad_source = None
    parallel = mesh.devices.size > 1 or c.precision != "float32"
    if parallel and c.model == "mlp":  # each minibatch split over the mesh: per-device Δ, one psum
        from jaxbp.distributed import data_parallel_source

        grad_source = data_parallel_source(
            mesh, precision=c.precision, base=T.gradient_source(c.grad)
        )
    model = network.build(c, ds.num_features, k, p.image_shape, dtype, source=grad_source)
    if parallel and c.model == "cnn":
        model = network.sharded(model, mesh)
    loop = c.loop or ("steps" if c.model == "cnn" and _platform(mesh) == "cpu" else "scan")
    uses_value_fn = needs_value_fn(c.optimizer)
    if loop == "steps":  # one program per minibatch: XLA:CPU's convolutions (train_steps.py)
        from jaxbp.train_steps import compile_steps

        step = compile_steps(
            optimizer, model, batch_size=batch, l2=c.l2, patience=c.patience,
            uses_value_fn=uses_value_fn,
        )  # fmt: skip
    else:
        epoch_fn = T.make_epoch(
            optimizer, model, batch_size=batch, l2=c.l2, uses_value_fn=uses_value_fn
        )
        step = T.compile_step(T.make_step(epoch_fn, model=model, l2=c.l2, patience=c.patience))

    def init(seed, params):
        key = jax.random.key(seed)
        state = T.init_state(key, model, optimizer, params=params)
        return state, T.init_early_stop(state.params)

    seed_array = jnp.asarray(seeds, jnp.uint32)
    state, stop = place(jax.jit(jax.vmap(init))(seed_array, p.initial), mesh)
    history: list[dict] = []
    start, elapsed_before, shadow_worst = 0, 0.0, None
    best = None  # (score, epoch) of best.npz: see _score
    writes = _Writes(run_dir, None)
    if p.fresh and main:
        with writes.to(None, "the earlier run's files, removed to overwrite it"):
            remove_outputs(run_dir)
    elif not p.fresh:
        try:  # nothing is written yet: a checkpoint of another model is the resume's fault
            (state, stop), meta = checkpoint.load(source / CHECKPOINT, (state, stop))
        except checkpoint.CheckpointError as e:
            raise ConfigError("resume", str(e)) from None
        state, stop = place((state, stop), mesh)
        start = int(meta["epoch"])
        writes.epoch = start
        elapsed_before = float(meta.get("wall_time_s", 0.0))
        shadow_worst = meta.get("shadow_max_rel_error")
        if (source / BEST).is_file():
            try:  # a damaged best.npz does not block the resumption: the next best replaces it
                best_meta = checkpoint.read_meta(source / BEST)
            except checkpoint.CheckpointError:
                best_meta = {}
            if (
                best_meta.get("config_hash") == p.hash
                and best_meta.get("epoch", start + 1) <= start
                and ("score" in best_meta or "val_accuracy" in best_meta)
            ):
                best = (best_meta.get("score", best_meta.get("val_accuracy")), best_meta["epoch"])
        history = read_history(source / METRICS, start)
        if main:  # temporary files of writes a killed process left: this run holds the lock
            with writes.to(None, "temporary files of interrupted writes, removed"):
                for leftover in leftovers(run_dir):
                    leftover.unlink()
    # a run that stopped early (every seed) trains no further: its resumption re-evaluates
    last_epoch = c.epochs if np.any(jax.device_get(stop.active)) else start
    if on_start is not None:
        on_start(RunStart(run_dir, start, c.epochs, not p.fresh, took_over))
    header = (
        f"jaxbp {jaxbp.__version__} train — fully resolved configuration of this run\n"
        f"config hash {p.hash}"
    )
    with writes.to(CONFIG, "the run's configuration") as path:
        write_atomic(path, c.to_toml(header))
    with writes.to(METRICS, "the metrics of the epochs up to the checkpoint") as path:
        write_atomic(path, "".join(json.dumps(h) + "\n" for h in history))

    def save(epoch, wall, path=CHECKPOINT, what=None, **extra):
        meta = {
            "epoch": epoch,
            "epochs": c.epochs,
            "stopped": not np.any(jax.device_get(stop.active)),
            "config_hash": p.hash,
            "hashed_config": p.hashed,
            "seeds": seeds,
            "wall_time_s": wall,
            "shadow_max_rel_error": shadow_worst,
            **extra,
        }
        with writes.to(path, what or f"the checkpoint of epoch {epoch}") as target:
            checkpoint.save(target, (state, stop), meta=meta)
        if path == CHECKPOINT:
            writes.epoch = epoch

    if p.fresh:
        save(0, 0.0)
    shadow_fn = None
    if c.shadow_every:
        # the source that trains, against autodiff (for autodiff itself, and under bf16 whose
        # rounding the check's tolerance is not for: the hand-derived gradient in float32)
        own = parallel or c.grad not in ("manual", "autodiff")
        checked_model = model
        if not (own and c.precision == "float32"):
            manual = dataclasses.replace(c, grad="manual")
            checked_model = network.build(manual, ds.num_features, k, p.image_shape, dtype)
        shadow_fn = jax.jit(
            jax.vmap(
                lambda params: shadow.shadow_errors(params, x, y, l2=c.l2, model=checked_model)
            )
        )
    name = ds.name if c.dataset else Path(ds.name).name
    if c.tensorboard:
        from jaxbp.experiment.tensorboard import TensorBoardLogger

        logger = TensorBoardLogger(run_dir, seeds, start)
        callbacks = [logger, *callbacks]
    last_saved = start
    t_epoch = time.perf_counter()
    try:
        epochs = T.fit(step, state, stop, (x, y, x_val, y_val), epochs=last_epoch, start=start)
        for e, new_state, new_stop, metrics in epochs:
            state, stop = new_state, new_stop  # the checkpoint writer reads these
            checked = None
            if shadow_fn is not None and e % c.shadow_every == 0:
                errors = jax.device_get(shadow_fn(state.params))
                worst = shadow.check_shadow(errors, dtype, epoch=e)
                per_leaf = {leaf: float(np.max(v)) for leaf, v in errors.items()}
                checked = (worst, per_leaf)
                shadow_worst = max(worst, shadow_worst or 0.0)
            now = time.perf_counter()
            line = report.metrics_line(e, metrics, now - t_epoch, checked)
            t_epoch = now
            history.append(line)
            with writes.to(METRICS, f"the metrics of epoch {e}") as path:
                append_line(path, json.dumps(line) + "\n")
            if e % c.checkpoint_every == 0 or e == c.epochs:
                save(e, elapsed_before + now - t_start)
                last_saved = e
            score, criterion = _score(line)
            if score is not None and (best is None or score > best[0]):
                best = (score, e)
                what = f"the best state (epoch {e})"
                save(
                    e, elapsed_before + now - t_start, BEST, what, score=score, criterion=criterion
                )
            for callback in callbacks:
                callback(EpochEnd(e, c.epochs, start, line, name))
    except (T.TrainingDiverged, shadow.ShadowError) as exc:
        best_at = (run_dir / BEST, best[1]) if best is not None else None
        raise TrainingStopped(
            exc, run_dir / CHECKPOINT, last_saved, best_at, history=history, lr=c.lr
        ) from exc
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start
        raise RunInterrupted(run_dir, last_saved, done) from None
    finally:
        if c.tensorboard:
            logger.close()
    epochs_done = history[-1]["epoch"] if history else start
    if epochs_done != last_saved:  # stopped early between checkpoints
        save(epochs_done, elapsed_before + time.perf_counter() - t_start)

    final = stop.best_params if c.patience > 0 else state.params
    predict = jax.jit(jax.vmap(lambda prm: T.predict_labels(prm, x_test, model=model)))
    test_loss = jax.jit(jax.vmap(lambda prm: T.evaluate(prm, x_test, y_test, model=model)[0]))(
        final
    )
    predictions = np.asarray(predict(final))
    matrices = [T.confusion_matrix(ds.y_test, pr, k) for pr in predictions]
    accuracies = np.array([np.trace(m) / m.sum() for m in matrices])
    val_accuracies = None
    if ds.x_val.shape[0]:
        val_accuracies = np.asarray(
            jax.jit(jax.vmap(lambda prm: T.evaluate(prm, x_val, y_val, model=model)[1]))(final),
            np.float64,
        ).tolist()
    summary = report.summarize(
        c,
        ds,
        history,
        accuracies=accuracies,
        matrices=matrices,
        test_loss=test_loss,
        best_epochs=jax.device_get(stop.best_epoch),
        shadow_worst=shadow_worst,
        wall=elapsed_before + time.perf_counter() - t_start,
        devices=_device_count(x),
        sizes=sizes,
        config_hash=p.hash,
        network=model.name,
        loop=loop,
    )
    model_meta = {
        "format": MODEL_FORMAT,
        **network.describe(c, sizes, p.image_shape),
        "dtype": c.dtype,
        "seeds": seeds,
        **classes_meta(ds.classes),
        "val_accuracies": val_accuracies,
        "epoch": epochs_done,
        "config_hash": p.hash,
    }
    model = {"params": final, "mean": np.asarray(ds.mean), "scale": np.asarray(ds.scale)}
    with writes.to(MODEL, "the trained model") as path:
        checkpoint.save(path, model, meta=model_meta)
    written = [CONFIG, METRICS, SUMMARY, CHECKPOINT, *([BEST] if best else []), MODEL]
    if c.tensorboard:
        written.append(TENSORBOARD)
    if c.plots and history:
        with writes.to(None, "the plots"):
            written[3:3] = report.write_plots(run_dir, history, matrices, ds, c, PLOTS)
    summary["outputs"] = written
    with writes.to(SUMMARY, "the summary") as path:
        write_atomic(path, json.dumps(summary, indent=2) + "\n")
    return Summary(summary, run_dir, tuple(written), main)
