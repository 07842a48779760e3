"""Knots whose epoch is "p/q" are that fraction of train.epochs, so `--epochs N` keeps
the recipe's shape (the lr reaches 0 at the last step) and the shipped 24-epoch run its exact lrs."""
from __future__ import annotations

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
