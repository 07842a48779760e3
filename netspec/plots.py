"""A run's figures: accuracy and loss curves per epoch, train against validation, as PNG files."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .trainer import EpochRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    return plt


def _integer_locator():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True, min_n_ticks=1)  # one epoch: a tick at 1, not at 0.5, 0.6, ...


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str,
                path: Path, ylim: tuple[float, float] | None = None, best_epoch: int | None = None) -> None:
    """One line per named (epochs, values) series, a marker on every point (a 1-epoch run is one
    visible point), integer epoch ticks, the best epoch marked when given; saved as PNG.
    Non-finite values (a diverged epoch) are left out rather than breaking the axis limits."""
    plt = _pyplot()
    fig = curves_figure(series, ylabel, title, ylim=ylim, best_epoch=best_epoch)
    fig.savefig(path)
    plt.close(fig)


def curves_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str,
                  ylim: tuple[float, float] | None = None, best_epoch: int | None = None) -> Any:
    """The matplotlib figure of `plot_curves` (tests look at its lines and ticks)."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2), dpi=110)
    epochs: set[float] = set()
    for label, (x, y) in series.items():
        points = [(a, b) for a, b in zip(x, y) if b is not None and math.isfinite(b)]
        epochs.update(a for a, _ in points)
        ax.plot([a for a, _ in points], [b for _, b in points], label=label, linewidth=1.6, marker="o", markersize=3.5)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.35", linestyle="--", linewidth=1.0, label=f"best validation (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    if epochs:  # half an epoch of margin: a single epoch gets a tick at its number, not at 0.945...1.050
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim and all(math.isfinite(v) for v in ylim):
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_run(history: list[EpochRecord], directory: Path, title: str) -> None:
    """acc.png and loss.png: train against validation per epoch, as in the lab report, with the
    epoch of the final test (the last best validation accuracy) marked."""
    epochs = [r.epoch for r in history]
    tested = [r.epoch for r in history if r.test_acc is not None]
    for key, ylabel in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
        series = {name: (epochs, [getattr(r, f"{split}_{key}") for r in history])
                  for name, split in (("train", "train"), ("validation", "val"))}
        plot_curves(series, ylabel, f"{title}: {ylabel}", directory / f"{key}.png", best_epoch=tested[-1] if tested else None)
