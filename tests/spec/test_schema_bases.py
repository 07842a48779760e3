"""The experiment JSON Schema and bases: a file with a base writes its sections in part (they merge into
the base's), a file without one still needs a whole network; checked with the jsonschema package, an
implementation of JSON Schema independent of netspec."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec.spec.schema import experiment_schema

jsonschema = pytest.importorskip("jsonschema", reason="the schema is checked with jsonschema (a dev dependency)")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "specs" / "schema" / "experiment.schema.json").read_text())
LAYERS = [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]


def valid(data: dict) -> bool:
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(data)


def test_the_checked_in_schema_is_the_one_checked_here() -> None:
    assert SCHEMA == experiment_schema()


def test_a_file_with_a_base_may_write_its_sections_in_part() -> None:
    assert valid(json.loads((ROOT / "specs" / "resnet9_recipe.json").read_text()))
    assert valid({"base": "resnet9.json", "name": "quarter", "network": {"params": {"width": 16}}})
    assert valid({"base": "cnn.json", "network": {"layers": LAYERS}})  # no input_shape: the base's
    assert valid({"base": "cnn.json", "train": {"optimizer": {"weight_decay": 0.01}, "schedule": {"gamma": 0.5}}})
    assert valid({"base": "resnet9.json", "network": {"blocks": {"conv_bn": {"params": ["c"]}}}})


def test_a_file_with_a_base_is_still_checked_field_by_field() -> None:
    assert not valid({"base": "cnn.json", "network": {"params": {"width": "wide"}}})  # not a number
    assert not valid({"base": "cnn.json", "train": {"lr": -1}})
    assert not valid({"base": "cnn.json", "train": {"optimizer": {"momentum": 0.9, "betas": [0.9, 0.99]}}})  # no optimizer has both
    assert not valid({"base": "cnn.json", "network": {"layers": [{"type": "Linear"}]}})  # a list replaces: its layers whole
    assert not valid({"base": "cnn.json", "netwrk": {}})


def test_a_file_without_a_base_still_needs_a_whole_network() -> None:
    import netspec as ns

    assert ns.Experiment.model_validate({"name": "small", "network": {"layers": LAYERS}}).network.input_shape == (3, 32, 32)
    assert valid({"name": "small", "network": {"input_shape": [3, 32, 32], "layers": LAYERS}})
    assert not valid({"name": "small", "network": {"input_shape": [3, 32, 32]}})  # no layers
    assert valid({"name": "small", "network": {"layers": LAYERS}})  # input_shape left to the data, as netspec allows
    assert not valid({"name": "small"})  # no network
    assert not valid({"name": "small", "network": {"input_shape": [4], "layers": LAYERS},
                      "train": {"schedule": {"type": "step"}}})  # step_epochs missing
