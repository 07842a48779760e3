"""checkpoint.npz: the trainer's whole state after an epoch, its layout in one place (encode, decode,
validate).

One .npz of plain arrays (no pickles), written in one atomic rename:

    model.<name>      Model.get_training_state(): canonical weights, optimizer slots under canonical names
                      (netspec.protocol.optimizer_state), the dropout stream [seed, step]
    best.<name>       the canonical weights after the last epoch whose validation accuracy was the best
    shuffle.order     the last epoch's training order; shuffle.key the MT19937 key after it was drawn
    meta.json         uint8 bytes of strict JSON: format, trajectory id, epoch, epochs (the run's length),
                      history, best_val_acc, the lab rule's lr, the shuffle RNG's scalars
                      (netspec.runs.records.CheckpointMeta checks it)

Every array and scalar is checked before anything uses it (`load`): a checkpoint travels with its run
folder between machines and people. A state of another network is `NotFit`; anything else that is not
what `encode` writes is a ValueError (or one of DAMAGED), which the run folder reports in one line.
"""
from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from netspec.errors import SpecError
from netspec.io import json_text, load_npz, npz_bytes, parse_json_text
from netspec.protocol.model_base import DROPOUT_RNG, check_stream, finite_numbers, unpack_training_state
from netspec.protocol.optimizer_state import DamagedState, check_arrays as check_optimizer_arrays
from netspec.runs import records
from netspec.spec.network import Network
from netspec.training.history import record_from_dict
from netspec.training.trainer import TrainerState

CHECKPOINT = "checkpoint.npz"
FORMAT = 1
META = "meta.json"
"""The checkpoint's JSON part, stored in the .npz as a uint8 array: one file, one atomic rename."""
MODEL, BEST, ORDER, KEY = "model.", "best.", "shuffle.order", "shuffle.key"
MAX_BYTES = 16 * 2**30
"""Largest total of a checkpoint's arrays read back (checked from their headers first): weights, Adam's
two moments and the best weights of the largest network check_memory lets train, with room."""
DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)
"""What reading a file that is not a checkpoint may raise."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    state: TrainerState
    trajectory: str
    """The trajectory id of the run that wrote it (netspec.runs.run_folder.trajectory_id)."""
    epochs: int
    """The run's length (train.epochs) when it was written."""


class NotFit(ValueError):
    """A checkpoint whose arrays are not a training state of the network (a transposed moment, a weight of
    another shape, a negative Adam step)."""


def encode(checkpoint: Checkpoint) -> bytes:
    """The .npz bytes of a checkpoint. Floats in meta.json round-trip exactly through JSON; non-finite ones
    are written as null (see `_state`)."""
    state = checkpoint.state
    arrays = {MODEL + k: v for k, v in state.model.items()}
    arrays.update({BEST + k: v for k, v in (state.best_weights or {}).items()})
    meta: dict[str, Any] = {"format": FORMAT, "trajectory": checkpoint.trajectory, "epoch": state.epoch,
                            "epochs": checkpoint.epochs, "history": [dataclasses.asdict(r) for r in state.history],
                            "best_val_acc": state.best_val_acc, "lr": state.lr, "shuffle_rng": None}
    if state.order is not None and state.shuffle_rng is not None:
        arrays[ORDER] = state.order
        arrays[KEY] = np.asarray(state.shuffle_rng["state"]["key"])
        meta["shuffle_rng"] = {"pos": int(state.shuffle_rng["state"]["pos"]), "has_gauss": int(state.shuffle_rng["has_gauss"]),
                               "gauss": float(state.shuffle_rng["gauss"])}
    arrays[META] = np.frombuffer(json_text(meta).encode(), np.uint8)
    return npz_bytes(arrays)


def load(path: Path, network: Optional[Network] = None) -> Checkpoint:
    """The checkpoint at `path`, every part checked (against `network` when given); NotFit, or one of
    DAMAGED, when it is not one."""
    arrays = load_npz(path, MAX_BYTES)
    meta = parse_json_text(arrays.pop(META).tobytes().decode())
    checked = records.check(records.CheckpointMeta, meta, CHECKPOINT)
    check_state_arrays(arrays, network)
    return Checkpoint(_state(arrays, meta), checked.trajectory, checked.epochs)


def header(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint's JSON part alone (cheap: one member of the zip), unchecked; None when unreadable."""
    try:
        return parse_json_text(load_npz(path, MAX_BYTES, names=[META])[META].tobytes().decode())
    except DAMAGED:
        return None


def _state(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> TrainerState:
    """The trainer's state of a checkpoint's arrays and meta.json (the inverse of encode); KeyError,
    TypeError or ValueError on a state that is not one."""
    def prefixed(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    rng = meta["shuffle_rng"]
    if rng is not None:
        _check_shuffle(arrays[ORDER], arrays[KEY], rng["pos"])
    shuffle_rng = None if rng is None else {
        "bit_generator": "MT19937", "state": {"key": np.asarray(arrays[KEY], np.uint32), "pos": int(rng["pos"])},
        "has_gauss": int(rng["has_gauss"]), "gauss": float(rng["gauss"])}
    best = meta["best_val_acc"]
    return TrainerState(history=[record_from_dict(row) for row in meta["history"]],
                        best_val_acc=math.nan if best is None else float(best), lr=float(meta["lr"]),
                        order=arrays.get(ORDER) if rng is not None else None, shuffle_rng=shuffle_rng,
                        model=prefixed(MODEL), best_weights=prefixed(BEST) or None)


def _check_shuffle(order: np.ndarray, key: np.ndarray, pos: Any) -> None:
    """A saved shuffle state is what EpochOrder writes: the order a permutation of 0..n-1, the MT19937 key
    624 uint32 words at a position in [0, 624]; ValueError (a damaged state) otherwise."""
    order, key = np.asarray(order), np.asarray(key)
    if order.ndim != 1 or order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(len(order))):
        raise ValueError(f"{ORDER} is not an order of the training split (a permutation of 0..{len(order) - 1})")
    if key.shape != (624,) or key.dtype != np.uint32 or not isinstance(pos, int) or not 0 <= pos <= 624:
        raise ValueError(f"{KEY} is not a numpy MT19937 state (624 uint32 words, a position in [0, 624])")


def check_state_arrays(arrays: dict[str, np.ndarray], network: Optional[Network]) -> None:
    """The checkpoint's arrays before anything uses them, in one place: the model's training state through
    the checks every backend's set_training_state runs (netspec.protocol: every weight, optimizer slot and
    step, and the dropout stream; given the network, every tensor of it present and of its shape), and the
    best weights alike. NotFit for a state of another network, ValueError for values none writes."""
    model = {key[len(MODEL):]: value for key, value in arrays.items() if key.startswith(MODEL)}
    infos = network.param_infos() if network is not None else {}
    for name, info in infos.items():
        for key in (MODEL + name, BEST + name):
            if key in arrays and arrays[key].shape != tuple(info.shape):
                raise NotFit(f"{key} has shape {arrays[key].shape}, the network's is {tuple(info.shape)}")
    try:
        check_optimizer_arrays(arrays, prefix=MODEL)
        if DROPOUT_RNG in model:  # int64 [seed, step]: an older netspec's framework RNG bytes do not fit
            check_stream(model[DROPOUT_RNG])
        if network is not None:
            unpack_training_state(network, model)
    except DamagedState as err:
        raise ValueError(str(err)) from None
    except SpecError as err:
        raise NotFit(str(err)) from None
    for key, value in arrays.items():
        if key.startswith(BEST) and not finite_numbers(value):
            raise ValueError(f"{key} is not finite numbers")
