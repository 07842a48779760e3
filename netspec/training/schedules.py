"""The learning rate of every optimizer step: one pure numpy function of the step (docs/design.md).

`learning_rates(steps, steps_per_epoch, config)` gives the lr of each global step (0-based: step s is
the (s % S)-th step of epoch s // S + 1, S = steps_per_epoch), so a resumed run finds its place from
the epochs done alone, and the backends receive the values per step (a new lr never recompiles).

The 'lab' schedule is not a function of the step: it decays the lr on the training losses (the
LabLrRule below keeps it; the trainer carries its lr in its state). Here it is a constant factor 1 of
the lr it is handed.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from netspec.spec.experiment import TrainConfig


def learning_rates(steps: np.ndarray, steps_per_epoch: int, config: TrainConfig, lr: float | None = None) -> np.ndarray:
    """The lr of each global step in `steps` (float64), for a run of config.epochs epochs of
    `steps_per_epoch` steps; `lr` replaces config.lr as the peak (the lab schedule's decayed lr)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    base = config.lr if lr is None else lr
    return base * lr_factors(np.asarray(steps, np.int64), steps_per_epoch, config)


class LabLrRule:
    """The lab framework's rule: lr *= decay when an epoch's training loss exceeds the maximum of the
    three epochs before it (decay 1.0 turns it off). Its state is the current lr and the past losses
    (the history's training losses, so a resumed run rebuilds it from TrainerState). The per-step lr of
    every other schedule is `learning_rates`; this rule hands it the lab schedule's lr."""

    def __init__(self, lr: float, decay: float, losses: Optional[list[float]] = None) -> None:
        self.lr, self.decay, self.losses = lr, decay, list(losses or [])

    def after_epoch(self, train_loss: float) -> None:
        if len(self.losses) >= 3 and train_loss > max(self.losses[-3:]):
            self.lr *= self.decay
        self.losses.append(train_loss)


def epoch_lrs(config: TrainConfig, epoch: int, steps_per_epoch: int, lab_lr: float) -> np.ndarray:
    """The lr of every step of `epoch` (1-based): the trainer hands these to the model, and lr.png draws
    them again from the history. `lab_lr` is the lab rule's lr of the epoch (the history's `lr` of a lab
    run); every other schedule is a function of the step and config.lr alone."""
    first = (epoch - 1) * steps_per_epoch
    return learning_rates(np.arange(first, first + steps_per_epoch), steps_per_epoch, config,
                          lr=lab_lr if config.schedule.type == "lab" else None)


def schedule_spans_the_run(config: TrainConfig) -> bool:
    """Whether the lr of a step depends on the run's length (train.epochs): then a shorter run is not
    a prefix of a longer one."""
    return config.schedule.type in ("onecycle", "cosine")


def schedule_beyond_the_run(config: TrainConfig) -> str | None:
    """One line when the schedule names epochs past train.epochs (a recipe run with a smaller
    `--epochs`), saying what the run will do instead of what the recipe meant; None when it fits."""
    schedule, epochs = config.schedule, config.epochs
    if schedule.type == "piecewise_linear":
        last = schedule.knots[-1][0]
        if last > epochs:
            held = float(np.interp(epochs, [k[0] for k in schedule.knots], [k[1] for k in schedule.knots]))
            return (f"train.schedule: its knots reach epoch {last:g} but the run has {epochs} epochs: it stops at "
                    f"factor {held:g} of train.lr ({held * config.lr:g}) and never reaches the last knot; "
                    f"rescale train.schedule.knots to {epochs} epochs to keep the recipe's shape")
    if schedule.type == "step" and schedule.step_epochs >= epochs:
        return (f"train.schedule: step_epochs {schedule.step_epochs} is not below the run's {epochs} epochs, "
                f"so the lr never steps; lower train.schedule.step_epochs")
    if schedule.type == "cosine" and schedule.warmup_epochs >= epochs:
        return (f"train.schedule: warmup_epochs {schedule.warmup_epochs:g} is not below the run's {epochs} epochs, "
                f"so the lr never leaves its warm-up; lower train.schedule.warmup_epochs")
    return None


def lr_factors(steps: np.ndarray, steps_per_epoch: int, config: TrainConfig) -> np.ndarray:
    """The schedule's factor of the lr at each global step (float64)."""
    schedule = config.schedule
    s = np.asarray(steps, np.float64)
    total = config.epochs * steps_per_epoch
    kind = schedule.type
    if kind in ("lab", "constant"):
        return np.ones_like(s)
    if kind == "piecewise_linear":
        epochs, values = zip(*schedule.knots)
        return np.interp(s / steps_per_epoch, np.asarray(epochs, np.float64), np.asarray(values, np.float64))
    if kind == "step":
        return schedule.gamma ** np.floor_divide(np.floor_divide(s, steps_per_epoch), schedule.step_epochs)
    if kind == "cosine":
        return _cosine(s, total, schedule.warmup_epochs * steps_per_epoch, schedule.min_factor)
    if kind == "onecycle":
        return _one_cycle(s, total, schedule.pct_start, schedule.div_factor, schedule.final_div_factor, schedule.anneal)
    raise ValueError(f"unknown schedule {kind!r}")


def _cosine(s: np.ndarray, total: int, warmup: float, min_factor: float) -> np.ndarray:
    """Linear from 0 to 1 over the first `warmup` steps (step s at (s + 1) / warmup, so the first step
    is not wasted at 0), then a half cosine from 1 at step `warmup` down to min_factor at the last step."""
    warm = np.minimum((s + 1) / warmup, 1.0) if warmup > 0 else np.ones_like(s)
    span = max(total - 1 - math.ceil(warmup), 1)
    progress = np.clip((s - math.ceil(warmup)) / span, 0.0, 1.0)
    cosine = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + np.cos(np.pi * progress))
    return np.where(s < warmup, warm, cosine)


def _one_cycle(s: np.ndarray, total: int, pct_start: float, div: float, final_div: float, anneal: str) -> np.ndarray:
    """torch.optim.lr_scheduler.OneCycleLR (two phases) divided by max_lr: the lr of step s is that
    scheduler's lr after s scheduler steps."""
    initial, low = 1.0 / div, 1.0 / div / final_div
    end_up = float(pct_start * total) - 1
    end_down = float(total - 1)

    def ramp(start: float, end: float, pct: np.ndarray) -> np.ndarray:
        if anneal == "cos":
            return end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1)
        return (end - start) * pct + start

    up = ramp(initial, 1.0, s / end_up) if end_up > 0 else np.full_like(s, 1.0)
    down = ramp(1.0, low, (s - end_up) / (end_down - end_up))
    return np.where(s <= end_up, up, down)
