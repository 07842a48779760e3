"""A run's history: one EpochRecord per epoch, as the trainer makes it and as history.json and a
checkpoint hold it (netspec.runs.records validates what is read back; netspec.runs.records.summarize
turns a history into the report's figures)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional


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
        """'epoch  3/50  train loss 1.7749 acc 0.3737  val loss 1.6012 acc 0.4211  test loss ... acc ...  3.1s 12,903 img/s'
        (test only on the epochs where validation accuracy reached its best so far)."""
        test = f"  test loss {self.test_loss:.4f} acc {self.test_acc:.4f}" if self.test_acc is not None else ""
        # a run without a validation split (data.val_size 0) has no validation figures to print, not nan ones
        val = "" if math.isnan(self.val_acc) else f"  val loss {self.val_loss:.4f} acc {self.val_acc:.4f}"
        return (f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  train loss {self.train_loss:.4f} acc {self.train_acc:.4f}"
                f"{val}{test}  {self.seconds:.1f}s {self.images_per_s:,.0f} img/s")


_ALWAYS_FLOAT = {f.name for f in dataclasses.fields(EpochRecord)} - {"epoch", "test_loss", "test_acc"}
"""Fields a record always has as numbers: null in a JSON file is a non-finite value there (NaN without
a validation split); test figures are null on epochs that were not a best."""


def record_from_dict(data: dict[str, Any]) -> EpochRecord:
    values = {f.name: data.get(f.name) for f in dataclasses.fields(EpochRecord)}
    values.update({k: math.nan for k in _ALWAYS_FLOAT if values[k] is None})
    return EpochRecord(**values)
