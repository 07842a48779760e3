"""Knots whose epoch is "p/q" are that fraction of train.epochs, so `--epochs N` keeps
the recipe's shape (the lr reaches 0 at the last step) and the shipped 24-epoch run its exact lrs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netspec.errors import SpecError
from netspec.spec.experiment import Experiment
from netspec.training.schedules import learning_rates, schedule_beyond_the_run

RECIPE = Path(__file__).resolve().parents[2] / "specs" / "resnet9_recipe.json"
SYNTHETIC = "data.source=synthetic"


def test_the_24_epoch_recipe_keeps_its_per_step_lrs() -> None:
    recipe = Experiment.load(RECIPE, [SYNTHETIC])
    steps = np.arange(24 * 97)
    # Page's schedule by hand: linear 0 -> 0.4 over epochs 0..5, 0.4 -> 0 over 5..24, per step.
    epoch = steps / 97
    expected = np.where(epoch <= 5, 0.4 * epoch / 5, 0.4 * (24 - epoch) / 19)
    assert np.allclose(learning_rates(steps, 97, recipe.train), expected, rtol=0, atol=1e-15)


def test_epochs_reshape_a_fractional_schedule() -> None:
    short = Experiment.load(RECIPE, [SYNTHETIC, "train.epochs=2", "network.params.width=16"])
    assert short.train.schedule.knots == [(0.0, 0.0), (5 * 2 / 24, 1.0), (2.0, 0.0)]
    lrs = learning_rates(np.arange(2 * 10), 10, short.train)
    assert lrs.max() == pytest.approx(0.4, abs=0.05) and lrs[-1] == pytest.approx(0.4 * 0.1 / (2 - 5 / 12))  # epoch 1.9 on the decay to 0 at 2
    assert schedule_beyond_the_run(short.train) is None


@pytest.mark.parametrize("text", ["5/0", "7/6", "a/b", "-1/2", "1/1000000000"])
def test_a_bad_fraction_is_one_line(text: str) -> None:
    with pytest.raises(SpecError, match=r"train.schedule.knots.1: .* is not a fraction of the run"):
        Experiment.load(RECIPE, [SYNTHETIC, f'train.schedule.knots=[[0, 0], ["{text}", 1], ["1/1", 0]]'])


def _small(tmp_path: Path, schedule: dict, epochs: int) -> Path:
    from tests.helpers import tiny_experiment, write_json

    data = tiny_experiment("small", epochs=epochs).model_dump(mode="json")
    data["train"]["schedule"] = schedule
    return write_json(tmp_path / "small.json", data)


def test_a_cosine_warmup_is_a_fraction_of_the_run(tmp_path: Path) -> None:
    spec = _small(tmp_path, {"type": "cosine", "warmup_epochs": "1/5"}, epochs=10)
    assert Experiment.load(spec).train.schedule.warmup_epochs == 2.0
    short = Experiment.load(spec, ["train.epochs=5"])
    assert short.train.schedule.warmup_epochs == 1.0
    steps = np.arange(5 * 4)  # 4 steps an epoch: the warm-up is the first 4, step s at (s + 1) / 4 of train.lr
    lrs = learning_rates(steps, 4, short.train)
    assert np.allclose(lrs[:4], short.train.lr * (steps[:4] + 1) / 4, rtol=0, atol=1e-12)
    assert lrs.max() == pytest.approx(short.train.lr) and np.all(np.diff(lrs[4:]) <= 0)  # then the cosine down


@pytest.mark.parametrize("fraction, epochs, step", [("1/3", 30, 10), ("1/3", 10, 3), ("1/2", 5, 3), ("1/100", 10, 1),
                                                     ("2/2", 7, 7)])
def test_a_step_schedules_step_is_the_nearest_whole_epoch_of_its_fraction(
        fraction: str, epochs: int, step: int, tmp_path: Path) -> None:
    spec = _small(tmp_path, {"type": "step", "step_epochs": fraction, "gamma": 0.5}, epochs=epochs)
    train = Experiment.load(spec).train
    assert train.schedule.step_epochs == step
    lrs = learning_rates(np.arange(epochs), 1, train)  # one step an epoch: lr * gamma ** (epochs done // step)
    assert np.allclose(lrs, train.lr * 0.5 ** (np.arange(epochs) // step), rtol=1e-12, atol=0)


def test_a_bad_warmup_or_step_fraction_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"train.schedule.warmup_epochs: '6/5' is not a fraction of the run"):
        Experiment.load(_small(tmp_path, {"type": "cosine", "warmup_epochs": "6/5"}, epochs=10))
    with pytest.raises(SpecError, match=r"train.schedule.step_epochs: 'x/3' is not a fraction of the run"):
        Experiment.load(_small(tmp_path, {"type": "step", "step_epochs": "x/3"}, epochs=10))
    with pytest.raises(SpecError, match=r"step_epochs: must be greater than 0"):
        Experiment.load(_small(tmp_path, {"type": "step", "step_epochs": "0/3"}, epochs=10))


def test_the_schema_takes_the_fractions() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="the schema is checked with jsonschema (a dev dependency)")
    schema = json.loads((RECIPE.parent / "schema" / "experiment.schema.json").read_text())
    network = {"input_shape": [4], "layers": [{"type": "Linear", "out_features": 2}]}
    for schedule in ({"type": "cosine", "warmup_epochs": "1/5"}, {"type": "step", "step_epochs": "1/3"}):
        assert jsonschema.Draft202012Validator(schema).is_valid({"network": network, "train": {"schedule": schedule}})
    assert not jsonschema.Draft202012Validator(schema).is_valid(
        {"network": network, "train": {"schedule": {"type": "step", "step_epochs": "a third"}}})
