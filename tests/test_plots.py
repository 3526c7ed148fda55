"""jaxbp.plots: readable at one epoch (markers), whole-epoch ticks, labels that say what the
curves include; rendered with the Agg backend and inspected through matplotlib's objects."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxbp import plots  # noqa: E402


def _drawn(fig):
    fig.canvas.draw()
    (ax,) = fig.axes
    return ax


def _visible_ticks(ax):
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def _has_marker(line) -> bool:
    return line.get_marker() not in (None, "", " ", "None", "none")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_one_epoch_is_a_visible_point_with_a_single_integer_tick():
    fig = plots.curves_figure(
        [1], {"train": np.array([0.7]), "validation": np.array([0.9])}, ylabel="loss", title="t"
    )
    ax = _drawn(fig)
    lines = ax.get_lines()
    assert len(lines) == 2 and all(_has_marker(line) for line in lines)
    assert _visible_ticks(ax) == [1.0]
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi and hi - lo >= 0.9  # room around the point, not a sliver


@pytest.mark.parametrize("n", [2, 3, 5, 12, 40, 300])
def test_epoch_ticks_are_whole_numbers(n):
    epochs = np.arange(1, n + 1)
    fig = plots.curves_figure(
        epochs, {"train": np.linspace(1, 0.1, n)}, ylabel="loss", title="t", log_y=True
    )
    ticks = _visible_ticks(_drawn(fig))
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if n <= plots.EXPLICIT_TICKS_UP_TO:
        assert ticks == [float(e) for e in epochs]


def test_markers_on_short_runs_plain_lines_on_long_ones():
    short = _drawn(plots.curves_figure(range(1, 4), {"a": [1, 2, 3]}, ylabel="y", title="t"))
    assert all(_has_marker(line) for line in short.get_lines())
    n = plots.MARKERS_UP_TO + 1
    long = _drawn(plots.curves_figure(range(1, n + 1), {"a": np.ones(n)}, ylabel="y", title="t"))
    assert not any(_has_marker(line) for line in long.get_lines())


def test_several_seeds_thin_lines_and_a_labelled_mean_with_markers():
    values = np.array([[0.5], [0.6], [0.7]])  # 3 seeds, 1 epoch
    ax = _drawn(plots.curves_figure([1], {"train": values}, ylabel="loss", title="t"))
    assert len(ax.get_lines()) == 4 and all(_has_marker(line) for line in ax.get_lines())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (mean of 3 seeds)"]


def test_all_nan_series_is_left_out_of_the_legend():
    series = {"train": np.array([1.0, 0.5]), "validation": np.array([np.nan, np.nan])}
    ax = _drawn(plots.curves_figure([1, 2], series, ylabel="loss", title="t"))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train"]


def test_loss_labels_say_what_each_curve_includes():
    train, val = plots.loss_labels(0.1)
    assert "L2 penalty" in train and "λ = 0.1" in train and "data cost" in train
    assert "no L2 penalty" in val and "data cost only" in val
    train0, val0 = plots.loss_labels(0.0)
    assert "penalty" not in val0 and "no penalty" in train0 and "data cost" in train0


def test_plot_losses_and_curves_write_pngs_and_close_their_figures(tmp_path):
    before = plt.get_fignums()
    out = plots.plot_losses(tmp_path / "loss.png", [1], np.array([0.4]), np.array([0.5]), l2=0.3)
    assert out.read_bytes().startswith(b"\x89PNG")
    out = plots.plot_curves(
        tmp_path / "acc.png", [1, 2], {"train": [0.5, 0.9]}, ylabel="accuracy", title="t"
    )
    assert out.read_bytes().startswith(b"\x89PNG")
    assert plt.get_fignums() == before


def test_plot_losses_legend_text(monkeypatch, tmp_path):
    seen = {}

    def capture(path, epochs, series, **kwargs):
        seen.update(series=series, **kwargs)
        return path

    monkeypatch.setattr(plots, "plot_curves", capture)
    plots.plot_losses(tmp_path / "l.png", [1, 2], [1.0, 0.5], [1.1, 0.6], l2=0.5)
    assert list(seen["series"]) == list(plots.loss_labels(0.5)) and seen["log_y"] is True
