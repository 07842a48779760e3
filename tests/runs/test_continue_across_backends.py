"""A run started on one backend continues on the other: `train --from RUN_DIR`.

The checkpoint holds nothing framework-specific (weights, the optimizer's moments, the schedule, the
shuffle's numpy state and the dropout stream as [seed, step]), so a small MLP with dropout trained 2
epochs on one backend and continued to 4 on the other ends, in float64, where the same run trained 4
epochs on the second backend alone ends: every tensor within the float64 cross-check's after-steps
tolerance (netspec.check.crosscheck.F64_STEPS_RTOL), and the same accuracies. The reference run is
independent of the code under test here: it never reads a checkpoint of the other backend.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.check.crosscheck import F64_STEPS_RTOL
from netspec.errors import SetupError, SpecError
from netspec.data import load_dataset
from netspec.runs.run_folder import RunFolder, Trajectory, run_id
from netspec.training.trainer import TrainerState, fit
from netspec.runs.training_run import run_experiment

pytestmark = pytest.mark.skipif(not {"torch", "jax"} <= set(installed_backends()), reason="needs torch and jax")

DATA = ns.DataConfig(source="synthetic", train_size=300, val_size=100, test_size=100)
quiet = lambda line: None


def experiment(epochs: int) -> ns.Experiment:
    network = ns.Network(input_shape=(3, 32, 32), layers=[
        ns.Flatten(), ns.Linear(out_features=16, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=10)])
    train = ns.TrainConfig(lr=1e-2, batch_size=50, epochs=epochs, eval_batch_size=100)
    return ns.Experiment(name="handover", network=network, data=DATA, train=train)


def fit_float64(backend: str, epochs: int, start: Optional[TrainerState] = None) -> TrainerState:
    """The trainer's run of experiment(epochs) in float64 (a spec trains in float32: the trainer is
    called directly), from `start`; the state after its last epoch."""
    exp = experiment(epochs)
    model = load_backend(backend).compile(exp.network, seed=exp.train.seed, device="cpu", precision="float64")
    states: list[TrainerState] = []
    fit(model, exp, load_dataset(DATA), on_epoch=lambda state, best: states.append(state), log=quiet, progress=False, state=start)
    return states[-1]


@pytest.mark.parametrize("first,second", [("torch", "jax"), ("jax", "torch")])
def test_in_float64_a_run_stopped_on_one_backend_ends_on_the_other_where_the_other_alone_ends(first: str, second: str,
                                                                                               tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.write_checkpoint(fit_float64(first, 2), Trajectory.of(experiment(2)))  # through the checkpoint file
    handed = folder.read_checkpoint()
    assert handed is not None and handed.state.epoch == 2
    ours, reference = fit_float64(second, 4, handed.state), fit_float64(second, 4)
    assert ours.model["rng.dropout"].tolist() == reference.model["rng.dropout"].tolist() == [0, 4 * 200 // 50]  # 300 images less the 100 of validation
    assert set(ours.model) == set(reference.model)
    for name, value in reference.model.items():
        if value.dtype.kind == "f":
            scale = max(float(np.max(np.abs(value))), 1e-300)
            assert float(np.max(np.abs(ours.model[name] - value))) / scale <= F64_STEPS_RTOL, name
        else:
            np.testing.assert_array_equal(ours.model[name], value, err_msg=name)
    for a, b in zip(ours.history, reference.history):
        assert abs(a.train_loss - b.train_loss) <= F64_STEPS_RTOL * abs(b.train_loss)
        assert (a.train_acc, a.val_acc) == (b.train_acc, b.val_acc)


def test_train_from_continues_a_run_folder_of_the_other_backend_in_a_folder_that_says_so(tmp_path: Path) -> None:
    _, source = run_experiment(experiment(1), load_backend("torch"), tmp_path, device="cpu", log=quiet, table=False)
    metrics, continued = run_experiment(experiment(2), load_backend("jax"), tmp_path, device="cpu", log=quiet,
                                        table=False, source=source)
    assert continued.name == f"{run_id(experiment(2))}-from-torch-{source.name}"
    assert metrics["continued_from"] == {"folder": str(source.resolve()), "backend": "torch", "run_id": source.name, "epoch": 1}
    assert json.loads((continued / "env.json").read_text())["continued_from"]["run_id"] == source.name
    history = json.loads((continued / "history.json").read_text())
    assert len(history) == 2 and history[0] == json.loads((source / "history.json").read_text())[0]  # epoch 1: the source's
    checkpoint = RunFolder(continued).read_checkpoint()
    assert checkpoint is not None and checkpoint.state.model["rng.dropout"].tolist() == [0, 2 * 200 // 50]


def test_from_refuses_a_folder_without_a_checkpoint_or_of_another_experiment(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="no such run folder"):
        run_experiment(experiment(2), load_backend("jax"), tmp_path, device="cpu", log=quiet, source=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetupError, match="no checkpoint to continue"):
        run_experiment(experiment(2), load_backend("jax"), tmp_path, device="cpu", log=quiet, source=tmp_path / "empty")
    _, source = run_experiment(experiment(1), load_backend("torch"), tmp_path, device="cpu", log=quiet, table=False)
    other = experiment(2).model_copy(update={"train": experiment(2).train.model_copy(update={"lr": 5e-3})})
    with pytest.raises(SpecError, match="a run of another experiment"):
        run_experiment(other, load_backend("jax"), tmp_path, device="cpu", log=quiet, source=source)


def test_a_checkpoint_with_an_older_netspecs_framework_rng_bytes_is_not_resumed(tmp_path: Path) -> None:
    _, folder = run_experiment(experiment(1), load_backend("torch"), tmp_path, device="cpu", log=quiet, table=False)
    checkpoint = RunFolder(folder).read_checkpoint()
    assert checkpoint is not None
    state = checkpoint.state
    state.model = {**state.model, "rng.dropout": np.zeros(5056, np.uint8)}  # torch.Generator.get_state() bytes
    RunFolder(folder).write_checkpoint(state, Trajectory(checkpoint.trajectory, checkpoint.epochs))
    lines: list[str] = []
    assert RunFolder(folder).read_checkpoint(lines.append) is None
    assert len(lines) == 1 and "framework's own RNG bytes" in lines[0] and "does not resume from it" in lines[0]
