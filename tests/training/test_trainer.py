"""The common trainer and the runner's main job, end to end on synthetic data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
import runner
from netspec.runs import run_folder
from netspec.runs.records import summarize
from netspec.training.history import EpochRecord
from netspec.training.schedules import LabLrRule
from netspec.training.trainer import epoch_orders, shape_inputs
from tests.helpers import tiny_experiment, write_spec

RUN_FILES = ["metrics.json", "history.json", "history.csv", "acc.png", "loss.png", "best_weights.npz", "spec.json", "env.json"]


def run_dir(root: Path, experiment: ns.Experiment, backend: str) -> Path:
    return run_folder.run_dir(root, experiment, backend)


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ns.Experiment]:
    """One finished CLI run on the torch backend, shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    experiment = tiny_experiment()
    spec = write_spec(root, experiment)
    assert runner.main([str(spec), "--backend", "torch", "--out", str(root), "--device", "cpu"]) == 0
    return root, experiment


def test_run_writes_every_file_and_learns(torch_run: tuple[Path, ns.Experiment]) -> None:
    root, experiment = torch_run
    directory = run_dir(root, experiment, "torch")
    for name in RUN_FILES:
        assert (directory / name).is_file(), name
    metrics = json.loads((directory / "metrics.json").read_text())
    assert set(["train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc", "test_loss", "test_acc"]) <= set(metrics)
    assert metrics["test_acc"] > 0.5 and metrics["best_val_acc"] > 0.5  # chance is 0.1
    history = json.loads((directory / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and len(metrics["epoch_seconds"]) == 3
    assert ns.Experiment.load(directory / "spec.json") == experiment
    assert json.loads((directory / "env.json").read_text())["backend"] == "torch"
    assert set(ns.load_weights(directory / "best_weights.npz", experiment.network)) == set(experiment.network.param_infos())


def test_test_set_is_evaluated_at_each_new_best_validation(torch_run: tuple[Path, ns.Experiment]) -> None:
    root, experiment = torch_run
    history = json.loads((run_dir(root, experiment, "torch") / "history.json").read_text())
    best = -1.0
    for row in history:
        assert (row["test_acc"] is not None) == (row["val_acc"] >= best)
        best = max(best, row["val_acc"])
    metrics = json.loads((run_dir(root, experiment, "torch") / "metrics.json").read_text())
    last_best = [r for r in history if r["test_acc"] is not None][-1]
    assert metrics["test_acc"] == last_best["test_acc"] and metrics["best_val_acc"] == last_best["val_acc"]


def test_a_finished_run_is_reused_and_force_trains_again(torch_run: tuple[Path, ns.Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    root, experiment = torch_run
    spec = root / f"{experiment.name}.json"
    metrics = run_dir(root, experiment, "torch") / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert runner.main([str(spec), "--out", str(root), "--device", "cpu"]) == 0
    assert "reusing it" in capsys.readouterr().out and metrics.stat().st_mtime_ns == stamp


def test_same_seed_gives_the_same_history(torch_run: tuple[Path, ns.Experiment], tmp_path: Path) -> None:
    root, experiment = torch_run
    spec = root / f"{experiment.name}.json"
    assert runner.main([str(spec), "--out", str(tmp_path), "--device", "cpu"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]
    first = json.loads((run_dir(root, experiment, "torch") / "history.json").read_text())
    again = json.loads((run_dir(tmp_path, experiment, "torch") / "history.json").read_text())
    assert strip(first) == strip(again)


def test_epoch_orders_follow_the_lab_protocol() -> None:
    orders = epoch_orders(10, seed=42)
    first, second, third = next(orders), next(orders), next(orders)
    np.testing.assert_array_equal(first, np.arange(10))  # the first epoch runs in file order
    rng = np.random.RandomState(42)
    expected = np.arange(10)
    rng.shuffle(expected)
    np.testing.assert_array_equal(second, expected)  # then an in-place shuffle after every epoch
    rng.shuffle(expected)
    np.testing.assert_array_equal(third, expected)


def test_lr_schedule_decays_when_train_loss_exceeds_the_last_three() -> None:
    schedule = LabLrRule(1.0, 0.5)
    for loss in (3.0, 2.0, 1.0, 2.5, 4.0):
        schedule.after_epoch(loss)
    assert schedule.lr == 0.5  # only 4.0 > max(2.0, 1.0, 2.5)
    off = LabLrRule(1.0, 1.0)
    for loss in (1.0, 1.0, 1.0, 9.0):
        off.after_epoch(loss)
    assert off.lr == 1.0


def test_summary_takes_the_last_equal_best() -> None:
    rec = lambda e, v, t: EpochRecord(e, 1.0, 0.5, 1.0, v, 1e-3, 1.0, 1.0, 1.0 if t else None, t)
    metrics = summarize([rec(1, 0.5, 0.4), rec(2, 0.6, 0.5), rec(3, 0.6, 0.55), rec(4, 0.55, None)])
    assert metrics["best_val_acc"] == 0.6 and metrics["test_acc"] == 0.55 and metrics["val_acc"] == 0.55


def test_input_shape_that_does_not_fit_the_images_is_a_clear_error() -> None:
    assert shape_inputs(np.zeros((2, 3, 4, 4)), (48,), "train").shape == (2, 48)
    with pytest.raises(ns.SpecError, match="does not fit the train images"):
        shape_inputs(np.zeros((2, 3, 4, 4)), (3, 8, 8), "train")


def test_unknown_backend_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment())
    assert runner.main([str(spec), "--backend", "tensorflow"]) == 2
    assert "unknown backend 'tensorflow'" in capsys.readouterr().err


# Both backends from the same canonical weights on the same batch order, dropout off: the histories
# agree up to float32 rounding, which a few epochs of Adam amplify. Accuracies may differ by a few
# examples whose logits are near a tie.
HISTORY_LOSS_TOLERANCE = 5e-3
HISTORY_ACC_TOLERANCE = 0.02


def test_jax_run_gives_the_torch_history_with_dropout_off(torch_run: tuple[Path, ns.Experiment]) -> None:
    root, experiment = torch_run
    assert all(layer.p == 0.0 for layer in experiment.network.layers if layer.type.startswith("Dropout"))
    spec = root / f"{experiment.name}.json"
    assert runner.main([str(spec), "--backend", "jax", "--out", str(root), "--device", "cpu"]) == 0
    directory = run_dir(root, experiment, "jax")
    for name in RUN_FILES:
        assert (directory / name).is_file(), name
    torch_history = json.loads((run_dir(root, experiment, "torch") / "history.json").read_text())
    jax_history = json.loads((directory / "history.json").read_text())
    assert len(jax_history) == len(torch_history)
    for t, j in zip(torch_history, jax_history):
        for key in ("train_loss", "val_loss"):
            assert abs(t[key] - j[key]) < HISTORY_LOSS_TOLERANCE, (t["epoch"], key, t[key], j[key])
        for key in ("train_acc", "val_acc"):
            assert abs(t[key] - j[key]) <= HISTORY_ACC_TOLERANCE, (t["epoch"], key, t[key], j[key])
    assert runner.main(["report", str(root)]) == 0
    report = (root / "report.md").read_text()
    assert "| result | torch | jax | jax - torch |" in report
