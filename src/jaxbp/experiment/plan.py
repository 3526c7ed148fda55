"""Before a run writes anything: the file names of a run directory, the data a config trains
on (:func:`load_data`), the config of a run to resume (:func:`resume_config`) and :func:`plan`,
which reads and checks everything — config, data, run directory, checkpoint — and writes
nothing."""

from __future__ import annotations

import dataclasses
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
``overwrite=True`` removes exactly these."""


def is_own(entry: Path) -> bool:
    """Whether ``entry`` of a run directory is something a run writes (:data:`OUTPUTS`; the
    tensorboard folder only while it holds TensorBoard event files alone)."""
    if entry.name not in OUTPUTS:
        return False
    if entry.name == TENSORBOARD:
        return entry.is_dir() and all(
            f.is_file() and f.name.startswith("events.out.tfevents.") for f in entry.iterdir()
        )
    return entry.is_file()


def remove_outputs(run_dir: Path) -> None:
    """Removes what a run writes from ``run_dir`` (``overwrite``), nothing else."""
    import shutil

    for name in OUTPUTS:
        entry = run_dir / name
        if entry.is_dir() and is_own(entry):
            shutil.rmtree(entry)
        elif entry.is_file():
            entry.unlink()


MODEL_FORMAT = "jaxbp-model-1"


def resume_config(run_dir) -> TrainConfig:
    """The configuration a run directory was trained with (its ``config.toml``), to continue
    it: layer changes on it with :meth:`TrainConfig.updated` and pass it to :func:`run` with
    ``resume=True``.

    Raises:
      ConfigError: (field ``resume``) no checkpoint or no config.toml in ``run_dir``, or an
        invalid config.toml.
    """
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


def load_data(config: TrainConfig):
    """The :class:`jaxbp.data.Dataset` a config trains on: loaded, split and scaled exactly as
    :func:`run` does (the config is resolved first).

    Raises:
      ConfigError: a bad field. jaxbp.data.DataError: bad data, naming the file.
    """
    from jaxbp.data import load_dataset

    c = config.resolve()
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


def plan(config: TrainConfig, *, resume: bool, overwrite: bool) -> Plan:
    """Reads and validates everything — config, data, run directory, checkpoint — and writes
    nothing. Raises ConfigError / DataError on any bad input."""
    from jaxbp import checkpoint
    from jaxbp.data import fingerprint

    if resume and overwrite:
        raise ConfigError("resume", "{resume} and {overwrite}: choose one")
    c = config.resolve()
    if c.tensorboard:
        from jaxbp.experiment.tensorboard import check_available

        check_available()
    dataset = load_data(c)
    n_train = dataset.x_train.shape[0]
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
    if c.out is None:
        name = c.dataset or Path(c.data).stem
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{name}-{stamp}"
        n = 2
        while run_dir.exists():
            run_dir = Path("runs") / f"{name}-{stamp}-{n}"
            n += 1
        c = dataclasses.replace(c, out=str(run_dir))
    run_dir = Path(c.out)
    if resume:
        try:
            meta = checkpoint.read_meta(run_dir / CHECKPOINT)
        except checkpoint.CheckpointError as e:
            raise ConfigError("resume", str(e)) from None
        if meta.get("config_hash") != digest:
            diff = describe_difference(meta.get("hashed_config", {}), hashed)
            raise ConfigError(
                "resume",
                f"config hash mismatch with the checkpoint in {run_dir} ({diff}); resume with "
                "the run's own settings or start a new run",
            )
    elif run_dir.exists():
        if not run_dir.is_dir():
            raise ConfigError("out", f"{run_dir} exists and is not a directory")
        entries = list(run_dir.iterdir())
        if entries and not overwrite:
            raise ConfigError(
                "out",
                f"run directory {run_dir} already exists; pass {{overwrite}} to replace it or "
                "{resume} to continue it",
            )
        foreign = [e.name for e in entries if not is_own(e)]
        if overwrite and foreign:
            more = ", …" if len(foreign) > 3 else ""
            raise ConfigError(
                "overwrite",
                f"{run_dir} holds files a run does not write ({', '.join(foreign[:3])}{more}); "
                "refusing to replace it",
            )
    from jaxbp.files import check_creatable_dir

    try:  # a place that cannot hold the run is refused now, before any training
        check_creatable_dir(run_dir)
    except ValueError as e:
        raise ConfigError("out", str(e)) from None
    return Plan(c, dataset, run_dir, hashed, digest, not resume, initial, shape)
