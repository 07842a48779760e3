"""lr.png: the learning rate of every step of a run, as the schedule gave it (netspec.training.schedules)."""
from __future__ import annotations

from typing import Any

import numpy as np

from netspec.spec.experiment import TrainConfig
from netspec.runs.plots import Switch, figure_png, pyplot
from netspec.training.trainer import EpochRecord
from netspec.training.schedules import learning_rates

LR_PLOT = "lr.png"


def run_lrs(history: list[EpochRecord], config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(epoch position of every step run, its lr): step s of epoch e at e - 1 + s / steps_per_epoch. The
    lab schedule's lr of each epoch is the history's (it depends on the losses)."""
    positions, lrs = [], []
    for record in history:
        first = (record.epoch - 1) * steps_per_epoch
        steps = np.arange(first, first + steps_per_epoch)
        positions.append(steps / steps_per_epoch)
        lrs.append(learning_rates(steps, steps_per_epoch, config, lr=record.lr if config.schedule.type == "lab" else None))
    empty = np.zeros(0)
    return (np.concatenate(positions), np.concatenate(lrs)) if history else (empty, empty)


def lr_figure(history: list[EpochRecord], config: TrainConfig, steps_per_epoch: int, title: str,
              switch: Switch | None = None) -> Any:
    """The matplotlib figure of lr.png (lr_png renders it)."""
    plt = pyplot()
    x, y = run_lrs(history, config, steps_per_epoch)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.plot(x, y, linewidth=1.4)
    if switch is not None:  # steps of epoch e lie in [e - 1, e): the switch is at the source's last epoch
        ax.axvline(switch.after_epoch, color="tab:red", linestyle=":", linewidth=1.2,
                   label=f"{switch.before} -> {switch.after} (after epoch {switch.after_epoch})")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{title}: {config.schedule.type} schedule, {config.optimizer.type}")
    # A schedule spans decades (warmup, cosine, step decay), so the lr axis is logarithmic when every
    # plotted lr is positive. One that reaches 0 (a piecewise-linear schedule ending at 0) keeps a
    # linear axis from 0: a log axis cannot show 0, and 'symlog' would need a linthresh that either
    # hides the schedule's small lrs in its linear band or stretches the last steps over decades.
    if y.size and bool(np.all(y > 0)):
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def lr_png(history: list[EpochRecord], config: TrainConfig, steps_per_epoch: int, title: str,
           switch: Switch | None = None) -> bytes:
    """The figure as PNG bytes (the run folder writes them atomically)."""
    return figure_png(lr_figure(history, config, steps_per_epoch, title, switch))
