"""Optional TensorBoard event files for users who live there (`--tensorboard`; `netspec[tensorboard]`).

A run writes `<run folder>/tensorboard/`, one scalar per figure per epoch (train/loss, val/acc, ...,
lr, epoch_seconds): `tensorboard --logdir runs/` then shows every run. The event files are a view,
like the PNGs: the run's results stay in metrics.json and history.json. tensorboardX is a small
package (numpy and protobuf) and needs neither torch nor TensorFlow.
"""
from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any

from netspec.errors import missing_package
from netspec.io import safe_output_dir
from netspec.training.history import EpochRecord

EVENTS_DIR = "tensorboard"
SCALARS = {"train/loss": "train_loss", "train/acc": "train_acc", "val/loss": "val_loss", "val/acc": "val_acc",
           "test/loss": "test_loss", "test/acc": "test_acc", "lr": "lr", "epoch_seconds": "seconds"}
"""TensorBoard tag -> EpochRecord field."""


class TensorBoardLog:
    """Writes each new epoch's figures; a resumed run starts at its first new epoch (`purge_step` drops
    what a killed process had written past its checkpoint)."""

    def __init__(self, run_dir: Path, first_epoch: int) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise missing_package("--tensorboard", "tensorboardX", "tensorboard") from None
        # tensorboardX writes its event file in place: the folder must be the run's own, never a link, and
        # the file's name ends in a random token, so no link planted in the folder can wait for it (its
        # own name is only the time in seconds and the host).
        folder = safe_output_dir(run_dir, EVENTS_DIR)
        self.writer: Any = SummaryWriter(str(folder), purge_step=first_epoch, filename_suffix=f".{secrets.token_hex(8)}")

    def epoch(self, record: EpochRecord) -> None:
        for tag, field in SCALARS.items():
            value = getattr(record, field)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, record.epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
