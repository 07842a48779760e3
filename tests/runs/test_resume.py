"""Exact resume, extension, --force, divergence and class checks, end to end.

A run killed with SIGKILL at a random moment and run again with the same command must end bit for bit
where the uninterrupted run ends: history (timings aside), metrics and best_weights.npz bytes, on every
installed backend. The killed run is a real subprocess (`python runner.py ...`); the reference and the
resumed run run in this process, so each backend pays one subprocess start per test.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import netspec as ns
import runner
from netspec.protocol.backend import installed_backends, load_backend
from netspec.errors import DataError, SpecError
from netspec.runs.run_folder import CHECKPOINT, HISTORY_JSON, METRICS, WEIGHTS, RunFolder
from netspec.runs.training_run import run_experiment
from tests.helpers import tiny_experiment, write_spec

REPO = Path(__file__).resolve().parents[2]
BACKENDS = installed_backends()
TIMING = {"seconds", "images_per_s", "epoch_seconds", "median_epoch_seconds", "compile_seconds"}


def small_experiment(epochs: int = 6) -> ns.Experiment:
    """An MLP with BatchNorm and dropout (its RNG must resume too) on tiny synthetic data: cheap to
    compile in jax, and epochs long enough (~0.1 s) to be killed in the middle of one."""
    network = ns.Network(input_shape=(3, 32, 32), layers=[
        ns.Flatten(), ns.Linear(out_features=128, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.25),
        ns.Linear(out_features=10)])
    return tiny_experiment(epochs=epochs).model_copy(update={"network": network})


def train_cli(spec: Path, out: Path, backend: str, *extra: str) -> int:
    return runner.main([str(spec), "--backend", backend, "--out", str(out), "--device", "cpu", *extra])


def start_cli(spec: Path, out: Path, backend: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # one torch thread, as in this process
    return subprocess.Popen([sys.executable, str(REPO / "runner.py"), str(spec), "--backend", backend, "--out", str(out),
                             "--device", "cpu", *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after_checkpoint(process: subprocess.Popen[bytes], checkpoint: Path, rng: random.Random, max_delay: float) -> float:
    """SIGKILL at a random moment after the first checkpoint appears; returns the delay used."""
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "exited"
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    delay = rng.uniform(0.0, max_delay)
    time.sleep(delay)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return delay


def outputs(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any], bytes]:
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in json.loads((folder / HISTORY_JSON).read_text())]
    metrics = {k: v for k, v in json.loads((folder / METRICS).read_text()).items() if k not in TIMING}
    return history, metrics, (folder / WEIGHTS).read_bytes()


# ---- the model's training state through the protocol -------------------------------------------------

@pytest.mark.parametrize("backend_name", BACKENDS)
def test_training_state_round_trip_continues_bit_for_bit(backend_name: str) -> None:
    experiment = small_experiment()
    rng = np.random.RandomState(0)
    x, y = rng.randn(120, 3, 32, 32).astype(np.float32), rng.randint(0, 10, 120)
    batches = np.arange(120).reshape(3, 40)
    backend = load_backend(backend_name)

    def fresh() -> Any:
        model = backend.compile(experiment.network, seed=1, device="cpu")
        model.setup_optimizer(experiment.train)
        return model

    first = fresh()
    data = first.to_device(x, y)
    first.train_steps(data, batches, 0.01)
    state = first.get_training_state()
    assert {"adam.step", "rng.dropout", "adam.exp_avg.1.weight", "adam.exp_avg_sq.5.bias"} <= set(state)
    assert int(state["adam.step"]) == 3 and all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    expected = first.train_steps(data, batches[::-1].copy(), 0.01), first.get_weights()
    second = fresh()
    second.set_training_state(state)
    got = second.train_steps(second.to_device(x, y), batches[::-1].copy(), 0.01), second.get_weights()
    assert got[0] == expected[0]
    for name, value in expected[1].items():
        np.testing.assert_array_equal(got[1][name], value, err_msg=name)


# ---- kill -9 and the same command again ----------------------------------------------------------------

@pytest.mark.parametrize("backend_name", BACKENDS)
def test_killed_run_resumes_bit_identical(backend_name: str, tmp_path: Path) -> None:
    experiment = small_experiment(epochs=6)
    spec = write_spec(tmp_path, experiment)
    assert train_cli(spec, tmp_path / "reference", backend_name) == 0
    reference = RunFolder.of(tmp_path / "reference", experiment, backend_name).path
    killed = RunFolder.of(tmp_path / "killed", experiment, backend_name).path
    rng = random.Random(f"{backend_name}-{time.time_ns()}")
    delay = kill_after_checkpoint(start_cli(spec, tmp_path / "killed", backend_name), killed / CHECKPOINT, rng, 0.3)
    assert not (killed / METRICS).exists(), f"killed {delay:.2f}s after the first checkpoint, yet finished"
    done_before = len(json.loads((killed / HISTORY_JSON).read_text()))
    assert 1 <= done_before <= 6  # 6: killed after the last checkpoint, before metrics.json
    assert train_cli(spec, tmp_path / "killed", backend_name) == 0
    assert outputs(killed) == outputs(reference), f"killed after {done_before} epochs (+{delay:.2f}s)"


def test_raised_epochs_extend_a_finished_run_bit_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short, long = small_experiment(epochs=2), small_experiment(epochs=4)
    spec = write_spec(tmp_path, short)
    assert train_cli(spec, tmp_path / "scratch", "torch", "--epochs", "4") == 0
    assert train_cli(spec, tmp_path / "runs", "torch") == 0
    short_folder = RunFolder.of(tmp_path / "runs", short, "torch").path
    before = {p.name: p.read_bytes() for p in short_folder.iterdir()}
    capsys.readouterr()
    assert train_cli(spec, tmp_path / "runs", "torch", "--epochs", "4") == 0
    assert "extending" in capsys.readouterr().out
    extended = RunFolder.of(tmp_path / "runs", long, "torch").path
    assert outputs(extended) == outputs(RunFolder.of(tmp_path / "scratch", long, "torch").path)
    assert {p.name: p.read_bytes() for p in short_folder.iterdir()} == before  # the finished folder is untouched


def test_killed_force_rerun_leaves_the_finished_run_intact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = small_experiment(epochs=3)
    spec = write_spec(tmp_path, experiment)
    assert train_cli(spec, tmp_path, "torch") == 0
    folder = RunFolder.of(tmp_path, experiment, "torch").path
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    process = start_cli(spec, tmp_path, "torch", "--force")
    deadline = time.monotonic() + 120
    while not list(folder.parent.glob(f"{folder.name}.attempt-*/{CHECKPOINT}")):  # its first epoch is done
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    capsys.readouterr()
    assert train_cli(spec, tmp_path, "torch") == 0
    assert "reusing it" in capsys.readouterr().out
    assert not list(folder.parent.glob(f"{folder.name}.attempt-*"))  # the stale attempt is cleaned up


# ---- divergence ---------------------------------------------------------------------------------------------

def test_divergence_stops_with_exit_3_and_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # train.lr is bounded by the spec's validation now (1e38 is refused), so the torch model's loss is
    # made NaN from the second epoch on: what a diverging run hands the trainer.
    model_type = type(load_backend("torch").compile(small_experiment().network, device="cpu"))
    experiment = small_experiment(epochs=4)
    per_epoch = (experiment.data.train_size - experiment.data.val_size) // experiment.train.batch_size
    real, steps = model_type.train_steps, []

    def diverging(self: Any, data: Any, batches: np.ndarray, lr: float) -> tuple[float, float]:
        loss, acc = real(self, data, batches, lr)
        steps.extend(range(len(batches)))
        return (float("nan") if len(steps) > per_epoch else loss), acc

    monkeypatch.setattr(model_type, "train_steps", diverging)
    spec = write_spec(tmp_path, experiment)
    assert train_cli(spec, tmp_path, "torch") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged" in err[0] and "epoch 2 of 4" in err[0]
    assert len(steps) == 2 * per_epoch  # stopped at the end of the epoch it diverged in
    folder = RunFolder.of(tmp_path, experiment, "torch").path
    strict = lambda name: json.loads((folder / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))
    metrics = strict(METRICS)
    assert metrics["status"] == "diverged" and metrics["epoch"] == 2 and "train_loss" not in metrics
    assert len(strict(HISTORY_JSON)) == 1
    assert train_cli(spec, tmp_path, "torch") == 3  # reused as diverged, not trained again
    assert "recorded as diverged" in capsys.readouterr().err and len(steps) == 2 * per_epoch


# ---- class count and labels, before any training ----------------------------------------------------------

def with_labels(dataset: Any, **changes: Any) -> Any:
    from dataclasses import replace
    return replace(dataset, **changes)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_impossible_class_setups_are_one_line_before_training(backend_name: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from netspec.data import load_dataset

    experiment = small_experiment(epochs=1)
    spec = write_spec(tmp_path, experiment)
    assert train_cli(spec, tmp_path, backend_name, "--set", "network.layers.5.out_features=5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last layer gives 5 outputs, the data has 10 classes" in err[0]
    assert not list(tmp_path.glob("*/*/*/" + CHECKPOINT))
    data = load_dataset(experiment.data)
    label_10 = with_labels(data, train_y=np.where(np.arange(len(data.train_y)) == 7, 10, data.train_y))
    eleven = with_labels(data, classes=[*data.classes, "extra"])
    backend = load_backend(backend_name)
    with pytest.raises(DataError, match=r"train labels: 1 outside \[0, 10\) \(e.g. 10\)"):
        run_experiment(experiment, backend, tmp_path / "a", device="cpu", dataset=label_10, log=lambda line: None)
    with pytest.raises(SpecError, match="last layer gives 10 outputs, the data has 11 classes"):
        run_experiment(experiment, backend, tmp_path / "b", device="cpu", dataset=eleven, log=lambda line: None)
    assert not list(tmp_path.glob("[ab]/*/*/spec.json"))  # nothing written, nothing trained


# ---- the training recipe: optimizer state, schedule position, augmentation stream --------------

RECIPE = {"optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, "lr": 0.05,
          "schedule": {"type": "piecewise_linear", "knots": [[0, 0.2], [1, 1], [3, 0]]}, "label_smoothing": 0.1,
          "param_groups": {"decay_norm": False, "norm_bias_lr_scale": 2.0},
          "augment": {"crop_padding": 2, "pad_mode": "reflect", "flip": True, "cutout": 4}}


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_recipe_run_extended_from_its_checkpoint_is_bit_identical(backend_name: str, tmp_path: Path) -> None:
    """3 epochs straight against 1 epoch, then extended to 3 from that run's checkpoint: the momentum
    buffers, the schedule's position and the augmentation draws all go on exactly."""
    def recipe(epochs: int) -> ns.Experiment:
        base = small_experiment(epochs)
        data = ns.DataConfig(source="synthetic", train_size=300, val_size=60, test_size=60)
        return base.model_copy(update={"data": data, "train": ns.TrainConfig.model_validate({**base.train.model_dump(), **RECIPE})})

    backend, quiet = load_backend(backend_name), (lambda line: None)
    straight = run_experiment(recipe(3), backend, tmp_path / "straight", device="cpu", log=quiet, progress=False)[1]
    run_experiment(recipe(1), backend, tmp_path / "extended", device="cpu", log=quiet, progress=False)
    lines: list[str] = []
    extended = run_experiment(recipe(3), backend, tmp_path / "extended", device="cpu", log=lines.append, progress=False)[1]
    assert any("extending" in line for line in lines)
    state = np.load(extended / CHECKPOINT)
    assert any(k.startswith("model.sgd.momentum_buffer.") for k in state.files)
    assert outputs(extended) == outputs(straight)
