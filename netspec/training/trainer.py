"""The common training loop: the lab's protocol, for any backend, through the protocol of
netspec/protocol/backend.py only (no torch or jax here).

Per epoch: one optimizer step per consecutive slice of a seeded numpy order of the training split
(first epoch in file order unless train.shuffle_first_epoch, then reshuffled in place after every
epoch, as the lab's framework),
train loss/accuracy as the mean over the epoch's batches, validation loss/accuracy, and the test set
evaluated each time validation accuracy reaches (>=) its best so far: that is the "final test".

Everything the loop carries from one epoch to the next is one value, `TrainerState` (history, best
so far, lr, the shuffle's order and RNG, the model's training state, the best weights): `fit` starts
from one and hands one to its caller after every epoch, so a run checkpointed after epoch k and
resumed goes on bit-identically. Before any training, the labels and the class count are checked
against the network's output; a non-finite training loss stops the run (`DivergedError`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol

import numpy as np

from netspec.protocol import augment
from netspec.protocol.backend import Model
from netspec.errors import DataError, DivergedError, SpecError
from netspec.data.network_fit import check_network_meets_data
from netspec.spec.experiment import Experiment, TrainConfig
from netspec.spec.network import Network
from netspec.spec.params import Weights
from netspec.progress import ProgressLine
from netspec.training.history import EpochRecord
from netspec.training.schedules import LabLrRule, epoch_lrs

# How often the progress bar reads metrics back during an epoch when it is shown: each read is one
# host synchronisation, so it happens per chunk of steps, never per step.
PROGRESS_UPDATES_PER_EPOCH = 20
LONG_EPOCH_S = 120.0
"""A first epoch projected longer than this is announced (how long an epoch and the run will take),
so a report-sized CNN started on a CPU says so in its first seconds rather than after 15 minutes."""
PROJECTION_STEPS = 3
"""Steps timed for that projection, after as many warm-up steps (the first call may compile)."""


class Splits(Protocol):
    """What the trainer needs of a dataset (netspec.data.Dataset has it)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def batch_index_matrix(order: np.ndarray, batch_size: int) -> np.ndarray:
    """Consecutive slices of `order` as rows of a (steps, batch_size) matrix; the last partial batch
    is dropped (the lab's protocol)."""
    steps = len(order) // batch_size
    return np.ascontiguousarray(order[: steps * batch_size].reshape(steps, batch_size))


class EpochOrder:
    """Training order of each epoch: file order first, then one in-place numpy shuffle (seeded once)
    after every epoch, as the lab's framework did. Identical for every backend. Its state (the last
    epoch's order and the RNG's) is part of TrainerState, so a resumed run draws the same orders."""

    def __init__(self, n: int, seed: int, shuffle_first: bool = False) -> None:
        self.rng = np.random.RandomState(seed)
        self.order = np.arange(n)
        self.started = shuffle_first  # True: epoch 1 is shuffled too (train.shuffle_first_epoch)

    def next(self) -> np.ndarray:
        if self.started:
            self.rng.shuffle(self.order)
        self.started = True
        return self.order.copy()

    def restore(self, order: np.ndarray, rng_state: dict[str, Any]) -> None:
        """Go on after an epoch whose order was `order`, with the RNG as it was then."""
        if order.shape != self.order.shape:
            raise ValueError(f"a saved order of {len(order)} examples for a training split of {len(self.order)}")
        self.order, self.started = np.array(order, dtype=self.order.dtype), True
        self.rng.set_state(rng_state)


def epoch_orders(n: int, seed: int, shuffle_first: bool = False) -> Iterator[np.ndarray]:
    """The orders of EpochOrder, one per epoch (for code that only reads them)."""
    orders = EpochOrder(n, seed, shuffle_first)
    while True:
        yield orders.next()


