"""A run's figures: accuracy and loss curves per epoch, train against validation, as PNG files."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from netspec.io import write_bytes_atomic
from netspec.training.history import EpochRecord


class _Figures:
    """The two pyplot calls netspec makes (`subplots`, `close`), on matplotlib's object API: a Figure with
    its own Agg canvas. No pyplot global state and no matplotlib.use("Agg"), so a user's own backend (a
    notebook's inline one, a GUI) is never switched by a run, and a figure is freed with its last reference."""

    @staticmethod
    def subplots(*args: Any, figsize: tuple[float, float] | None = None, dpi: float | None = None,
                 **kwargs: Any) -> tuple[Any, Any]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)  # renders to memory (PNG bytes); needs no display
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: the figure was never registered with pyplot, so it goes with its last reference."""


def pyplot() -> _Figures:  # matplotlib imported on first use (it is slow to import)
    return _Figures()


@dataclass(frozen=True)
class Switch:
    """Where a run continued from another backend's checkpoint (--from) changed backend."""

    after_epoch: int
    before: str
    after: str

    def mark(self, ax: Any) -> None:
        """A dotted line between the last epoch of `before` and the first of `after`, in the legend."""
        ax.axvline(self.after_epoch + 0.5, color="tab:red", linestyle=":", linewidth=1.2,
                   label=f"{self.before} -> {self.after} (after epoch {self.after_epoch})")


def _integer_locator():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True, min_n_ticks=1)  # one epoch: a tick at 1, not at 0.5, 0.6, ...


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str,
                path: Path, ylim: tuple[float, float] | None = None, best_epoch: int | None = None) -> None:
    """One line per named (epochs, values) series, a marker on every point (a 1-epoch run is one
    visible point), integer epoch ticks, the best epoch marked when given; saved as PNG.
    Non-finite values (a diverged epoch) are left out rather than breaking the axis limits."""
    save_figure(curves_figure(series, ylabel, title, ylim=ylim, best_epoch=best_epoch), path)


def figure_png(fig: Any) -> bytes:
    """A figure rendered into memory as PNG bytes, and closed: every figure netspec writes goes to disk
    this way, through the atomic writer (savefig in place would write through a link planted at the name,
    and a kill would leave half an image)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        pyplot().close(fig)
    return buffer.getvalue()


def save_figure(fig: Any, path: Path) -> None:
    """A figure as PNG through the atomic writer (rendered into memory, then one rename)."""
    write_bytes_atomic(Path(path), figure_png(fig))


def curves_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], ylabel: str, title: str,
                  ylim: tuple[float, float] | None = None, best_epoch: int | None = None,
                  switch: Switch | None = None) -> Any:
    """The matplotlib figure of `plot_curves` (tests look at its lines and ticks); `switch` marked when given."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2), dpi=110)
    epochs: set[float] = set()
    for label, (x, y) in series.items():
        points = [(a, b) for a, b in zip(x, y) if b is not None and math.isfinite(b)]
        epochs.update(a for a, _ in points)
        ax.plot([a for a, _ in points], [b for _, b in points], label=label, linewidth=1.6, marker="o", markersize=3.5)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.35", linestyle="--", linewidth=1.0, label=f"best validation (epoch {best_epoch})")
    if switch is not None:
        switch.mark(ax)
    ax.set_xlabel("epoch")
    if epochs:  # half an epoch of margin: a single epoch gets a tick at its number, not at 0.945...1.050
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim and all(math.isfinite(v) for v in ylim):
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn (no validation split): no empty legend, no warning
        ax.legend()
    fig.tight_layout()
    return fig


def plot_run(history: list[EpochRecord], directory: Path, title: str, switch: Switch | None = None) -> None:
    """acc.png and loss.png: train against validation per epoch, as in the lab report, with the
    epoch of the final test (the last best validation accuracy) marked. A run without a validation
    split (data.val_size 0) tests every epoch: its figures draw train against test, with no mark."""
    epochs = [r.epoch for r in history]
    tested = [r.epoch for r in history if r.test_acc is not None]
    validated = any(math.isfinite(r.val_acc) for r in history)
    against = ("validation", "val") if validated else ("test", "test")
    for key, ylabel in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
        series = {name: (epochs, [getattr(r, f"{split}_{key}") for r in history]) for name, split in (("train", "train"), against)}
        best = tested[-1] if tested and validated else None
        save_figure(curves_figure(series, ylabel, f"{title}: {ylabel}", best_epoch=best, switch=switch), directory / f"{key}.png")


SettingSeries = dict[str, list[tuple[Any, Sequence[float]]]]
"""backend -> [(setting, values over seeds)], in the sweep's order."""


def plot_result_vs_setting(panels: dict[str, SettingSeries], xlabel: str, title: str, path: Path,
                           categorical: bool) -> None:
    """One panel per figure (e.g. final test accuracy, best validation accuracy) against the swept
    setting: per backend a line through the means with error bars of one standard deviation over
    seeds, and every seed's value as a dot. Categorical settings (variants, labels) are evenly spaced."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), dpi=110, squeeze=False)
    for ax, (ylabel, by_backend) in zip(axes[0], panels.items()):
        for k, (backend, points) in enumerate(by_backend.items()):
            _setting_line(ax, backend, points, categorical, offset=0.06 * (k - (len(by_backend) - 1) / 2))
        _setting_axis(ax, xlabel, ylabel, by_backend, categorical)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _setting_line(ax: Any, backend: str, points: list[tuple[Any, Sequence[float]]], categorical: bool,
                  offset: float) -> None:
    import numpy as np

    # Categorical positions are shifted a little per backend so their dots and bars do not hide each other.
    xs = [i + offset if categorical else x for i, (x, _) in enumerate(points)]
    kept = [(x, np.asarray(v, dtype=float)) for x, (_, v) in zip(xs, points) if len(v)]
    if not kept:
        return
    means = [v.mean() for _, v in kept]
    stds = [v.std(ddof=1) if v.size > 1 else 0.0 for _, v in kept]
    # Categorical points (ablations, variants) have no order between them: no line joins them.
    line = ax.errorbar([x for x, _ in kept], means, yerr=stds, marker="o", capsize=4, linewidth=1.5, label=backend,
                       linestyle="none" if categorical else "-")
    for x, v in kept:
        ax.scatter([x] * v.size, v, s=14, alpha=0.5, color=line[0].get_color(), zorder=3)


def _setting_axis(ax: Any, xlabel: str, ylabel: str, by_backend: SettingSeries, categorical: bool) -> None:
    settings = next(iter(by_backend.values()), [])
    if categorical:
        ax.set_xticks(range(len(settings)), [str(x) for x, _ in settings], rotation=15)
        ax.set_xlim(-0.5, len(settings) - 0.5)
    elif settings and all(isinstance(x, (int, float)) and x > 0 for x, _ in settings) and \
            max(x for x, _ in settings) / min(x for x, _ in settings) >= 20:
        ax.set_xscale("log")  # learning rates and such span decades
    ax.ticklabel_format(axis="y", useOffset=False)  # accuracies as they are, not as offsets from 0.5048
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn (no validation split): no empty legend, no warning
        ax.legend()
