"""Optional TensorBoard logging of a run (``tensorboard=True``, ``jaxbp train --tensorboard``).

Each epoch's metrics.jsonl record becomes scalars in ``<run>/tensorboard/`` — ``train/loss``
(J(Θ) with the L2 term), ``train/accuracy``, ``validation/loss`` (data cost only),
``validation/accuracy``, ``train/batch_loss``, ``train/grad_norm``, ``time/epoch_seconds`` and,
when the shadow check ran, ``shadow/max_rel_error`` — the means over seeds, and with several
seeds each seed's loss and accuracy under ``seed_<s>/``. The step is the epoch. A resumed run
purges what was logged after its checkpoint, so a curve never holds an epoch twice.

The writer is `tensorboardX <https://github.com/lanpa/tensorboardX>`_ (an extra:
``pip install 'jaxbp[tensorboard]'``); view with ``tensorboard --logdir runs``.
"""

from __future__ import annotations

from pathlib import Path

from jaxbp.experiment.config import ConfigError

DIRECTORY = "tensorboard"
"""The event files' folder inside the run directory."""

SCALARS = {
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "val_loss": "validation/loss",
    "val_accuracy": "validation/accuracy",
    "batch_loss": "train/batch_loss",
    "grad_norm": "train/grad_norm",
    "seconds": "time/epoch_seconds",
    "shadow_max_rel_error": "shadow/max_rel_error",
}
"""metrics.jsonl key → TensorBoard tag."""

PER_SEED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def check_available() -> None:
    """Raises ConfigError (field ``tensorboard``) when tensorboardX is not installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tensorboard", "needs tensorboardX: pip install 'jaxbp[tensorboard]'"
        ) from None


class TensorBoardLogger:
    """A callback of :func:`jaxbp.experiment.run` writing each epoch's scalars.

    Args:
      run_dir: the run directory; events go to ``run_dir / "tensorboard"``.
      seeds: the run's training seeds (for the ``seed_<s>/`` tags).
      start: the epoch the run starts from; events logged after it by an earlier attempt are
        purged.
    """

    def __init__(self, run_dir, seeds, start: int = 0):
        from tensorboardX import SummaryWriter

        self.seeds = list(seeds)
        # TensorBoard drops the earlier files' events from step start + 1 on (a SessionLog.START)
        self.writer = SummaryWriter(str(Path(run_dir) / DIRECTORY), purge_step=start + 1)

    def __call__(self, event) -> None:
        m, step = event.metrics, event.epoch
        for key, tag in SCALARS.items():
            if m.get(key) is not None:
                self.writer.add_scalar(tag, m[key], step)
        for key in PER_SEED if "per_seed" in m else ():
            for seed, value in zip(self.seeds, m["per_seed"][key], strict=True):
                if value is not None:
                    self.writer.add_scalar(f"seed_{seed}/{SCALARS[key]}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
