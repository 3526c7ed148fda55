"""The experiment runner as a library: what ``jaxbp train`` / ``predict`` do, as Python calls.

- :class:`TrainConfig` — a frozen, typed configuration, one field per ``jaxbp train`` option,
  with a TOML round trip and :meth:`~TrainConfig.resolve` holding every rule;
- :func:`load_data` — the dataset a config trains on, split and scaled as :func:`run` does;
- :func:`run` — trains a config into a run directory and returns its :class:`Summary`;
- :func:`load_run` — a finished run as a :class:`Run` with ``predict`` / ``predict_proba``, the
  training split's feature scaling applied inside.

Example:
  >>> from jaxbp.experiment import TrainConfig, load_run, run
  >>> config = TrainConfig(dataset="iris", hidden=(8,), epochs=20, seeds=(0, 1))
  >>> summary = run(config, "runs/iris-demo")  # doctest: +SKIP
  >>> model = load_run("runs/iris-demo")  # the seed with the best validation accuracy
  >>> model.predict([[5.1, 3.5, 1.4, 0.2]])  # doctest: +SKIP
  array(['setosa'], dtype='<U10')
"""

from jaxbp.experiment.config import ConfigError, TrainConfig
from jaxbp.experiment.inference import Evaluation, Run, load_run
from jaxbp.experiment.runner import (
    OUTPUTS,
    EpochEnd,
    RunInterrupted,
    Summary,
    TrainingStopped,
    load_data,
    resume_config,
    run,
)

__all__ = [
    "OUTPUTS",
    "ConfigError",
    "EpochEnd",
    "Evaluation",
    "Run",
    "RunInterrupted",
    "Summary",
    "TrainConfig",
    "TrainingStopped",
    "load_data",
    "load_run",
    "resume_config",
    "run",
]
