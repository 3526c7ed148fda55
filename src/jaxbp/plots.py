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


def _curves(ax, epochs, values, label, color):
    values = np.atleast_2d(np.asarray(values, np.float64))  # (seeds, epochs)
    if np.all(np.isnan(values)):
        return
    if values.shape[0] > 1:
        for row in values:
            ax.plot(epochs, row, color=color, alpha=0.25, linewidth=0.8)
        label = f"{label} (mean of {values.shape[0]} seeds)"
    ax.plot(epochs, np.nanmean(values, axis=0), color=color, label=label, linewidth=1.8)


def plot_curves(
    path,
    epochs: Sequence[int],
    series: dict[str, np.ndarray],
    *,
    ylabel: str,
    title: str,
    log_y: bool = False,
) -> Path:
    """Line plot of per-epoch values.

    Args:
      path: the PNG to write.
      epochs: the x values (1-based epoch numbers).
      series: label → (seeds, epochs) or (epochs,) values; all-NaN series are skipped.
      ylabel, title: axis label and title.
      log_y: logarithmic y axis (for losses).

    Returns:
      ``path`` as a ``Path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for (label, values), color in zip(series.items(), colors, strict=False):
        _curves(ax, np.asarray(epochs), values, label, color)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


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
