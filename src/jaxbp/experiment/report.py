"""What a run writes about itself: metrics lines, summary.json and plots. The numbers come
from :mod:`jaxbp.train`; printing is the CLI's (:mod:`jaxbp.cli.train_report`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def host(value):
    """NumPy scalar/array → JSON-ready float(s); NaN and ±inf → None."""
    a = np.asarray(value, np.float64)
    if a.ndim == 0:
        v = float(a)
        return v if math.isfinite(v) else None
    return [v if math.isfinite(v) else None for v in a.tolist()]


def metrics_line(epoch: int, metrics, seconds: float, checked=None) -> dict:
    """One metrics.jsonl record: each :class:`jaxbp.train.EpochMetrics` field as the mean over
    seeds (and per seed under ``per_seed`` when there are several), the epoch's seconds, and the
    shadow check's errors when it ran (``checked`` = (worst, {leaf: error}))."""
    line = {"epoch": epoch}
    per_seed = {}
    for name in metrics._fields:
        values = np.atleast_1d(np.asarray(getattr(metrics, name), np.float64))
        line[name] = host(values.mean())
        per_seed[name] = host(values)
    line["seconds"] = round(seconds, 6)
    if checked is not None:
        line["shadow_max_rel_error"] = checked[0]
        line["shadow_rel_error"] = checked[1]
    if len(per_seed["train_loss"]) > 1:
        line["per_seed"] = per_seed
    return line


def summarize(
    c, ds, history, *, accuracies, matrices, test_loss, best_epochs, shadow_worst, wall,
    devices, sizes, config_hash, network=None, loop=None,
) -> dict:  # fmt: skip
    """summary.json: the run's configuration essentials and its results.

    ``final_train_loss`` is J(Θ) on the training split after the last epoch run (the mean over
    seeds; ``final_train_losses`` per seed); test figures use the parameters of the last epoch,
    or of the best validation epoch under early stopping (``patience`` > 0).
    """
    import jax

    import jaxbp

    total = np.sum(matrices, axis=0)
    per_class = {
        name: (float(total[i, i] / total[i].sum()) if total[i].sum() else None)
        for i, name in enumerate(ds.class_names)
    }
    last = history[-1] if history else {}
    per_seed = last.get("per_seed", {})
    epochs_done = last.get("epoch", 0)
    summary = {
        "dataset": c.dataset or c.data,
        "split": ds.split,
        "n_train": int(ds.x_train.shape[0]),
        "n_val": int(ds.x_val.shape[0]),
        "n_test": int(ds.x_test.shape[0]),
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
        "model": c.model,
        "network": network,
        "sizes": sizes,
        "activation": c.activation,
        "optimizer": c.optimizer,
        "grad": c.grad,
        "dtype": c.dtype,
        "precision": c.precision,
        "seeds": list(c.seeds),
        "epochs": epochs_done,
        "epochs_requested": c.epochs,
        "stopped_early": bool(epochs_done < c.epochs),
        "test_accuracy": float(accuracies.mean()),
        "test_accuracy_std": float(accuracies.std()),
        "test_accuracies": accuracies.tolist(),
        "test_loss": host(np.mean(np.asarray(test_loss, np.float64))),
        "final_train_loss": last.get("train_loss"),
        "final_train_losses": per_seed.get("train_loss", [last.get("train_loss")]),
        "final_train_accuracy": last.get("train_accuracy"),
        "final_val_loss": last.get("val_loss"),
        "final_val_accuracy": last.get("val_accuracy"),
        "best_epochs": np.asarray(best_epochs).tolist() if c.patience else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": total.tolist(),
        "shadow_max_rel_error": shadow_worst,
        "wall_time_s": round(wall, 3),
        "devices": devices,
        "loop": loop,
        "platform": jax.default_backend(),
        "jax_version": jax.__version__,
        "jaxbp_version": jaxbp.__version__,
        "config_hash": config_hash,
    }
    if len(c.seeds) > 1:
        summary["confusion_matrices"] = [m.tolist() for m in matrices]
    return summary


def write_plots(run_dir: Path, history, matrices, ds, c, names) -> list[str]:
    """loss.png, accuracy.png (per-seed lines and their mean) and confusion_matrix.png (summed
    over seeds); returns the file names written."""
    from jaxbp import plots

    epochs = [h["epoch"] for h in history]

    def series(name):
        rows = [h.get("per_seed", {}).get(name, [h[name]]) for h in history]
        return np.array([[np.nan if v is None else v for v in r] for r in rows]).T

    label = f"{ds.name if c.dataset else Path(ds.name).name} · {c.grad} gradients"
    # the labels say what each curve holds: train J(Θ) includes the L2 penalty, validation not
    plots.plot_losses(
        run_dir / names[0],
        epochs,
        series("train_loss"),
        series("val_loss"),
        l2=float(c.l2),
        title=f"loss — {label}",
    )
    plots.plot_curves(
        run_dir / names[1],
        epochs,
        {"train": series("train_accuracy"), "validation": series("val_accuracy")},
        ylabel="accuracy",
        title=f"accuracy — {label}",
    )
    total = np.sum(matrices, axis=0)
    accuracy = 100 * np.trace(total) / total.sum()
    seeds = f", summed over {len(matrices)} seeds" if len(matrices) > 1 else ""
    plots.plot_confusion(
        run_dir / names[2],
        total,
        ds.class_names,
        title=f"test confusion matrix ({accuracy:.2f} % correct{seeds})",
    )
    return list(names)
