"""train --weights: a new run starts from given canonical weights (fine-tuning), their
fingerprint part of the run id; weights that do not fit the network are one line naming the first misfit
tensor. Absent weights leave every run id as it was (tests/spec/test_shipped_run_ids.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import netspec as ns  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.runs.run_folder import WEIGHTS, run_id  # noqa: E402
from netspec.runs.training_run import run_experiment  # noqa: E402
from tests.helpers import tiny_experiment, write_spec  # noqa: E402

TORCH = ns.load_backend("torch")


def _experiment(**train: object) -> ns.Experiment:
    base = tiny_experiment("from_weights", epochs=1)
    data = base.data.model_copy(update={"train_size": 400, "val_size": 100, "test_size": 100})
    return base.model_copy(update={"data": data, "train": base.train.model_copy(update=train)})


def _with_weights(experiment: ns.Experiment, path: Path) -> ns.Experiment:
    return experiment.model_copy(update={"train": experiment.train.model_copy(update={"init_weights": str(path)})})


def test_the_fingerprint_is_in_the_run_id_and_the_path_is_not(tmp_path: Path) -> None:
    experiment = _experiment()
    weights = ns.init_weights(experiment.network, seed=5)
    ns.save_weights(weights, tmp_path / "a.npz")
    ns.save_weights(weights, tmp_path / "b.npz")  # the same tensors under another name
    other = {**weights, "0.weight": weights["0.weight"] * 2}
    ns.save_weights(other, tmp_path / "c.npz")
    plain = run_id(experiment)
    a, b, c = (run_id(_with_weights(experiment, tmp_path / f"{n}.npz")) for n in "abc")
    assert a == b and len({plain, a, c}) == 3


def test_a_run_starts_from_the_weights(tmp_path: Path) -> None:
    """Seed 0 started from seed 7's draw trains exactly as seed 7 does (no dropout, no augmentation: the seed
    only draws the weights), and unlike seed 0 itself."""
    experiment = _experiment(seed=0)
    ns.save_weights(ns.init_weights(experiment.network, seed=7), tmp_path / "w.npz")
    quiet = {"log": lambda line: None, "progress": False, "table": False, "device": "cpu"}
    _, started = run_experiment(_with_weights(experiment, tmp_path / "w.npz"), TORCH, tmp_path / "runs", **quiet)
    _, seven = run_experiment(_experiment(seed=7), TORCH, tmp_path / "runs", **quiet)
    _, zero = run_experiment(experiment, TORCH, tmp_path / "runs", **quiet)
    best = {folder: ns.load_weights(folder / WEIGHTS) for folder in (started, seven, zero)}
    for name in best[seven]:
        np.testing.assert_array_equal(best[started][name], best[seven][name])
    assert not np.array_equal(best[started]["0.weight"], best[zero]["0.weight"])
    spec = json.loads((started / "spec.json").read_text())
    assert spec["train"]["init_weights"] == str(tmp_path / "w.npz")


def test_the_command_takes_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = _experiment()
    ns.save_weights(ns.init_weights(experiment.network, seed=3), tmp_path / "w.npz")
    spec = write_spec(tmp_path, experiment)
    assert main(["train", str(spec), "--weights", str(tmp_path / "w.npz"), "--out", str(tmp_path / "runs"),
                 "--device", "cpu"]) == 0
    (folder,) = (tmp_path / "runs" / "from_weights" / "torch").iterdir()
    assert folder.name == run_id(_with_weights(experiment, tmp_path / "w.npz"))


def test_weights_that_do_not_fit_name_the_first_misfit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = _experiment()
    weights = ns.init_weights(experiment.network)
    spec = write_spec(tmp_path, experiment)
    cases = {
        "missing": ({k: v for k, v in weights.items() if not k.startswith("1.")}, "has no tensor '1.weight' (layer 1, BatchNorm)"),
        "shape": ({**weights, "6.weight": weights["6.weight"][:, :-1]}, "tensor '6.weight' has shape (32, "),
        "extra": ({**weights, "99.weight": np.zeros(3, np.float32)}, "has tensor '99.weight', which the network does not"),
    }
    for name, (tensors, words) in cases.items():
        ns.save_weights(tensors, tmp_path / f"{name}.npz")
        assert main(["train", str(spec), "--weights", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path / "runs")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert words in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("spec.json"))


def test_weights_and_from_are_one_or_the_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, _experiment())
    assert main(["train", str(spec), "--weights", "w.npz", "--from", str(tmp_path), "--out", str(tmp_path / "runs")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "give one of them" in line
