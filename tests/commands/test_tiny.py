"""--tiny / ns.train(tiny=True): train, validation and test shrunk together (netspec/api.py TINY)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import netspec as ns
from netspec.api import TINY, tiny_overrides
from netspec.cli import main

SPEC = "specs/mlp.json"


def test_tiny_shrinks_every_split_and_keeps_no_validation_split_as_none() -> None:
    experiment = ns.Experiment.load(SPEC)
    small = experiment.with_overrides(tiny_overrides(experiment))
    assert (small.data.train_size - small.data.val_size, small.data.val_size, small.data.test_size) == (2000, 500, 500)
    no_val = experiment.with_overrides(["data.val_size=0"])
    shrunk = no_val.with_overrides(tiny_overrides(no_val))
    assert (shrunk.data.train_size, shrunk.data.val_size) == (TINY["train_size"] - TINY["val_size"], 0)
    assert tiny_overrides(experiment, ["data.val_size=0"]) == tiny_overrides(no_val)  # a --set counts as the spec's own
    assert tiny_overrides({"data": {"val_size": 0}}) == ["data.train_size=2000", "data.val_size=0", "data.test_size=500"]
    assert tiny_overrides({"name": "no data section"})[1] == "data.val_size=500"  # the default val_size is not 0



def test_the_cli_flag_runs_the_same_small_experiment_as_the_api(tmp_path) -> None:
    pytest.importorskip("torch")
    assert main(["train", SPEC, "--tiny", "--data", "synthetic", "--epochs", "1", "--out", str(tmp_path)]) == 0
    (folder,) = (tmp_path / "mlp" / "torch").iterdir()
    data = json.loads((folder / "spec.json").read_text())["data"]
    assert (data["train_size"], data["val_size"], data["test_size"]) == (2500, 500, 500)
    result = ns.train(SPEC, tiny=True, epochs=1, overrides=["data.source=synthetic"], out=tmp_path, log=lambda _: None)
    assert result.folder == folder  # the same run id: reused, not trained again


def test_a_run_without_validation_has_no_empty_val_columns_in_history_csv(tmp_path) -> None:
    pytest.importorskip("torch")
    import csv

    result = ns.train(SPEC, tiny=True, epochs=1, overrides=["data.source=synthetic", "data.val_size=0"], out=tmp_path,
                      log=lambda _: None)
    with open(result.folder / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and not any(name.startswith("val_") for name in rows[0])
    assert float(rows[0]["test_acc"]) == result.metrics["test_acc"]
    assert result.experiment.data.val_size == 0 and result.experiment.data.train_size == 2000


def test_the_cli_flag_with_val_size_0_set_keeps_no_validation_split(tmp_path) -> None:
    pytest.importorskip("torch")
    assert main(["train", SPEC, "--tiny", "--data", "synthetic", "--epochs", "1", "--set", "data.val_size=0",
                 "--out", str(tmp_path)]) == 0
    (folder,) = (tmp_path / "mlp" / "torch").iterdir()
    data = json.loads((folder / "spec.json").read_text())["data"]
    assert (data["train_size"], data["val_size"], data["test_size"]) == (2000, 0, 500)


def test_a_base_with_val_size_0_keeps_no_validation_split_in_the_cli_and_the_api(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.helpers import TINY_DATA, tiny_experiment, write_json, write_spec

    small = tiny_experiment("small", epochs=1)
    base = write_spec(tmp_path, small.model_copy(update={"data": TINY_DATA.model_copy(update={"val_size": 0})}))
    child = write_json(tmp_path / "child.json", {"base": base.name, "name": "child", "train": {"batch_size": 100}})
    out = tmp_path / "runs"
    assert main(["train", str(child), "--tiny", "--out", str(out)]) == 0
    (folder,) = (out / "child" / "torch").iterdir()
    data = json.loads((folder / "spec.json").read_text())["data"]
    assert (data["train_size"], data["val_size"], data["test_size"]) == (2000, 0, 500)
    assert ns.train(child, tiny=True, out=out, log=lambda _: None).folder == folder  # the same run, found again
