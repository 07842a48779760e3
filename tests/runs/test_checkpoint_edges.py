"""Checkpoints: every scalar and array of a checkpoint is checked before use, in one place
(netspec.runs.checkpoint.check_state_arrays over netspec.protocol's checks): a negative Adam step, NaN moments, a
missing Adam key or an out-of-range shuffle order is a damaged checkpoint, named, not trusted (the run
starts over), never a traceback and never taken for divergence. Milliseconds each: no training."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import netspec as ns
from netspec.runs.run_folder import RunFolder, Trajectory
from netspec.training.history import EpochRecord
from netspec.training.trainer import TrainerState

NETWORK = ns.Network(input_shape=(3,), layers=[ns.Linear(out_features=2)])  # 0.weight (2, 3), 0.bias (2,)


def model_state() -> dict[str, np.ndarray]:
    """A training state as an Adam run of NETWORK writes it (shapes from the spec, written by hand)."""
    zeros = {"0.weight": np.zeros((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)}
    state = dict(zeros)
    for slot in ("exp_avg", "exp_avg_sq"):
        state.update({f"adam.{slot}.{k}": v.copy() for k, v in zeros.items()})
    return {**state, "adam.step": np.array(3, np.int64), "rng.dropout": np.array([0, 3], np.int64)}


def write(tmp_path: Path, edit: Callable[[dict], dict] = lambda s: s, order: np.ndarray = np.arange(8)) -> RunFolder:
    rng = np.random.RandomState(0)
    rng.shuffle(np.arange(8))
    record = EpochRecord(1, 2.0, 0.3, 2.1, 0.25, 1e-3, 1.0, 100.0, 2.2, 0.2)
    folder = RunFolder(tmp_path / "run")
    state = TrainerState([record], 0.25, 1e-3, order, rng.get_state(legacy=False), edit(model_state()), None)
    folder.write_checkpoint(state, Trajectory("trajectory", 2))
    return folder


def without(key: str) -> Callable[[dict], dict]:
    return lambda s: {k: v for k, v in s.items() if k != key}


@pytest.mark.parametrize("edit, order, says", [
    (lambda s: {**s, "adam.step": np.array(-1)}, np.arange(8), "model.adam.step is -1, not a count of steps"),
    (lambda s: {**s, "adam.step": np.array(2.5)}, np.arange(8), "model.adam.step is 2.5, not a count of steps"),
    (lambda s: {**s, "adam.exp_avg.0.weight": np.full((2, 3), np.nan, np.float32)}, np.arange(8),
     "model.adam.exp_avg.0.weight holds 6 non-finite values"),
    (lambda s: {**s, "adam.exp_avg_sq.0.bias": np.array([np.inf, 0], np.float32)}, np.arange(8),
     "model.adam.exp_avg_sq.0.bias holds 1 non-finite values"),
    (lambda s: {**s, "0.weight": np.full((2, 3), np.nan, np.float32)}, np.arange(8), "'0.weight' is not finite numbers"),
    (without("adam.exp_avg_sq.0.weight"), np.arange(8), "lacks 'adam.exp_avg_sq.0.weight'"),
    (without("adam.step"), np.arange(8), "lacks 'adam.step'"),
    (lambda s: s, np.arange(8) + 100, "shuffle.order is not an order of the training split"),
    (lambda s: s, np.zeros(8, np.int64), "shuffle.order is not an order of the training split"),
], ids=["negative-step", "fractional-step", "nan-moment", "inf-moment", "nan-weight", "missing-moment", "missing-step",
        "order-out-of-range", "order-repeats"])
def test_a_damaged_checkpoint_is_named_and_not_trusted(tmp_path: Path, edit: Callable, order: np.ndarray, says: str) -> None:
    assert write(tmp_path / "good").read_checkpoint(network=NETWORK) is not None  # the fixture itself is a valid state
    said: list[str] = []
    assert write(tmp_path, edit, order).read_checkpoint(said.append, NETWORK) is None
    assert len(said) == 1, said
    assert says in said[0] and "checkpoint.npz" in said[0] and "not trusted" in said[0] and "does not resume" in said[0]
    assert "diverg" not in said[0]


def test_the_backend_check_refuses_a_nan_moment_too() -> None:
    """The same check guards set_training_state (netspec.protocol), so no path hands a backend NaN moments."""
    from netspec.protocol.model_base import unpack_training_state
    from netspec.protocol.optimizer_state import DamagedState

    state = {**model_state(), "adam.exp_avg.0.bias": np.array([np.nan, 0], np.float32)}
    with pytest.raises(DamagedState, match="adam.exp_avg.0.bias holds 1 non-finite"):
        unpack_training_state(NETWORK, state)
    weights, optimizer, stream = unpack_training_state(NETWORK, model_state())
    assert optimizer is not None and optimizer.step == 3 and stream == (0, 3)


def test_shuffle_first_epoch_shuffles_epoch_one_with_the_same_seeded_stream() -> None:
    """Page's protocol: every epoch shuffled. Written out independently: numpy's RandomState(seed) shuffles
    arange(n) in place once per epoch, from epoch 1 on (the default starts one epoch later)."""
    from netspec.training.trainer import epoch_orders

    rng, order = np.random.RandomState(7), np.arange(10)
    expected = []
    for _ in range(3):
        rng.shuffle(order)
        expected.append(order.copy())
    got = epoch_orders(10, 7, shuffle_first=True)
    for want in expected:
        np.testing.assert_array_equal(next(got), want)
    default = epoch_orders(10, 7)
    np.testing.assert_array_equal(next(default), np.arange(10))
    np.testing.assert_array_equal(next(default), expected[0])


def test_shuffle_first_epoch_is_in_the_run_id_only_when_true() -> None:
    from netspec.runs.run_folder import run_id

    base = ns.Experiment.model_validate({"name": "x", "network": NETWORK.model_dump(), "data": {"source": "synthetic"}})
    on = base.model_copy(update={"train": base.train.model_copy(update={"shuffle_first_epoch": True})})
    off = base.model_copy(update={"train": base.train.model_copy(update={"shuffle_first_epoch": False})})
    assert run_id(off) == run_id(base) != run_id(on)
