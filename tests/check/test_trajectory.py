"""The cross-check with dropout on: masks checked against the numpy reference first, the
float64 tier through steps that drop units, and the trajectory mode (`crosscheck --steps N`).

A wrong mask must fail the check as a mask, in the backend that drew it: here jax's masks are made
from a key one bit off (a plausible slip in handing keys on), which changes every mask but nothing else.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.cli import main
from netspec.check.crosscheck import F64_STEPS_RTOL, run_crosscheck
from netspec.spec.experiment import TrainConfig
from netspec.check.trajectory import run_trajectory
from tests.helpers import write_spec

pytestmark = pytest.mark.skipif(not {"torch", "jax"} <= set(installed_backends()), reason="needs torch and jax")

CNN = ns.Network(input_shape=(2, 6, 6), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3), ns.ReLU(), ns.Dropout2d(p=0.5), ns.Flatten(), ns.Dropout(p=0.3),
    ns.Linear(out_features=3)])
MLP = ns.Network(input_shape=(12,), layers=[ns.Linear(out_features=16), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=3)])


@pytest.fixture
def jax_masks_off_by_one_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    import netspec_backends.jax.layers as jax_layers

    original = jax_layers.hashed_keep_mask
    monkeypatch.setattr(jax_layers, "hashed_keep_mask", lambda shape, key, p: original(shape, key ^ 1, p))


def mask_rows(report: object) -> dict[str, float]:
    return {row.name: row.rel for row in report.rows if row.quantity.startswith("dropout mask")}


def test_the_float64_tier_checks_every_mask_then_trains_through_dropout() -> None:
    report = run_crosscheck(CNN, load_backend("torch"), load_backend("jax"), batch_size=6, steps=4, tiers=("float64",),
                            train_config=TrainConfig(lr=1e-2))
    assert report.ok, report.table()
    masks = mask_rows(report)
    assert len(masks) == 4 and set(masks.values()) == {0.0}  # 2 dropout layers x 2 backends
    assert report.rows[0].quantity.startswith("dropout mask") and "dropout on" in report.title


def test_a_wrong_mask_fails_as_a_mask_of_its_backend(jax_masks_off_by_one_bit: None) -> None:
    report = run_crosscheck(MLP, load_backend("torch"), load_backend("jax"), batch_size=6, steps=2, tiers=("float64",))
    assert not report.ok
    masks = mask_rows(report)
    assert all(rel == 0 for name, rel in masks.items() if "(torch)" in name)
    assert all(rel > 0.2 for name, rel in masks.items() if "(jax)" in name), masks


def test_trajectory_prints_each_steps_largest_difference_within_the_float64_tolerance() -> None:
    report = run_trajectory(MLP, load_backend("torch"), load_backend("jax"), steps=6, train_config=TrainConfig(lr=1e-2))
    assert report.ok and [row.step for row in report.rows] == list(range(1, 7))
    assert all(row.rel <= F64_STEPS_RTOL and np.isfinite(row.loss_ref) for row in report.rows)
    assert len({row.loss_ref for row in report.rows}) == 6  # it trains: every step a new loss
    table = report.table()
    assert "dropout mask (jax) layer 2.Dropout: 0 units differ" in table and table.rstrip().splitlines()[-1].startswith("OK")


def test_trajectory_fails_when_the_masks_differ(jax_masks_off_by_one_bit: None) -> None:
    report = run_trajectory(MLP, load_backend("torch"), load_backend("jax"), steps=3, train_config=TrainConfig(lr=1e-2))
    assert not report.ok
    assert max(max(row.rel, row.loss_rel) for row in report.rows) > 1e-3  # other units dropped: other numbers


def test_crosscheck_steps_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, ns.Experiment(name="mlp", network=MLP, data=ns.DataConfig(source="synthetic")))
    assert main(["crosscheck", str(spec), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "trajectory of jax against torch: float64" in out and out.rstrip().splitlines()[-1].startswith("OK")
    assert main(["crosscheck", str(spec), "--steps", "0"]) == 2
