"""lr.png: the learning rate of every step of a run, as the schedule gave it (netspec.training.schedules)."""
from __future__ import annotations

from typing import Any

import numpy as np

from netspec.spec.experiment import TrainConfig
from netspec.runs.plots import Switch, figure_png, pyplot
from netspec.training.history import EpochRecord
from netspec.training.schedules import epoch_lrs

LR_PLOT = "lr.png"


def run_lrs(history: list[EpochRecord], config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(epoch position of every step run, its lr): step s of epoch e at e - 1 + s / steps_per_epoch, its lr
    the one the trainer handed the model (schedules.epoch_lrs, with the lab rule's lr of each epoch read
    from the history: it depends on the losses)."""
    if not history:
        return np.zeros(0), np.zeros(0)
    positions = [np.arange((r.epoch - 1) * steps_per_epoch, r.epoch * steps_per_epoch) / steps_per_epoch for r in history]
    lrs = [epoch_lrs(config, r.epoch, steps_per_epoch, r.lr) for r in history]
    return np.concatenate(positions), np.concatenate(lrs)


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
