"""One pydantic model per kind of file netspec reads back from a run folder or a runs tree: metrics.json,
history.json, env.json, preprocess.json, a sweep's manifest, and the scalars of checkpoint.npz.

Run folders travel between machines and people, so every value is checked before it is used, strictly:
`"test_acc": true` is not 1.0, a string is not a number, an accuracy lies in [0, 1], a learning rate is
positive. A file that fails is named in one line by its reader (`check`) and left out or refused, never
coerced. Fields netspec does not read are allowed (files of a newer netspec add some); null stands for a
non-finite number, as the writers put it (netspec.runs.run_folder.strict).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError, model_validator

import numpy as np

from netspec.errors import format_validation_error
from netspec.training.history import EpochRecord
from netspec.spec.fields import SafeName

Real = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Accuracy = Optional[Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]]
"""An accuracy, or null (none measured: no validation split, or a non-finite value)."""
Loss = Optional[Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]]
Seconds = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
Epoch = Annotated[int, Strict(), Field(ge=1, le=10_000_000)]
PositiveReal = Annotated[float, Strict(), Field(gt=0.0, allow_inf_nan=False)]
Rate = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
"""A learning rate: never negative; 0 where a schedule's factor is 0 (a one-cycle's end)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class EpochRow(_Record):
    """One epoch of history.json (netspec.training.trainer.EpochRecord), and of a checkpoint's history."""

    epoch: Epoch
    train_loss: Loss
    train_acc: Accuracy
    val_loss: Loss = None
    val_acc: Accuracy = None
    lr: Optional[Rate]
    seconds: Optional[Seconds] = None
    images_per_s: Optional[Seconds] = None
    test_loss: Loss = None
    test_acc: Accuracy = None


def _numbered(rows: list[EpochRow]) -> list[EpochRow]:
    if [r.epoch for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError("its epochs are not numbered 1, 2, 3, ...")
    return rows


class Finished(_Record):
    """metrics.json of a finished run (runs from before the status field have none)."""

    status: Literal["finished"] = "finished"
    train_loss: Loss
    train_acc: Accuracy = None
    val_loss: Loss = None
    val_acc: Accuracy
    best_val_acc: Accuracy = None
    test_loss: Loss = None
    test_acc: Accuracy
    best_epoch: Epoch
    epochs: Epoch
    epoch_seconds: list[Seconds] = []
    median_epoch_seconds: Optional[Seconds] = None

    @model_validator(mode="after")
    def _best_within(self) -> "Finished":
        if self.best_epoch > self.epochs:
            raise ValueError(f"best_epoch {self.best_epoch} after the last epoch {self.epochs}")
        return self


class Diverged(_Record):
    """metrics.json of a run stopped by a non-finite training loss."""

    status: Literal["diverged"]
    epoch: Epoch
    message: StrictStr = ""


Metrics = Annotated[Union[Finished, Diverged], Field(discriminator="status")]


class Env(_Record):
    """env.json: what `evaluate`/`predict` read of it is the backend the run was trained on."""

    backend: Optional[SafeName] = None


class Preprocess(_Record):
    """preprocess.json: class names and the per-channel input scaling, (pixels - shift) / scale."""

    classes: list[StrictStr] = Field(min_length=1, max_length=100_000)
    shift: list[Real] = Field(min_length=1, max_length=4096)
    scale: list[PositiveReal] = Field(min_length=1, max_length=4096)
    """Positive: a scale of 0 divides by zero (NaN probabilities), a negative one flips the images."""
    image_shape: Optional[tuple[Annotated[int, Strict(), Field(gt=0, le=4096)], ...]] = Field(None, min_length=3, max_length=3)
    """(C, H, W) of the data's images (runs before image trees of any shape: 3x32x32)."""

    @model_validator(mode="after")
    def _same_channels(self) -> "Preprocess":
        channels = self.image_shape[0] if self.image_shape else 3
        if len(self.shift) != len(self.scale) or len(self.shift) not in (1, channels):
            raise ValueError(f"{len(self.shift)} shift and {len(self.scale)} scale values; images have {channels} "
                             f"channels: give {channels} of each (or 1 for all)")
        return self


class ManifestPoint(_Record):
    label: StrictStr
    name: SafeName
    run_id: SafeName
    seed: Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)] = 0
    settings: dict[str, Any] = {}
    base: StrictBool = False
    overrides: list[StrictStr] = []


class Manifest(_Record):
    """runs/sweeps/<name>.json, as netspec.sweeps.sweep.record_invocation writes it."""

    name: SafeName
    description: StrictStr = ""
    axes: list[StrictStr] = []
    variants: list[StrictStr] = []
    backends: list[SafeName] = Field(min_length=1)
    """Backend names become parts of figure file names: safe file names only."""
    invocations: list[dict[str, Any]] = []
    points: list[ManifestPoint]


class ShuffleRng(_Record):
    pos: Annotated[int, Strict(), Field(ge=0, le=624)]
    has_gauss: Literal[0, 1]
    gauss: Real


class CheckpointMeta(_Record):
    """The JSON part of checkpoint.npz: where the run stands, and the state that is not an array."""

    format: Literal[1]
    trajectory: StrictStr
    epoch: Epoch
    epochs: Epoch
    history: list[EpochRow] = Field(min_length=1)
    best_val_acc: Accuracy
    lr: Rate
    shuffle_rng: Optional[ShuffleRng]

    @model_validator(mode="after")
    def _consistent(self) -> "CheckpointMeta":
        _numbered(self.history)
        if len(self.history) != self.epoch:
            raise ValueError(f"its history has {len(self.history)} epochs, its header says {self.epoch}")
        return self


def check(kind: Any, data: Any, what: str) -> Any:
    """`data` validated as `kind` (a model or an annotated type); a ValueError of one line naming `what`
    (the file) and the first field that is wrong, for the reader to report."""
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as err:
        raise ValueError(f"{what}: {format_validation_error(err)}") from None
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None


def check_history(data: Any, what: str, epochs: Optional[int] = None) -> list[EpochRow]:
    """history.json: one row per epoch, numbered from 1 (as many as `epochs` when given)."""
    rows = check(list[EpochRow], data, what)
    try:
        _numbered(rows)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    if epochs is not None and len(rows) != epochs:
        raise ValueError(f"{what}: does not hold the {epochs} epochs of metrics.json")
    return rows


# ---- a history's figures (metrics.json's, the report's) --------------------------------------------------

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
