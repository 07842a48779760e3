"""Names instead of indices: `--set` and sweep axis paths name a layer by its `id`
(`network.layers.layer1.kernel_size`) wherever they name it by index, resolved on the spec dict before
validation, so the experiment and its run id are the ones the index gives; an unknown id is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.errors import SpecError
from netspec.runs.run_folder import run_id
from netspec.spec.experiment import Experiment
from netspec.spec.overrides import set_path
from netspec.spec.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[2]
RESNET9 = str(ROOT / "specs" / "resnet9.json")
MLP = str(ROOT / "specs" / "mlp.json")
SYNTHETIC = "data.source=synthetic"


def layer_index(layer_id: str) -> int:
    layers = Experiment.load(RESNET9, [SYNTHETIC]).network.layers  # the flat form (the file uses blocks)
    return next(i for i, layer in enumerate(layers) if layer.id == layer_id)


@pytest.mark.parametrize("layer_id, field, value", [("layer1", "kernel_size", 3), ("layer3", "padding", 1)])
def test_an_id_names_the_layer_its_index_names(layer_id: str, field: str, value: int) -> None:
    index = layer_index(layer_id)
    plain = Experiment.load(RESNET9, [SYNTHETIC])
    by_id = Experiment.load(RESNET9, [SYNTHETIC, f"network.layers.{layer_id}.{field}={value}"])
    by_index = Experiment.load(RESNET9, [SYNTHETIC, f"network.layers.{index}.{field}={value}"])
    assert by_id == by_index
    assert run_id(by_id) == run_id(by_index) != run_id(plain)
    assert getattr(by_id.network.layers[index], field) == value != getattr(plain.network.layers[index], field)
    changed = [i for i, (a, b) in enumerate(zip(plain.network.layers, by_id.network.layers)) if a != b]
    assert changed == [index]
    assert by_id.network.layers[index].id == layer_id  # the id stays on the layer
    assert by_id.model_copy(update={"network": plain.network}) == plain  # nothing outside the layer moved


def test_an_id_works_in_with_overrides_and_for_a_whole_layer() -> None:
    plain = Experiment.load(RESNET9, [SYNTHETIC])
    index = layer_index("layer1")
    assert plain.with_overrides(["network.layers.layer1.kernel_size=3"]) == \
        plain.with_overrides([f"network.layers.{index}.kernel_size=3"])
    layer = {"id": "layer1", "type": "MaxPool2d", "kernel_size": 3}
    data = {"network": {"layers": [{"type": "ReLU"}, {"id": "layer1", "type": "MaxPool2d", "kernel_size": 2}]}}
    assert set_path(data, "network.layers.layer1", layer) == set_path(data, "network.layers.1", layer)


def test_an_index_wins_over_an_id_spelled_like_one() -> None:
    data = {"network": {"layers": [{"type": "ReLU", "id": "1"}, {"type": "ReLU"}]}}
    assert set_path(data, "network.layers.1.x", 5)["network"]["layers"][1] == {"type": "ReLU", "x": 5}


def test_a_sweep_axis_names_a_layer_by_id(tmp_path: Path) -> None:
    index = layer_index("layer1")

    def sweep(path: str, name: str) -> Path:
        file = tmp_path / f"{name}.json"
        file.write_text(json.dumps({"version": 1, "name": name, "base": RESNET9,
                                    "axes": [{"name": "pool", "paths": [path], "values": [2, 3]}]}))
        return file

    _, by_id = load_sweep(sweep("network.layers.layer1.kernel_size", "by_id"), [SYNTHETIC])
    _, by_index = load_sweep(sweep(f"network.layers.{index}.kernel_size", "by_index"), [SYNTHETIC])
    assert [p.experiment for p in by_id] == [p.experiment for p in by_index]
    assert [run_id(p.experiment) for p in by_id] == [run_id(p.experiment) for p in by_index]
    assert [p.experiment.network.layers[index].kernel_size for p in by_id] == [2, 3]
    assert [p.is_base for p in by_id] == [p.is_base for p in by_index] == [True, False]  # 2 is the base's value


def test_an_unknown_id_is_one_line_with_did_you_mean() -> None:
    with pytest.raises(SpecError) as err:
        Experiment.load(RESNET9, ["network.layers.layr1.kernel_size=3"])
    assert str(err.value) == (f"{RESNET9}: --set network.layers.layr1.kernel_size: no layer has id 'layr1' "
                              "(did you mean 'layer1'?); use a layer's index (0-31) or one of its ids: layer1, layer3")
    assert "\n" not in str(err.value)
    with pytest.raises(SpecError) as err:
        Experiment.load(RESNET9, ["network.layers.stem.out_channels=32"])
    assert str(err.value) == (f"{RESNET9}: --set network.layers.stem.out_channels: no layer has id 'stem'; "
                              "use a layer's index (0-31) or one of its ids: layer1, layer3")


def test_an_id_on_layers_without_ids_and_an_index_out_of_range() -> None:
    with pytest.raises(SpecError) as err:
        Experiment.load(MLP, ["network.layers.hidden.p=0.1"])
    assert str(err.value) == (f"{MLP}: --set network.layers.hidden.p: no layer has id 'hidden'; use a layer's index "
                              "(0-4) (none of these layers has an id)")
    with pytest.raises(SpecError, match="'network.layers.40' needs an index below 32$"):
        Experiment.load(RESNET9, ["network.layers.40.p=0.1"])
    with pytest.raises(SpecError, match="'network.input_shape.x' needs an index below 3$"):
        Experiment.load(RESNET9, ["network.input_shape.x=1"])  # only layers are named by id


def test_many_ids_are_listed_a_few() -> None:
    data = {"network": {"layers": [{"type": "ReLU", "id": f"block{i}"} for i in range(10)]}}
    with pytest.raises(SpecError) as err:
        set_path(data, "network.layers.blok3.x", 1, source="s.json")
    assert str(err.value) == ("s.json: --set network.layers.blok3.x: no layer has id 'blok3' (did you mean 'block3'?); "
                              "use a layer's index (0-9) or one of its ids: block0, block1, block2, block3, block4, "
                              "block5, ...")


def test_the_cli_takes_an_id_and_refuses_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", RESNET9, "--set", "network.layers.layer1.kernel_size=4"]) == 0
    assert "MaxPool2d(kernel_size=4)" in capsys.readouterr().out
    assert main(["summary", RESNET9, "--set", "network.layers.layr1.kernel_size=4"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err == [f"error: {RESNET9}: --set network.layers.layr1.kernel_size: no layer has id 'layr1' (did you mean "
                   "'layer1'?); use a layer's index (0-31) or one of its ids: layer1, layer3"]


def test_an_id_set_on_the_cli_reaches_the_jax_model(tmp_path: Path) -> None:
    """`--set network.layers.<id>.out_features` on a jax run: the layer jax builds and trains has the new size
    (its weights' shapes, written by hand: 24 x 3072 for a Linear of 24 on a flattened 3x32x32 image)."""
    pytest.importorskip("jax")
    import numpy as np

    from netspec.protocol.backend import load_backend
    from netspec.runs.run_folder import WEIGHTS
    from netspec.spec.network import Network

    spec = tmp_path / "ids.json"
    spec.write_text(json.dumps({"name": "ids", "network": {"input_shape": [3, 32, 32], "layers": [
        {"type": "Flatten"}, {"type": "Linear", "out_features": 16, "id": "hidden"}, {"type": "ReLU"},
        {"type": "Linear", "out_features": 10, "id": "head"}]},
        "data": {"source": "synthetic", "train_size": 200, "val_size": 0, "test_size": 100},
        "train": {"epochs": 1, "batch_size": 50}}))
    out = tmp_path / "runs"
    assert main(["train", str(spec), "--backend", "jax", "--set", "network.layers.hidden.out_features=24",
                 "--out", str(out)]) == 0
    (folder,) = (out / "ids" / "jax").iterdir()
    expected = {"1.weight": (24, 3072), "1.bias": (24,), "3.weight": (10, 24), "3.bias": (10,)}
    with np.load(folder / WEIGHTS) as trained:  # the weights the jax run trained
        assert {name: trained[name].shape for name in trained.files} == expected
    network = Network.model_validate(json.loads((folder / "spec.json").read_text())["network"])
    model = load_backend("jax").compile(network, seed=0, device="cpu")
    assert {name: w.shape for name, w in model.get_weights().items()} == expected
    assert model.forward(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
