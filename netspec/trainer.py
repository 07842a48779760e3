"""The common training loop: the lab's protocol, for any backend, through the protocol of
netspec/backend.py only (no torch or jax here).

Per epoch: one optimizer step per consecutive slice of a seeded numpy order of the training split
(first epoch in file order, then reshuffled in place after every epoch, as the lab's framework),
train loss/accuracy as the mean over the epoch's batches, validation loss/accuracy, and the test set
evaluated each time validation accuracy reaches (>=) its best so far: that is the "final test".
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol

import numpy as np

from .backend import Model
from .errors import SpecError
from .experiment import Experiment
from .progress import ProgressLine

# How often the progress bar reads metrics back during an epoch when it is shown: each read is one
# host synchronisation, so it happens per chunk of steps, never per step.
PROGRESS_UPDATES_PER_EPOCH = 20


class Splits(Protocol):
    """What the trainer needs of a dataset (netspec.data.Dataset has it)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    """Wall time of the epoch's training steps (evaluation excluded)."""
    images_per_s: float
    test_loss: Optional[float] = None
    """Set on the epochs where validation accuracy reached its best so far."""
    test_acc: Optional[float] = None

    def line(self, epochs: int) -> str:
        test = f"  test {self.test_loss:.4f}/{self.test_acc:.4f}" if self.test_acc is not None else ""
        return (f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  train {self.train_loss:.4f}/{self.train_acc:.4f}"
                f"  val {self.val_loss:.4f}/{self.val_acc:.4f}{test}  {self.seconds:.1f}s {self.images_per_s:,.0f} img/s")


SUMMARY_FIELDS = {
    "train_loss": "training loss",
    "train_acc": "training accuracy",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "best_val_acc": "best validation accuracy",
    "test_loss": "final test loss",
    "test_acc": "final test accuracy",
}
"""The seven figures of each run's table in the lab report, in its order."""


def summarize(history: list[EpochRecord]) -> dict[str, Any]:
    """The report's seven figures (last epoch's train/val, best val, test at the last best val),
    plus the best epoch and the epoch times."""
    last = history[-1]
    best = max(range(len(history)), key=lambda i: (history[i].val_acc, i))  # the last of equal bests
    times = [r.seconds for r in history]
    return {
        "train_loss": last.train_loss, "train_acc": last.train_acc,
        "val_loss": last.val_loss, "val_acc": last.val_acc,
        "best_val_acc": history[best].val_acc,
        "test_loss": history[best].test_loss, "test_acc": history[best].test_acc,
        "best_epoch": history[best].epoch, "epochs": len(history),
        "epoch_seconds": times, "median_epoch_seconds": float(np.median(times)),
    }


def batch_index_matrix(order: np.ndarray, batch_size: int) -> np.ndarray:
    """Consecutive slices of `order` as rows of a (steps, batch_size) matrix; the last partial batch
    is dropped (the lab's protocol)."""
    steps = len(order) // batch_size
    return np.ascontiguousarray(order[: steps * batch_size].reshape(steps, batch_size))


def epoch_orders(n: int, seed: int) -> Iterator[np.ndarray]:
    """Training order of each epoch: file order first, then one in-place numpy shuffle (seeded once)
    after every epoch, as the lab's framework did. Identical for every backend."""
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    while True:
        yield order.copy()
        rng.shuffle(order)


def shape_inputs(x: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Images (N, C, H, W) as the network's input (N, *input_shape), e.g. flat (N, 3072) for an MLP."""
    if math.prod(x.shape[1:]) != math.prod(input_shape):
        raise SpecError(f"network input_shape {tuple(input_shape)} does not fit the {what} images of shape "
                        f"{tuple(x.shape[1:])}; set network.input_shape to {list(x.shape[1:])} or [{math.prod(x.shape[1:])}]")
    return np.ascontiguousarray(x.reshape(len(x), *input_shape), dtype=np.float32)


class LrSchedule:
    """The lab framework's rule: lr *= decay when an epoch's training loss exceeds the maximum of the
    three epochs before it (decay 1.0 turns it off)."""

    def __init__(self, lr: float, decay: float) -> None:
        self.lr, self.decay, self.losses = lr, decay, []

    def after_epoch(self, train_loss: float) -> None:
        if len(self.losses) >= 3 and train_loss > max(self.losses[-3:]):
            self.lr *= self.decay
        self.losses.append(train_loss)


def fit(model: Model, experiment: Experiment, data: Splits,
        on_epoch: Callable[[EpochRecord, bool], None] | None = None,
        log: Callable[[str], None] = print, progress: bool | None = None) -> list[EpochRecord]:
    """Train `model` (compiled from experiment.network) on `data`; return the per-epoch history.

    on_epoch(record, is_best) runs after each epoch (the caller saves files there).
    """
    cfg = experiment.train
    shape = tuple(experiment.network.input_shape)
    splits = {name: model.to_device(shape_inputs(getattr(data, f"{name}_x"), shape, name), getattr(data, f"{name}_y"))
              for name in ("train", "val", "test")}
    n_train = splits["train"].num_examples
    if n_train < cfg.batch_size:
        raise SpecError(f"train.batch_size {cfg.batch_size} is larger than the training split ({n_train} images); lower it")
    model.setup_optimizer(cfg)
    schedule = LrSchedule(cfg.lr, cfg.lr_decay)
    orders = epoch_orders(n_train, cfg.shuffle_seed)
    history: list[EpochRecord] = []
    best_val = -1.0
    for epoch in range(1, cfg.epochs + 1):
        batches = batch_index_matrix(next(orders), cfg.batch_size)
        bar = ProgressLine(len(batches), f"epoch {epoch}/{cfg.epochs}", enabled=progress)
        chunks = np.array_split(batches, min(PROGRESS_UPDATES_PER_EPOCH, len(batches))) if bar.enabled else [batches]
        loss_sum = acc_sum = 0.0
        done = 0
        start = time.perf_counter()
        for chunk in chunks:
            chunk_loss, chunk_acc = model.train_steps(splits["train"], chunk, schedule.lr)
            loss_sum, acc_sum, done = loss_sum + chunk_loss, acc_sum + chunk_acc, done + len(chunk)
            rate = done * cfg.batch_size / (time.perf_counter() - start)
            bar.update(done, f"loss {loss_sum / done:.4f} acc {acc_sum / done:.4f} {rate:,.0f} img/s")
        seconds = time.perf_counter() - start
        bar.close()
        val_loss, val_acc = model.evaluate(splits["val"], cfg.eval_batch_size) if splits["val"].num_examples else (math.nan, math.nan)
        record = EpochRecord(epoch, loss_sum / done, acc_sum / done, val_loss, val_acc, schedule.lr, seconds,
                             done * cfg.batch_size / seconds)
        is_best = not val_acc < best_val  # >=, and a split without validation counts every epoch as best
        if is_best:
            best_val = val_acc
            record.test_loss, record.test_acc = model.evaluate(splits["test"], cfg.eval_batch_size)
        history.append(record)
        log(record.line(cfg.epochs))
        if on_epoch:
            on_epoch(record, is_best)
        schedule.after_epoch(record.train_loss)
    return history


def record_from_dict(data: dict[str, Any]) -> EpochRecord:
    return EpochRecord(**{f.name: data.get(f.name) for f in dataclasses.fields(EpochRecord)})
