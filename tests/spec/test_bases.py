"""An experiment file names a base (relative to itself) and overrides sections of it;
objects merge key by key, a changed "type" replaces; a chain is bounded and a cycle is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec.errors import SpecError
from netspec.runs.run_folder import run_id
from netspec.spec.experiment import Experiment

SPECS = Path(__file__).resolve().parents[2] / "specs"
MLP = {"name": "mlp", "network": {"input_shape": [4], "layers": [{"type": "Linear", "out_features": 3}]},
       "data": {"source": "synthetic"}, "train": {"lr": 0.01, "optimizer": {"type": "adam", "betas": [0.8, 0.9]}}}


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_base_is_merged_under_the_file(tmp_path: Path) -> None:
    write(tmp_path / "family" / "mlp.json", MLP)
    child = write(tmp_path / "child.json", {"base": "family/mlp.json", "name": "child", "train": {"epochs": 3}})
    merged = Experiment.load(child)
    assert (merged.name, merged.train.epochs, merged.train.lr, merged.train.optimizer.betas) == ("child", 3, 0.01, (0.8, 0.9))
    sgd = write(tmp_path / "sgd.json", {"base": "family/mlp.json", "train": {"optimizer": {"type": "sgd"}}})
    assert Experiment.load(sgd).train.optimizer.type == "sgd"  # a new type keeps none of Adam's fields


def test_the_shipped_recipe_equals_its_flat_form() -> None:
    recipe = Experiment.load(SPECS / "resnet9_recipe.json", ["data.source=synthetic"])
    assert run_id(recipe) == "16abc38e59"
    assert recipe.network == Experiment.load(SPECS / "resnet9.json").network
    assert recipe.train.schedule.knots == [(0.0, 0.0), (5.0, 1.0), (24.0, 0.0)]


def test_a_cycle_of_bases_is_one_line(tmp_path: Path) -> None:
    write(tmp_path / "a.json", {"base": "b.json", "train": {"epochs": 1}})
    write(tmp_path / "b.json", {"base": "a.json", "train": {"epochs": 2}})
    with pytest.raises(SpecError, match=r"cycle of bases \(a.json -> b.json -> a.json\)"):
        Experiment.load(tmp_path / "a.json")


def test_a_long_chain_and_a_missing_base_are_one_line(tmp_path: Path) -> None:
    write(tmp_path / "c0.json", MLP)
    for i in range(1, 12):
        write(tmp_path / f"c{i}.json", {"base": f"c{i - 1}.json", "train": {"epochs": i}})
    with pytest.raises(SpecError, match="more than 8 bases"):
        Experiment.load(tmp_path / "c11.json")
    assert Experiment.load(tmp_path / "c5.json").train.epochs == 5
    write(tmp_path / "lost.json", {"base": "nowhere.json", "train": {"epochs": 1}})
    with pytest.raises(SpecError, match=r"lost.json: base 'nowhere.json' \(resolved to"):
        Experiment.load(tmp_path / "lost.json")
