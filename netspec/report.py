"""Tables and figures: a run's accuracy and loss curves, markdown tables of the seven figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .trainer import SUMMARY_FIELDS, EpochRecord


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


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """The seven figures (rows) of one or more runs (columns), as the lab report's tables."""
    header = ["result", *columns]
    rows = [[label, *(m.get(key) for m in columns.values())] for key, label in SUMMARY_FIELDS.items()]
    return markdown_table(header, rows)
