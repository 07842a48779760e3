"""The learning rate per step (netspec/training/schedules.py) against independent references: values worked out by
hand for Page's piecewise linear schedule and the cosine, and PyTorch's own schedulers stepped once per
optimizer step for onecycle and step."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import netspec as ns
from netspec.training.schedules import learning_rates

STEPS_PER_EPOCH = 10


def config(schedule: dict, lr: float = 0.4, epochs: int = 24) -> ns.TrainConfig:
    return ns.TrainConfig.model_validate({"lr": lr, "epochs": epochs, "schedule": schedule})


def test_pages_piecewise_linear_schedule_at_known_steps() -> None:
    # 0 -> 0.4 at epoch 5 -> 0 at epoch 24 (davidcpage/cifar10-fast dawn.py), evaluated per step.
    cfg = config({"type": "piecewise_linear", "knots": [[0, 0], [5, 1], [24, 0]]})
    steps = np.array([0, 1, 25, 50, 51, 145, 239])
    expected = [0.0, 0.4 * 0.1 / 5, 0.4 * 2.5 / 5, 0.4, 0.4 * (1 - 0.1 / 19), 0.4 * 0.5, 0.4 * 0.1 / 19]
    np.testing.assert_allclose(learning_rates(steps, STEPS_PER_EPOCH, cfg), expected, rtol=1e-12, atol=1e-15)


def test_piecewise_linear_holds_its_end_values_outside_the_knots() -> None:
    cfg = config({"type": "piecewise_linear", "knots": [[1, 0.5], [2, 1.0]]}, lr=1.0, epochs=4)
    np.testing.assert_allclose(learning_rates(np.array([0, 5, 15, 39]), STEPS_PER_EPOCH, cfg), [0.5, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("pct_start", [0.3, 0.25])
def test_onecycle_is_torchs_one_cycle_lr_stepped_per_step(anneal: str, pct_start: float) -> None:
    epochs, lr = 3, 0.1
    cfg = config({"type": "onecycle", "pct_start": pct_start, "anneal": anneal, "div_factor": 10, "final_div_factor": 100},
                 lr=lr, epochs=epochs)
    total = epochs * STEPS_PER_EPOCH
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=pct_start,
                                                    anneal_strategy=anneal, div_factor=10, final_div_factor=100,
                                                    cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(learning_rates(np.arange(total), STEPS_PER_EPOCH, cfg), expected, rtol=1e-12)


def test_step_is_torchs_step_lr_stepped_per_epoch() -> None:
    cfg = config({"type": "step", "step_epochs": 2, "gamma": 0.5}, lr=0.2, epochs=7)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    expected = []
    for _ in range(7):
        expected += [optimizer.param_groups[0]["lr"]] * STEPS_PER_EPOCH
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(learning_rates(np.arange(70), STEPS_PER_EPOCH, cfg), expected, rtol=1e-12)


def test_cosine_with_linear_warmup_at_known_steps() -> None:
    # 4 epochs of 10 steps, 1 epoch of warm-up: steps 0..9 at (s+1)/10, then a half cosine over steps 10..39.
    cfg = config({"type": "cosine", "warmup_epochs": 1, "min_factor": 0.1}, lr=2.0, epochs=4)
    lrs = learning_rates(np.array([0, 4, 9, 10, 39, 24]), STEPS_PER_EPOCH, cfg)
    mid = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 14 / 29))
    np.testing.assert_allclose(lrs, [0.2, 1.0, 2.0, 2.0, 0.2, 2.0 * mid], rtol=1e-12)


@pytest.mark.parametrize("schedule", [{"type": "lab"}, {"type": "constant"}])
def test_lab_and_constant_are_the_lr_itself(schedule: dict) -> None:
    cfg = config(schedule, lr=0.003)
    lrs = learning_rates(np.arange(50), STEPS_PER_EPOCH, cfg)
    assert lrs.dtype == np.float64 and (lrs == 0.003).all()
    assert (learning_rates(np.arange(5), STEPS_PER_EPOCH, cfg, lr=0.001) == 0.001).all()  # the lab's decayed lr


def test_a_schedule_spanning_the_run_makes_each_length_its_own_trajectory() -> None:
    from netspec.runs.run_folder import trajectory_id

    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])

    def trajectory(schedule: dict, epochs: int) -> str:
        train = ns.TrainConfig.model_validate({"epochs": epochs, "schedule": schedule})
        return trajectory_id(ns.Experiment(network=network, data=ns.DataConfig(source="synthetic"), train=train))

    piecewise = {"type": "piecewise_linear", "knots": [[0, 0], [2, 1]]}
    assert trajectory(piecewise, 3) == trajectory(piecewise, 5)  # knots in epochs: a prefix
    for spanning in ({"type": "onecycle"}, {"type": "cosine"}):
        assert trajectory(spanning, 3) != trajectory(spanning, 5)


def test_a_schedule_past_the_run_says_what_the_run_does_instead() -> None:
    """The ResNet-9 recipe's knots [0, 5, 24] run with --epochs 2: the lr ramps to 2/5 of its peak and
    never decays; one line says so (and a schedule that fits says nothing)."""
    from netspec.spec.experiment import Experiment
    from netspec.training.schedules import schedule_beyond_the_run

    spec = str(Path(__file__).resolve().parents[2] / "specs" / "resnet9_recipe.json")
    recipe = Experiment.load(spec, ["data.source=synthetic"])
    assert schedule_beyond_the_run(recipe.train) is None
    in_epochs = "train.schedule.knots=[[0, 0], [5, 1], [24, 0]]"  # the shipped recipe's knots follow the run
    short = Experiment.load(spec, ["data.source=synthetic", "train.epochs=2", in_epochs])
    line = schedule_beyond_the_run(short.train)
    assert line is not None and "\n" not in line
    assert "reach epoch 24" in line and "2 epochs" in line and "factor 0.4 " in line and "(0.16)" in line
    step = Experiment.load(spec, ["data.source=synthetic", "train.epochs=3",
                                  'train.schedule={"type": "step", "step_epochs": 3}'])
    assert "never steps" in schedule_beyond_the_run(step.train)
