"""Run plots as PNG files: loss and accuracy curves over epochs, and the confusion matrix.

Matplotlib with the non-interactive Agg backend (works without a display); each function writes
one file and closes its figure. Inputs are plain NumPy arrays with a leading seed axis, so that
several seeds trained together are drawn as thin lines with their mean on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS_UP_TO = 60
"""Curves over at most this many epochs get a marker at every point (a 1-epoch run is then a
visible dot, not an empty plot); longer ones are plain lines."""

EXPLICIT_TICKS_UP_TO = 12
"""Runs of at most this many epochs get a tick at every epoch; longer ones integer ticks only."""


def _curves(ax, epochs, values, label, color, marker):
    values = np.atleast_2d(np.asarray(values, np.float64))  # (seeds, epochs)
    if np.all(np.isnan(values)):
        return
    style = {"marker": "o", "markersize": 4} if marker else {}
    if values.shape[0] > 1:
        for row in values:
            thin = {**style, "markersize": 2.5} if style else {}
            ax.plot(epochs, row, color=color, alpha=0.25, linewidth=0.8, **thin)
        label = f"{label} (mean of {values.shape[0]} seeds)"
    ax.plot(epochs, np.nanmean(values, axis=0), color=color, label=label, linewidth=1.8, **style)


def _epoch_axis(ax, epochs: np.ndarray) -> None:
    """Whole-epoch ticks: every epoch for short runs, integer ticks otherwise; a single epoch
    centred with room on both sides."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    if epochs.size == 0:
        return
    lo, hi = float(np.min(epochs)), float(np.max(epochs))
    if epochs.size <= EXPLICIT_TICKS_UP_TO:
        ax.set_xticks(np.unique(epochs))
        pad = 0.5 if hi == lo else 0.05 * (hi - lo) + 0.1
        ax.set_xlim(lo - pad, hi + pad)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(
    epochs: Sequence[int],
    series: dict[str, np.ndarray],
    *,
    ylabel: str,
    title: str,
    log_y: bool = False,
):
    """The figure :func:`plot_curves` writes, left open for the caller (tests inspect it; close
    it with ``matplotlib.pyplot.close``). Arguments as :func:`plot_curves`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    epochs = np.asarray(epochs)
    marker = epochs.size <= MARKERS_UP_TO
    for (label, values), color in zip(series.items(), colors, strict=False):
        _curves(ax, epochs, values, label, color, marker)
    _epoch_axis(ax, epochs)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_curves(
    path,
    epochs: Sequence[int],
    series: dict[str, np.ndarray],
    *,
    ylabel: str,
    title: str,
    log_y: bool = False,
) -> Path:
    """Line plot of per-epoch values, with a marker at every point for runs of up to
    :data:`MARKERS_UP_TO` epochs and whole-epoch ticks.

    Args:
      path: the PNG to write.
      epochs: the x values (1-based epoch numbers).
      series: label → (seeds, epochs) or (epochs,) values; all-NaN series are skipped. Say in
        the label what the values include (:func:`loss_labels` for the trainer's losses).
      ylabel, title: axis label and title.
      log_y: logarithmic y axis (for losses).

    Returns:
      ``path`` as a ``Path``.
    """
    plt = _pyplot()
    fig = curves_figure(epochs, series, ylabel=ylabel, title=title, log_y=log_y)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def loss_labels(l2: float) -> tuple[str, str]:
    """Legend labels for the trainer's ``train_loss`` and ``val_loss`` that say what each holds.

    ``train_loss`` is J(Θ) on the training split, the L2 penalty (λ/2m) Σ W² included;
    ``val_loss`` is the data cost alone (no penalty). With λ = 0 both are the data cost.

    Example:
      >>> loss_labels(0.1)
      ('train J(Θ): data cost + L2 penalty (λ = 0.1)', 'validation: data cost only (no L2 penalty)')
    """
    if l2:
        return (
            f"train J(Θ): data cost + L2 penalty (λ = {l2:g})",
            "validation: data cost only (no L2 penalty)",
        )
    return "train: data cost (λ = 0, no penalty)", "validation: data cost"


def plot_losses(path, epochs: Sequence[int], train, val, *, l2: float, title: str = "loss") -> Path:
    """The loss plot with truthful labels (:func:`loss_labels`): ``train`` and ``val`` are the
    trainer's ``train_loss`` and ``val_loss`` per epoch, (seeds, epochs) or (epochs,)."""
    train_label, val_label = loss_labels(l2)
    ylabel = "J(Θ) / data cost" if l2 else "data cost"
    return plot_curves(
        path, epochs, {train_label: train, val_label: val}, ylabel=ylabel, title=title, log_y=True
    )


def plot_confusion(path, matrix: np.ndarray, class_names: Sequence[str], *, title: str) -> Path:
    """Confusion matrix as a heat map: row = true class, column = predicted class, counts in
    the cells (omitted when there are more than 30 classes).

    Returns:
      ``path`` as a ``Path``.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    size = min(max(4.5, 0.45 * k + 2), 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    row_sums = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(matrix / row_sums, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(class_names), rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    dark = matrix[i, j] / row_sums[i, 0] > 0.5
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8 if k <= 12 else 6,
                        color="white" if dark else "black",
                    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
