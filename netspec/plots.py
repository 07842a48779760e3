"""A run's figures: accuracy and loss curves per epoch, train against validation, as PNG files."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .trainer import EpochRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    return plt


def _integer_locator():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str,
                path: Path, ylim: tuple[float, float] | None = None) -> None:
    """One line per named (epochs, values) series, labelled axes and legend, saved as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=1.6)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_run(history: list[EpochRecord], directory: Path, title: str) -> None:
    """acc.png and loss.png: train against validation per epoch, as in the lab report."""
    epochs = [r.epoch for r in history]
    for key, ylabel in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
        series = {split: (epochs, [getattr(r, f"{split}_{key}") for r in history]) for split in ("train", "val")}
        series = {("train" if k == "train" else "validation"): v for k, v in series.items()}
        plot_curves(series, ylabel, f"{title}: {ylabel}", directory / f"{key}.png")
