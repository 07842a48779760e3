"""Every shipped spec keeps its run id: new spec syntax (blocks, parameters, bases) expands at load into
the flat form that is hashed, so rewriting a file with it must not move the id, and neither may any
other change to loading or to the identity. The ids below were computed at commit f9d0c8a, before any
such syntax existed; a change to one of them orphans every finished run of that spec."""
from __future__ import annotations

from pathlib import Path

import pytest

from netspec.runs.run_folder import run_id
from netspec.spec.experiment import Experiment

SPECS = Path(__file__).resolve().parents[2] / "specs"

RUN_IDS = {  # with data.source=synthetic, so no image copy is needed to compute them
    "cnn.json": "84894fb946",
    "cnn_dropout.json": "05dee4aab0",
    "cnn_no_bn.json": "abb6ce621f",
    "cnn_no_dropout.json": "8f2e5164bf",
    "mlp.json": "f667cfe7b9",
    "mlp_no_bn.json": "295a5d863e",
    "mlp_no_dropout.json": "67257815a0",
    "resnet9.json": "c810e10645",
    "resnet9_avg_pool.json": "89e534844e",
    "resnet9_no_residual.json": "ba1732a241",
    "resnet9_no_scale.json": "fabb280a60",
    "resnet9_recipe.json": "16abc38e59",
}


@pytest.mark.parametrize("name", sorted(RUN_IDS))
def test_shipped_spec_keeps_its_run_id(name: str) -> None:
    experiment = Experiment.load(SPECS / name, ["data.source=synthetic"])
    assert run_id(experiment) == RUN_IDS[name]