def shape_inputs(x: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """Images (N, C, H, W) as the network's input (N, *input_shape), e.g. flat (N, 3072) for an MLP."""
    if math.prod(x.shape[1:]) != math.prod(input_shape):
        raise SpecError(f"network input_shape {tuple(input_shape)} does not fit the {what} images of shape "
                        f"{tuple(x.shape[1:])}; set network.input_shape to {list(x.shape[1:])} or [{math.prod(x.shape[1:])}]")
    return np.ascontiguousarray(x.reshape(len(x), *input_shape), dtype=np.float32)


# ---- the trainer's state ---------------------------------------------------------------------------

@dataclass
class TrainerState:
    """Everything `fit` carries from one epoch to the next; after epoch `epoch` it is a checkpoint."""

    history: list[EpochRecord]
    best_val_acc: float
    """Best validation accuracy so far (-1 before the first epoch; NaN without a validation split)."""
    lr: float
    """The schedule's lr for the next epoch."""
    order: Optional[np.ndarray]
    """The last epoch's training order (None before the first epoch)."""
    shuffle_rng: Optional[dict[str, Any]]
    """numpy RandomState.get_state(legacy=False) after that order was drawn."""
    model: dict[str, np.ndarray]
    """Model.get_training_state(): weights, Adam, dropout RNG."""
    best_weights: Optional[Weights]
    """Canonical weights after the last epoch whose validation accuracy reached the best."""

    @property
    def epoch(self) -> int:
        """Epochs done."""
        return len(self.history)


# ---- checks before any training ----------------------------------------------------------------------

def check_classes(network: Network, data: Splits) -> None:
    """The network's output is one score per class, as many as the data has classes, and every label is
    a class index: one line naming what is wrong, before any training (a bad label would otherwise stop
    torch with an IndexError and let jax train on NaN)."""
    names = getattr(data, "classes", None)
    if names is not None:  # a Dataset: its images' shape and class names
        origin = str(getattr(data, "source", "the data")).split(";")[0]  # where from, not the split and scaling
        check_network_meets_data(network, np.shape(data.train_x)[1:], names, origin)
    out = tuple(network.output_shape)
    if len(out) != 1:
        raise SpecError(f"network: its output has shape {out}, not one score per class; end it with Flatten "
                        f"and Linear(out_features=<number of classes>)")
    classes = out[0]
    for split in ("train", "val", "test"):
        _check_labels(np.asarray(getattr(data, f"{split}_y")), classes, split)


def _check_labels(y: np.ndarray, classes: int, split: str) -> None:
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{split} labels are {y.dtype}, not integers; class indices in [0, {classes}) are needed")
    bad = y[(y < 0) | (y >= classes)] if y.size else y
    if bad.size:
        raise DataError(f"{split} labels: {bad.size} outside [0, {classes}) (e.g. {bad[0]}), but the network has "
                        f"{classes} outputs; fix the labels or the last Linear's out_features")


# ---- the loop ---------------------------------------------------------------------------------------------

def fit(model: Model, experiment: Experiment, data: Splits,
        on_epoch: Callable[[TrainerState, bool], None] | None = None,
        log: Callable[[str], None] = print, progress: bool | None = None,
        state: Optional[TrainerState] = None, timings: Optional[dict[str, float]] = None) -> list[EpochRecord]:
    """Train `model` (compiled from experiment.network) on `data`; return the per-epoch history.

    state: go on from a TrainerState (a checkpoint) instead of epoch 0: bit-identical to never having
    stopped. on_epoch(state, is_best) runs after each epoch with the state after it (the caller saves
    files and the checkpoint there). A non-finite training loss raises DivergedError. timings: a dict
    that gets 'compile_seconds', the model's warmup (compiling its step) before the first epoch.
    """
    cfg = experiment.train
    check_classes(experiment.network, data)
    shape = tuple(experiment.network.input_shape)
    splits = {name: model.to_device(shape_inputs(getattr(data, f"{name}_x"), shape, name), getattr(data, f"{name}_y"))
              for name in ("train", "val", "test")}
    n_train = splits["train"].num_examples
    if n_train < cfg.batch_size:
        raise SpecError(f"train.batch_size {cfg.batch_size} is larger than the training split ({n_train} images); lower it")
    model.setup_optimizer(cfg)
    state = state or TrainerState([], -1.0, cfg.lr, None, None, {}, None)
    if state.epoch > cfg.epochs:
        raise ValueError(f"a state after epoch {state.epoch} for a run of {cfg.epochs} epochs")
    orders = EpochOrder(n_train, cfg.shuffle_seed, cfg.shuffle_first_epoch)
    if state.order is not None and state.shuffle_rng is not None:
        orders.restore(state.order, state.shuffle_rng)
        model.set_training_state(state.model)
    seconds = _warm_up(model, splits["train"], cfg.batch_size, n_train // cfg.batch_size, progress)
    if timings is not None:
        timings["compile_seconds"] = seconds
    schedule = LabLrRule(state.lr, cfg.lr_decay, [r.train_loss for r in state.history])
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if early_stop(state.history, cfg.early_stopping_patience) is not None:
            break  # a resumed run that had already met its stopping rule
        # On a CPU only (a GPU's epoch is short and keeps its one host read), and only in epoch 1: the
        # extra train_steps calls change how the epoch's loss is summed in its last bits, so a resumed
        # run must split its epochs exactly as the run it continues did.
        first_on_cpu = epoch == 1 and model.device == "cpu"
        announce = _projection_announcer(log, model.device, epoch, cfg.epochs) if first_on_cpu else None
        record = _train_epoch(model, splits, orders.next(), _Recipe(cfg, schedule.lr, epoch, shape), progress, announce)
        if not math.isfinite(record.train_loss):
            raise DivergedError(f"{experiment.name}: training loss {record.train_loss} in epoch {epoch} of {cfg.epochs}: "
                                f"the run diverged and stops here; lower train.lr (now {schedule.lr:g})", epoch)
        best_val, best_weights = state.best_val_acc, state.best_weights
        val_loss, val_acc = _evaluate(model, splits["val"], cfg) if splits["val"].num_examples else (math.nan, math.nan)
        record.val_loss, record.val_acc = val_loss, val_acc
        is_best = not val_acc < best_val  # >=, and a split without validation counts every epoch as best
        if is_best:
            best_val, best_weights = val_acc, model.get_weights()
            record.test_loss, record.test_acc = _evaluate(model, splits["test"], cfg)
        log(record.line(cfg.epochs))
        schedule.after_epoch(record.train_loss)
        state = TrainerState([*state.history, record], best_val, schedule.lr, orders.order.copy(),
                             orders.rng.get_state(legacy=False), state.model, best_weights)
        if on_epoch:
            state.model = model.get_training_state()  # a host copy, once per epoch, only for a checkpoint
            on_epoch(state, is_best)
        reason = early_stop(state.history, cfg.early_stopping_patience)
        if reason is not None and epoch < cfg.epochs:
            log(f"stopping after epoch {epoch} of {cfg.epochs}: {reason}")
            break
    return state.history


def early_stop(history: list[EpochRecord], patience: Optional[int]) -> Optional[str]:
    """Why training stops after `history` (None: it goes on): validation accuracy has not reached its
    best so far (ties count, as for the final test) in the last `patience` epochs. A run without a
    validation split never stops early (every epoch is its best)."""
    if patience is None or not history:
        return None
    accs = [r.val_acc for r in history]
    if any(math.isnan(a) for a in accs):
        return None
    best = len(accs) - 1 - accs[::-1].index(max(accs))  # the last of equal bests
    waited = len(history) - 1 - best
    if waited < patience:
        return None
    return (f"early stopping: validation accuracy {history[best].val_acc:.4f} at epoch {history[best].epoch} "
            f"not reached again in {waited} epochs (patience {patience})")


def _evaluate(model: Model, data: Any, cfg: TrainConfig) -> tuple[float, float]:
    """Evaluation as the recipe asks: with the flip test-time augmentation only when it is on (so a
    model without that option keeps working at the default)."""
    if cfg.test_time_flip:
        return model.evaluate(data, cfg.eval_batch_size, flip=True)
    return model.evaluate(data, cfg.eval_batch_size)


@dataclass(frozen=True)
class _Recipe:
    """What an epoch's train_steps calls are given besides the batches: the lr of every step
    (netspec.training.schedules, from the lab schedule's lr) and the augmentation plan of every image."""

    config: TrainConfig
    lr: float
    """The lab schedule's lr (train.lr for any other schedule)."""
    epoch: int
    input_shape: tuple[int, ...]

    def step_lrs(self, steps_per_epoch: int) -> np.ndarray:
        return epoch_lrs(self.config, self.epoch, steps_per_epoch, self.lr)

    def call(self, model: Model, data: Any, chunk: np.ndarray, lrs: np.ndarray) -> tuple[float, float]:
        """One train_steps call. A call whose steps share one lr passes it as a float and the
        augmentation only when it is on: exactly today's call at the defaults."""
        lr: float | np.ndarray = float(lrs[0]) if len(lrs) and (lrs == lrs[0]).all() else lrs
        aug = self.config.augment
        if not aug.active:
            return model.train_steps(data, chunk, lr)
        height, width = self.input_shape[1:]
        draws = augment.batch_draws(aug, self.config.seed, self.epoch, chunk, height, width)
        return model.train_steps(data, chunk, lr, augment=draws)


def _projection_announcer(log: Callable[[str], None], device: str, epoch: int,
                          epochs: int) -> Callable[[float, int, int], None]:
    """announce(seconds, steps timed, steps in the epoch): one line when the epoch will be long."""
    def announce(seconds: float, timed: int, total: int) -> None:
        per_epoch = seconds / timed * total
        if per_epoch > LONG_EPOCH_S:
            log(f"epoch {epoch}/{epochs} on {device}: about {_duration(per_epoch)} per epoch, "
                f"{_duration(per_epoch * (epochs - epoch + 1))} for the {epochs - epoch + 1} epochs to go "
                f"(projected from {timed} steps); a GPU is much faster")
    return announce


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _chunks(batches: np.ndarray, updates: int, project: bool) -> list[np.ndarray]:
    """The train_steps calls of an epoch: one (the fewest host reads), or up to
    `updates` (PROGRESS_UPDATES_PER_EPOCH for a bar, one per 10% for lines off a terminal); a projected epoch first times a few warm-up and a
    few measured steps."""
    head: list[np.ndarray] = []
    if project and len(batches) > 4 * PROJECTION_STEPS:
        head = [batches[:PROJECTION_STEPS], batches[PROJECTION_STEPS:2 * PROJECTION_STEPS]]
        batches = batches[2 * PROJECTION_STEPS:]
    rest = np.array_split(batches, min(updates, len(batches))) if updates > 1 else [batches]
    return head + rest


def _warm_up(model: Model, data: Any, batch_size: int, steps: int, progress: bool | None) -> float:
    """Seconds of the model's warmup (compiling its training step for the calls an epoch makes: the whole
    epoch, or the largest of the progress bar's chunks), so that epoch times exclude it."""
    start = time.perf_counter()
    chunks = min(ProgressLine(steps, "", enabled=progress).updates(PROGRESS_UPDATES_PER_EPOCH), steps)
    model.warmup(data, batch_size, -(-steps // max(chunks, 1)))
    return time.perf_counter() - start


def _train_epoch(model: Model, splits: dict[str, Any], order: np.ndarray, recipe: _Recipe, progress: bool | None,
                 announce: Optional[Callable[[float, int, int], None]] = None) -> EpochRecord:
    """One epoch's optimizer steps; the record's validation figures are filled in by the caller."""
    epoch, epochs, batch_size = recipe.epoch, recipe.config.epochs, recipe.config.batch_size
    batches = batch_index_matrix(order, batch_size)
    lrs = recipe.step_lrs(len(batches))
    bar = ProgressLine(len(batches), f"epoch {epoch}/{epochs}", enabled=progress)
    chunks = _chunks(batches, bar.updates(PROGRESS_UPDATES_PER_EPOCH), announce is not None)
    loss_sum = acc_sum = 0.0
    done = 0
    start = time.perf_counter()
    for index, chunk in enumerate(chunks):
        chunk_start = time.perf_counter()
        chunk_loss, chunk_acc = recipe.call(model, splits["train"], chunk, lrs[done:done + len(chunk)])
        if announce is not None and index == 1 and len(chunks) > 2:  # the measured chunk, after the warm-up one
            announce(time.perf_counter() - chunk_start, len(chunk), len(batches))
        loss_sum, acc_sum, done = loss_sum + chunk_loss, acc_sum + chunk_acc, done + len(chunk)
        rate = done * batch_size / (time.perf_counter() - start)
        bar.update(done, f"loss {loss_sum / done:.4f} acc {acc_sum / done:.4f} {rate:,.0f} img/s")
    seconds = time.perf_counter() - start
    bar.close()
    # The record's lr: the epoch's last step's (the lab schedule's lr, constant over the epoch).
    return EpochRecord(epoch, loss_sum / done, acc_sum / done, math.nan, math.nan, float(lrs[-1]), seconds,
                       done * batch_size / seconds)
