"""An optimizer's state as framework-neutral arrays under canonical names, so that a checkpoint written
by either backend resumes bit-exactly in it (and loads in the other).

Names: '<kind>.<slot>.<tensor>' for each trainable tensor, and '<kind>.step' (steps taken) for the
optimizers that count them, with kind the optimizer's type and its slots PyTorch's state keys:
'adam.exp_avg.0.weight', 'adam.exp_avg_sq.0.weight', 'adam.step'; 'adamw.*' alike;
'sgd.momentum_buffer.0.weight' (SGD counts no steps, and has no state at all without momentum).
Before the first step the slots are zeros, which every optimizer here treats as its fresh state
(torch's lazily created momentum buffer starts as g, which is 0 * m + g).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from netspec.errors import SpecError
from netspec.spec.params import Weights

SLOTS: dict[str, tuple[str, ...]] = {"adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"),
                                     "sgd": ("momentum_buffer",)}
"""Each optimizer's per-tensor state, by PyTorch's state key."""
COUNTS_STEPS = {"adam": True, "adamw": True, "sgd": False}


def slots_of(optimizer: object) -> tuple[str, ...]:
    """The slots an optimizer config keeps (SGD without momentum keeps none)."""
    kind = getattr(optimizer, "type")
    if kind == "sgd" and getattr(optimizer, "momentum") == 0:
        return ()
    return SLOTS[kind]


@dataclass(frozen=True)
class OptimizerState:
    """One optimizer's state in canonical names and layouts."""

    kind: str
    slots: dict[str, Weights]
    """slot -> tensor name -> array."""
    step: int


def to_arrays(state: OptimizerState) -> dict[str, np.ndarray]:
    arrays = {f"{state.kind}.{slot}.{name}": np.array(value) for slot, tensors in state.slots.items()
              for name, value in tensors.items()}
    if COUNTS_STEPS[state.kind]:
        arrays[f"{state.kind}.step"] = np.array(state.step, np.int64)
    return arrays


class DamagedState(SpecError):
    """A training state's array holds what no optimizer writes (a NaN moment, a negative step): the state
    is damaged, not merely of another network."""


def check_arrays(arrays: dict[str, np.ndarray], prefix: str = "", trainable: Optional[list[str]] = None) -> None:
    """Every optimizer array of a training state, before any use (the one check, for a checkpoint read back
    and for a backend's set_training_state): a slot is a finite float array of its parameter's shape, a
    step one integer count >= 0. Keys are '<prefix><kind>.<slot>.<tensor>' and '<prefix><kind>.step'.
    SpecError for a shape that does not fit, DamagedState for a value no optimizer writes. A slot's parameter
    is found among the arrays (its shape then checked) or, for optimizer arrays alone, in `trainable`."""
    for key, value in arrays.items():
        kind, _, rest = key[len(prefix):].partition(".") if key.startswith(prefix) else ("", "", "")
        if kind not in SLOTS:
            continue
        value = np.asarray(value)
        if rest == "step":
            if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
                raise DamagedState(f"{key} is {value.tolist()!r}, not a count of steps")
            continue
        slot, _, name = rest.partition(".")
        param = arrays.get(prefix + name)
        if slot not in SLOTS[kind] or (param is None and name not in (trainable or ())):
            raise SpecError(f"{key} is a slot of no parameter of {kind}")
        if param is not None and value.shape != np.shape(param):
            raise SpecError(f"{key} has shape {value.shape}, its parameter {np.shape(param)}")
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise DamagedState(f"{key} holds {_what(value)}; an optimizer's state is finite floats")


def _what(value: np.ndarray) -> str:
    if value.dtype.kind != "f":
        return f"{value.dtype} values"
    return f"{int(np.count_nonzero(~np.isfinite(value)))} non-finite values"


def from_arrays(arrays: dict[str, np.ndarray], trainable: list[str]) -> Optional[OptimizerState]:
    """The optimizer state in a training state (None when it holds none); a missing tensor is a SpecError."""
    check_arrays(arrays, trainable=trainable)
    kinds = [kind for kind in SLOTS if any(key.startswith(f"{kind}.") for key in arrays)]
    if not kinds:
        return None
    kind = kinds[0]
    if COUNTS_STEPS[kind] and f"{kind}.step" not in arrays:
        raise SpecError(f"training state lacks {kind + '.step'!r}; it is not a state of this network")
    present = [slot for slot in SLOTS[kind] if any(k.startswith(f"{kind}.{slot}.") for k in arrays)]
    absent = [f"{kind}.{slot}.{n}" for slot in present for n in trainable if f"{kind}.{slot}.{n}" not in arrays]
    if absent:
        raise SpecError(f"training state lacks {absent[0]!r}; it is not a state of this network")
    slots = {slot: {n: arrays[f"{kind}.{slot}.{n}"] for n in trainable} for slot in present}
    return OptimizerState(kind, slots, int(arrays[f"{kind}.step"]) if COUNTS_STEPS[kind] else 0)
