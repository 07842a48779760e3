"""The network meets the data: its input shape against the images' shape and its outputs
against the class count, one line naming both sides and what to change, before any run folder exists;
and a run folder whose preprocess.json does not fit its network (was an IndexError)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.data.network_fit import check_network_meets_data
from netspec.errors import DataError, SpecError

CIFAR100 = [f"c{i}" for i in range(100)]


def net(input_shape: tuple[int, ...], outputs: int) -> ns.Network:
    return ns.Network(input_shape=input_shape, layers=[ns.Flatten(), ns.Linear(out_features=outputs)])


def test_the_output_size_against_the_class_count_is_the_issues_line() -> None:
    with pytest.raises(SpecError) as err:
        check_network_meets_data(net((3, 32, 32), 10), (3, 32, 32), CIFAR100, "cifar100")
    assert str(err.value) == ("network: last layer gives 10 outputs, the data has 100 classes (c0, c1, c2, c3, c4, c5, "
                              "c6, c7, c8, c9, c10, c11, ...); set the last Linear's out_features to 100")


@pytest.mark.parametrize("input_shape, fits", [((1, 28, 28), True), ((784,), True), ((3, 28, 28), False),
                                               ((1, 32, 32), False), ((3072,), False)])
def test_the_input_shape_against_the_images(input_shape: tuple[int, ...], fits: bool) -> None:
    network = net(input_shape, 10)
    if fits:
        check_network_meets_data(network, (1, 28, 28), [str(i) for i in range(10)])
        return
    with pytest.raises(SpecError) as err:
        check_network_meets_data(network, (1, 28, 28), [str(i) for i in range(10)], "mnist")
    message = str(err.value)
    assert f"network: input_shape {list(input_shape)} does not fit the data's 1x28x28 images (mnist)" in message
    assert "set network.input_shape to [1, 28, 28]" in message and "\n" not in message


def test_training_a_misfit_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netspec import cli

    spec = tmp_path / "grey.json"
    experiment = ns.Experiment(name="grey", network=net((1, 32, 32), 10),
                               data=ns.DataConfig(source="synthetic", train_size=100, val_size=20, test_size=20))
    experiment.save(spec, None)
    assert cli.main([str(spec), "--backend", "torch", "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input_shape [1, 32, 32] does not fit the data's 3x32x32 images" in err[0]
    assert not list((tmp_path / "runs").glob("**/spec.json"))


def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from netspec.protocol.backend import load_backend
    from netspec.runs.training_run import run_experiment

    monkeypatch.setenv("NETSPEC_CACHE", str(tmp_path / "cache"))
    experiment = ns.Experiment(name="tiny", network=net((3, 32, 32), 10), train=ns.TrainConfig(epochs=1, batch_size=20),
                               data=ns.DataConfig(source="synthetic", train_size=100, val_size=20, test_size=20))
    _, folder = run_experiment(experiment, load_backend("torch"), tmp_path / "runs", device="cpu",
                               log=lambda line: None, progress=False, table=False)
    return folder


def test_a_preprocess_json_of_3_classes_for_10_outputs_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from netspec import cli

    folder = finished_run(tmp_path, monkeypatch)
    path = folder / "preprocess.json"
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "classes": ["a", "b", "c"]}))
    assert cli.main(["evaluate", str(folder), "--backend", "torch", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names 3 classes but the network gives 10 outputs; delete it" in err[0]
    path.write_text(json.dumps({**content, "image_shape": [1, 28, 28], "shift": [0.0], "scale": [1.0]}))
    assert cli.main(["evaluate", str(folder), "--backend", "torch", "--device", "cpu"]) == 2
    assert "says the images are 1x28x28 but the network takes [3, 32, 32]" in capsys.readouterr().err
    assert not (folder / "evaluation").exists()


def test_predict_refuses_a_16_bit_colour_png_and_scales_16_bit_grey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from netspec.deploy.inference import predict
    from tests.data.test_image_folders import rgb_48_bit

    folder = finished_run(tmp_path, monkeypatch)
    colour = tmp_path / "colour16.png"
    colour.write_bytes(rgb_48_bit())
    with pytest.raises(DataError, match="colour16.png has 16 bits per colour channel"):
        predict(folder, "torch", [colour], device="cpu", resize=True, log=lambda line: None)
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(grey)
    (p,) = predict(folder, "torch", [grey], device="cpu", log=lambda line: None)
    assert "16-bit samples scaled to 8 bits" in p.line() and abs(p.probabilities.sum() - 1) < 1e-6


@pytest.mark.parametrize("data, shape", [({"source": "synthetic", "train_size": 100, "val_size": 20, "test_size": 20}, (3, 32, 32)),
                                         ({}, (3, 32, 32)),
                                         ({"dir": "photos", "image_size": [16, 20], "channels": 1}, (1, 16, 20))])
def test_input_shape_left_to_the_data_gives_the_written_out_run_id(data: dict, shape: tuple[int, ...]) -> None:
    from netspec.runs.identity import run_identity

    layers = [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]
    left = ns.Experiment.model_validate({"network": {"layers": layers}, "data": data})
    written = ns.Experiment.model_validate({"network": {"input_shape": list(shape), "layers": layers}, "data": data})
    assert left == written and tuple(left.network.input_shape) == shape
    if "dir" not in data:  # (a tree's identity reads its files)
        assert run_identity(left) == run_identity(written)


@pytest.mark.parametrize("data, says", [({"source": "mnist"}, "'mnist' has its shape in its info"),
                                        ({"dir": "photos", "image_size": [16, 16]}, "both data.channels and data.image_size")])
def test_input_shape_left_to_data_that_does_not_state_it_is_one_line(tmp_path: Path, data: dict, says: str) -> None:
    path = tmp_path / "left.json"
    path.write_text(json.dumps({"network": {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 10}]},
                                "data": {**data, "normalize": "per_channel"}}))
    with pytest.raises(SpecError) as err:
        ns.Experiment.load(path)
    assert "network.input_shape is left to the data" in str(err.value) and says in str(err.value)
    assert "\n" not in str(err.value)


def test_the_shipped_cnn_without_its_input_shape_keeps_its_run_id(tmp_path: Path) -> None:
    from netspec.runs.run_folder import run_id

    content = json.loads((Path(__file__).resolve().parents[2] / "specs" / "cnn.json").read_text())
    del content["network"]["input_shape"]
    path = tmp_path / "cnn.json"
    path.write_text(json.dumps(content))
    assert run_id(ns.Experiment.load(path, ["data.source=synthetic"])) == "84894fb946"  # tests/spec/test_shipped_run_ids.py
