"""A scripted backend for the trainer's tests: fixed, known outputs and a record of every call.

Real backends make the trainer's bookkeeping untestable to the digit: their losses are whatever
training gives, and a rule such as "evaluate the test split on ties of the best validation accuracy"
is only exercised when a run happens to tie. A `ScriptedModel` implements the Model protocol of
netspec/protocol/backend.py with outputs written in the test (per-step losses and accuracies, per-epoch
validation and test figures), so every figure of the history can be computed by hand, and it
records what the trainer asked (batch index matrices, learning rates, which split was evaluated
when), so the protocol itself can be asserted. No torch or jax here.

The trainer hands the model only arrays, so `scripted_data` marks each split in its pixel values
(train 0, val 1, test 2) and `to_device` reads the mark back: the model knows which split it is given
without relying on the order of the trainer's calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from netspec.protocol.backend import Precision
from netspec.spec.experiment import TrainConfig
from netspec.spec.network import Network
from netspec.spec.params import Weights, init_weights

SPLIT_MARKS = {"train": 0.0, "val": 1.0, "test": 2.0}
"""Pixel value of every image of a split in `scripted_data`."""


@dataclass(frozen=True)
class Script:
    """What the model answers, in the order the trainer asks.

    step_losses / step_accs: one value per optimizer step, all epochs in a row (a `train_steps` call
    over k rows returns the sums of the next k). val: (loss, acc) of each epoch's validation pass.
    test: (loss, acc) each epoch's test pass would give; read only on the epochs the trainer asks.
    """

    step_losses: Sequence[float]
    step_accs: Sequence[float]
    val: Sequence[tuple[float, float]]
    test: Sequence[tuple[float, float]]


@dataclass
class ScriptedSplit:
    """DeviceData of the scripted model: which split, and how many examples."""

    name: str
    num_examples: int


@dataclass(frozen=True)
class TrainCall:
    """One `train_steps` call as the trainer made it."""

    epoch: int
    batches: np.ndarray
    """The (steps, batch_size) index matrix, copied."""
    lr: float | np.ndarray
    """A float (every step's lr) or one lr per step."""
    augment: Any = None
    """The augmentation draws (netspec.protocol.augment.Draws) the call was given, if any."""


@dataclass(frozen=True)
class Evaluation:
    """One `evaluate` call: which split, during which epoch, with which batch size."""

    split: str
    epoch: int
    batch_size: int
    flip: bool = False
    """Flip test-time augmentation asked for."""


@dataclass(frozen=True)
class ScriptedSplits:
    """A dataset with the Splits shape the trainer reads (netspec.training.trainer.Splits)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str = "scripted"


def scripted_data(n_train: int, n_val: int, n_test: int, features: int = 4) -> ScriptedSplits:
    """Images of shape (features, 1, 1) whose value marks their split (SPLIT_MARKS); labels 0."""
    def split(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((n, features, 1, 1), SPLIT_MARKS[name], np.float32), np.zeros(n, np.int64)

    (tx, ty), (vx, vy), (sx, sy) = split("train", n_train), split("val", n_val), split("test", n_test)
    return ScriptedSplits(tx, ty, vx, vy, sx, sy)


@dataclass
class ScriptedModel:
    """The Model protocol with scripted outputs; the trainer's calls are kept in the lists below.

    Asking for more steps or epochs than scripted is an AssertionError naming what was asked, so a
    trainer that, say, keeps a last partial batch fails loudly instead of reading past the script.
    """

    network: Network
    script: Script
    device: str = "scripted"
    precision: str = "float32"
    compiled: bool = False
    compile_error: Optional[str] = None
    train_calls: list[TrainCall] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    placed: list[ScriptedSplit] = field(default_factory=list)
    optimizer_configs: list[TrainConfig] = field(default_factory=list)
    _steps_done: int = 0
    _epoch: int = 0
    _evaluated_since_training: bool = True
    _weights: Optional[Weights] = None

    # --- the Model protocol -----------------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Zero logits: the trainer never calls it; here so the protocol is complete."""
        return np.zeros((len(x), *self.network.output_shape), np.float32)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        raise NotImplementedError("the scripted model has no gradients; the trainer never asks for them")

    def get_weights(self) -> Weights:
        """Canonical initial weights (seed 0), so a run that saves its best weights can."""
        if self._weights is None:
            self._weights = init_weights(self.network, 0)
        return {k: v.copy() for k, v in self._weights.items()}

    def set_weights(self, weights: Weights) -> None:
        self._weights = {k: np.array(v) for k, v in weights.items()}

    def get_training_state(self) -> dict[str, np.ndarray]:
        """The weights, and where the script stands (steps and epochs done) as its 'RNG' state."""
        return {**self.get_weights(), "rng.dropout": np.array([self._steps_done, self._epoch], np.int64)}

    def set_training_state(self, state: dict[str, np.ndarray]) -> None:
        self.set_weights({k: v for k, v in state.items() if k != "rng.dropout"})
        self._steps_done, self._epoch = (int(v) for v in state["rng.dropout"])

    def to_device(self, x: np.ndarray, y: np.ndarray) -> ScriptedSplit:
        marks = {value: name for name, value in SPLIT_MARKS.items()}
        name = marks[float(x.flat[0])] if len(x) else self._empty_split_name()
        split = ScriptedSplit(name, len(x))
        self.placed.append(split)
        return split

    def _empty_split_name(self) -> str:
        """An empty split carries no mark; the trainer places train, val and test, so it is the missing one."""
        seen = {s.name for s in self.placed}
        return next(name for name in SPLIT_MARKS if name not in seen)

    def setup_optimizer(self, config: TrainConfig) -> None:
        self.optimizer_configs.append(config)

    def warmup(self, data: ScriptedSplit, batch_size: int, rows: int = 1) -> None:
        """Nothing to compile."""

    def train_steps(self, data: ScriptedSplit, batches: np.ndarray, lr: float | np.ndarray,
                    augment: Any = None) -> tuple[float, float]:
        assert data.name == "train", f"train_steps on the {data.name} split"
        if self._evaluated_since_training:  # the first train_steps call after an evaluation opens an epoch
            self._epoch, self._evaluated_since_training = self._epoch + 1, False
        self.train_calls.append(TrainCall(self._epoch, np.array(batches, copy=True), lr, augment))
        start, stop = self._steps_done, self._steps_done + len(batches)
        assert stop <= len(self.script.step_losses), (
            f"step {stop} asked for, {len(self.script.step_losses)} scripted")
        self._steps_done = stop
        return float(sum(self.script.step_losses[start:stop])), float(sum(self.script.step_accs[start:stop]))

    def evaluate(self, data: ScriptedSplit, batch_size: int, flip: bool = False) -> tuple[float, float]:
        epoch, self._evaluated_since_training = self._epoch, True
        self.evaluations.append(Evaluation(data.name, epoch, batch_size, flip))
        assert data.name in ("val", "test"), f"evaluate on the {data.name} split"
        values = self.script.val if data.name == "val" else self.script.test
        assert epoch <= len(values), f"epoch {epoch} evaluated on {data.name}, {len(values)} scripted"
        return values[epoch - 1]

    # --- what the tests read ----------------------------------------------------------------------

    def epochs_evaluated(self, split: str) -> list[int]:
        """The epochs on which `split` was evaluated, in call order."""
        return [e.epoch for e in self.evaluations if e.split == split]

    def batches_of(self, epoch: int) -> np.ndarray:
        """Every batch row trained in `epoch`, whatever the chunking into train_steps calls."""
        return np.concatenate([c.batches for c in self.train_calls if c.epoch == epoch])

    def step_lrs(self, epoch: int) -> np.ndarray:
        """The lr of every step of `epoch`, whatever the chunking and whether a call passed a float."""
        return np.concatenate([np.broadcast_to(np.asarray(c.lr, np.float64), len(c.batches))
                               for c in self.train_calls if c.epoch == epoch])

    def lrs(self) -> list[float]:
        """The learning rate of each epoch's train_steps calls (one value per epoch)."""
        by_epoch: dict[int, set[float]] = {}
        for call in self.train_calls:
            by_epoch.setdefault(call.epoch, set()).add(call.lr)
        assert all(len(v) == 1 for v in by_epoch.values()), f"lr changed within an epoch: {by_epoch}"
        return [by_epoch[e].pop() for e in sorted(by_epoch)]


@dataclass
class ScriptedBackend:
    """The Backend protocol around scripts, for netspec.runs.training_run.run_experiment and run_sweep.

    `script` answers every compiled model, or is a mapping from the weight seed to a script (a sweep
    over train.seed gives each point its own). The last compiled model is kept (`model`) so a test can
    read its record of calls afterwards."""

    script: Script | Mapping[int, Script]
    name: str = "scripted"
    model: Optional[ScriptedModel] = None

    def compile(self, network: Network, weights: Optional[Weights] = None, seed: int = 0,
                device: Optional[str] = None, precision: Precision = "default", compiled: str = "auto") -> ScriptedModel:
        script = self.script if isinstance(self.script, Script) else self.script[seed]
        self.model = ScriptedModel(network, script)
        if weights is not None:
            self.model.set_weights(weights)
        return self.model

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def device(self, name: Optional[str] = None) -> str:
        return "cpu"
