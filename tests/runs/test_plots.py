"""A run's figures are readable: every point drawn, integer epoch ticks, the best epoch marked."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from netspec.runs.plots import curves_figure, plot_run
from netspec.training.history import EpochRecord


def record(epoch: int, val_acc: float, test: bool = False) -> EpochRecord:
    return EpochRecord(epoch, 1.0 / epoch, 0.3 + 0.01 * epoch, 1.2, val_acc, 1e-3, 2.0, 100.0,
                       test_loss=1.1 if test else None, test_acc=0.4 if test else None)


def test_a_one_epoch_run_is_a_visible_point_on_an_integer_tick() -> None:
    fig = curves_figure({"train": ([1], [0.37]), "validation": ([1], [0.41])}, "accuracy", "t", best_epoch=1)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if line.get_label() in ("train", "validation")]
    assert [line.get_marker() for line in curves] == ["o", "o"]
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks == [1.0]
    assert any(line.get_label() == "best validation (epoch 1)" for line in ax.lines)


def test_ticks_are_whole_epochs_and_nan_epochs_are_left_out() -> None:
    epochs = list(range(1, 8))
    fig = curves_figure({"validation": (epochs, [0.1, 0.2, 0.3, math.nan, 0.5, 0.6, 0.7])}, "accuracy", "t")
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 5, 6, 7]
    assert all(math.isfinite(v) for v in ax.get_ylim())


def test_plot_run_marks_the_epoch_of_the_final_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import netspec.runs.plots as plots

    seen: list[int | None] = []
    real = plots.curves_figure
    monkeypatch.setattr(plots, "curves_figure", lambda *a, **k: seen.append(k.get("best_epoch")) or real(*a, **k))
    history = [record(1, 0.4, test=True), record(2, 0.5, test=True), record(3, 0.45)]
    plot_run(history, tmp_path, "run")
    assert seen == [2, 2]
    assert (tmp_path / "acc.png").stat().st_size > 1000 and (tmp_path / "loss.png").stat().st_size > 1000


def test_a_run_without_validation_draws_train_against_test_and_marks_no_best(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """data.val_size 0: every epoch is tested; the figures show the test curve, no empty 'validation'
    entry and no 'best validation' mark."""
    import netspec.runs.plots as plots

    figures: list = []
    real = plots.curves_figure
    monkeypatch.setattr(plots, "curves_figure", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    history = [EpochRecord(e, 1.0 / e, 0.3 + 0.1 * e, math.nan, math.nan, 1e-3, 2.0, 100.0,
                           test_loss=2.0 - 0.2 * e, test_acc=0.2 + 0.1 * e) for e in (1, 2, 3)]
    plot_run(history, tmp_path, "run")
    acc = figures[0].axes[0]
    labels = [line.get_label() for line in acc.lines]
    assert labels == ["train", "test"]
    test_line = acc.lines[1]
    assert list(test_line.get_xdata()) == [1, 2, 3]
    assert list(test_line.get_ydata()) == pytest.approx([0.3, 0.4, 0.5])
    assert [line.get_label() for line in figures[1].axes[0].lines] == ["train", "test"]


def test_the_epoch_line_of_a_run_without_validation_has_no_nan() -> None:
    line = EpochRecord(2, 1.5, 0.4, math.nan, math.nan, 1e-3, 2.0, 100.0, test_loss=1.25, test_acc=0.5).line(3)
    assert "nan" not in line and "val" not in line
    assert line.startswith("epoch 2/3  train loss 1.5000 acc 0.4000  test loss 1.2500 acc 0.5000")
    with_val = EpochRecord(2, 1.5, 0.4, 1.0, 0.45, 1e-3, 2.0, 100.0).line(3)
    assert "  val loss 1.0000 acc 0.4500  " in with_val
