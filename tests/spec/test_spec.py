"""The spec language: layers, shape inference, summary, JSON round trips, overrides, schema."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import netspec as ns
import runner
from netspec.io import without_schema_key
from netspec.spec.schema import SCHEMAS

SPECS = sorted(Path(__file__).resolve().parents[2].joinpath("specs").glob("*.json"))
REPORT_CNN = [ns.Conv2d(out_channels=256, kernel_size=5), ns.BatchNorm(), ns.ReLU(), ns.Dropout2d(p=0.0),
              ns.MaxPool2d(kernel_size=2), ns.Conv2d(out_channels=256, kernel_size=5), ns.BatchNorm(), ns.ReLU(),
              ns.Dropout2d(p=0.0), ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=10)]


def test_the_reports_cnn_has_the_reports_shapes_and_parameter_counts() -> None:
    net = ns.Network(input_shape=(3, 32, 32), layers=REPORT_CNN)
    shapes = net.shapes()
    assert shapes[1] == (256, 28, 28) and shapes[5] == (256, 14, 14) and shapes[10] == (256, 5, 5)
    assert shapes[11] == (6400,) and net.output_shape == (10,)
    infos = net.param_infos()
    count = lambda i: sum(math.prod(infos[f"{i}.{n}"].shape) for n in ("weight", "bias"))
    assert (count(0), count(5), count(11)) == (19_456, 1_638_656, 64_010)
    assert infos["1.running_var"].trainable is False and infos["1.num_batches_tracked"].shape == ()


def test_python_api_builds_the_same_network_as_the_spec_file() -> None:
    assert ns.Network(input_shape=(3, 32, 32), layers=REPORT_CNN) == ns.Experiment.load("specs/cnn.json").network


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_file_round_trips_exactly(path: Path, tmp_path: Path) -> None:
    experiment = ns.Experiment.load(path)
    beside = json.loads(path.read_text())["$schema"]  # saved as if beside it
    experiment.save(tmp_path / "a.json", schema=beside)
    again = ns.Experiment.load(tmp_path / "a.json")
    assert again == experiment
    again.save(tmp_path / "b.json", schema=beside)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    raw = json.loads(path.read_text())
    if "base" in raw or "blocks" in raw["network"] or "params" in raw["network"]:
        return  # the short form (netspec.spec.blocks, bases) saves as its flat equivalent, checked above
    assert path.read_text() == (tmp_path / "a.json").read_text(), "spec file is not in saved form"  # "$schema" too


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_summary_of_every_spec_file(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main([str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    net = ns.Experiment.load(path).network
    assert f"trainable parameters: {net.num_params():,}" in out
    for shape in net.shapes()[1:]:
        assert str(shape) in out
    if path.stem.startswith("cnn"):
        assert "(6400,)" in out and "64,010" in out and "1,638,656" in out


def test_specs_are_immutable_and_strict() -> None:
    layer = ns.Dropout(p=0.5)
    with pytest.raises(ValidationError):
        layer.p = 0.3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ns.Linear(out_features=3, in_features=4)  # input sizes are inferred, never written


def test_batchnorm_dimension_and_pool_stride_follow_pytorch() -> None:
    net = ns.Network(input_shape=(3, 9, 9), layers=[ns.MaxPool2d(kernel_size=3), ns.BatchNorm(), ns.Flatten(), ns.BatchNorm()])
    assert net.shapes() == [(3, 9, 9), (3, 3, 3), (3, 3, 3), (27,), (27,)]
    assert net.param_infos()["1.weight"].shape == (3,) and net.param_infos()["3.weight"].shape == (27,)
    strided = ns.Network(input_shape=(1, 10, 7), layers=[ns.Conv2d(out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))])
    assert strided.output_shape == (2, 5, 6)


def _write(tmp_path: Path, network: object, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"name": "bad", "network": network}) if not isinstance(network, str) else network)
    return path


BAD_SPECS = {
    "malformed JSON": ('{"network": {"input_shape": [3, 8, 8], "layers": [}}', ["malformed JSON", "line 1"]),
    "unknown type": ({"input_shape": [3, 8, 8], "layers": [{"type": "ReLU"}, {"type": "Conv3d", "out_channels": 4}]},
                     ["layer 1", "unknown layer type 'Conv3d'"]),
    "misspelled field": ({"input_shape": [3, 8, 8], "layers": [{"type": "Conv2d", "out_channels": 4, "kernal_size": 3}]},
                         ["layer 0 (Conv2d)", "unknown field 'kernal_size'"]),
    "negative size": ({"input_shape": [3, 8, 8], "layers": [{"type": "Conv2d", "out_channels": -4, "kernel_size": 3}]},
                      ["layer 0 (Conv2d)", "out_channels", "greater than 0"]),
    "zero size": ({"input_shape": [8], "layers": [{"type": "Linear", "out_features": 0}]},
                  ["layer 0 (Linear)", "out_features", "greater than 0"]),
    "zero input size": ({"input_shape": [3, 0, 8], "layers": [{"type": "ReLU"}]}, ["input_shape", "greater than 0"]),
    "dropout rate 1": ({"input_shape": [8], "layers": [{"type": "Dropout", "p": 1.0}]}, ["layer 0 (Dropout)", "outside [0, 1)"]),
    "negative dropout rate": ({"input_shape": [3, 4, 4], "layers": [{"type": "Dropout2d", "p": -0.1}]},
                              ["layer 0 (Dropout2d)", "outside [0, 1)"]),
    "kernel larger than input": ({"input_shape": [3, 4, 4], "layers": [{"type": "Conv2d", "out_channels": 4, "kernel_size": 5}]},
                                 ["layer 0 (Conv2d)", "kernel 5x5 is larger than its input 4x4"]),
    "pool larger than input": ({"input_shape": [3, 8, 8], "layers": [{"type": "MaxPool2d", "kernel_size": 9}]},
                               ["layer 0 (MaxPool2d)", "pool 9x9 is larger"]),
    "spatial size shrinks to zero": ({"input_shape": [3, 8, 8], "layers": [
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 5}, {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 3}]}, ["layer 2 (Conv2d)", "larger than its input 2x2"]),
    "Linear fed a 3-d input": ({"input_shape": [3, 8, 8], "layers": [{"type": "Linear", "out_features": 10}]},
                               ["layer 0 (Linear)", "insert a Flatten"]),
    "Dropout2d on a flat input": ({"input_shape": [8], "layers": [{"type": "Dropout2d", "p": 0.1}]},
                                  ["layer 0 (Dropout2d)", "use Dropout"]),
    "empty layer list": ({"input_shape": [8], "layers": []}, ["layers", "no layers"]),
    "missing field": ({"input_shape": [8], "layers": [{"type": "Linear"}]}, ["layer 0 (Linear)", "missing required field 'out_features'"]),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_gives_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network, expected = BAD_SPECS[case]
    path = _write(tmp_path, network)
    assert runner.main([str(path), "--summary"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), captured.err
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_bad_spec_through_the_real_cli_has_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys
    path = _write(tmp_path, {"input_shape": [3, 8, 8], "layers": [{"type": "Linear", "out_features": 10}]})
    proc = subprocess.run([sys.executable, "runner.py", str(path), "--summary"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "layer 0 (Linear)" in proc.stderr


def test_overrides_edit_any_field() -> None:
    experiment = ns.Experiment.load("specs/mlp.json", ["train.lr=0.01", "network.layers.3.p=0.3", "data.source=synthetic"])
    assert experiment.train.lr == 0.01 and experiment.network.layers[3] == ns.Dropout(p=0.3)
    assert experiment.data.source == "synthetic"
    assert experiment.with_overrides(["train.batch_size=50"]).train.batch_size == 50


@pytest.mark.parametrize("override, expected", [
    ("train.lr=-1", "train: lr: must be greater than 0"),
    ("network.layers.9.p=0.3", "needs an index below 5"),
    ("train.lr.x=1", "is a value, not a section"),
    ("train.lrr=0.1", "unknown field 'lrr'"),
    ("nonsense", "must look like key=value"),
    ("network.layers.0.out_features=0", "layer 0 (Linear): out_features"),
])
def test_bad_override_is_one_clear_line(override: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["specs/mlp.json", "--summary", "--set", override]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_init_weights_follow_pytorchs_default_formulas() -> None:
    net = ns.Experiment.load("specs/cnn.json").network
    w = ns.init_weights(net, seed=3)
    assert list(w) == list(net.param_infos())
    bound = 1 / math.sqrt(256 * 5 * 5)
    assert w["5.weight"].shape == (256, 256, 5, 5) and w["5.weight"].dtype == np.float32
    assert np.abs(w["5.weight"]).max() <= bound and np.abs(w["5.weight"]).max() > 0.99 * bound
    assert abs(w["5.weight"].std() - bound / math.sqrt(3)) < 0.01 * bound  # uniform's std
    assert np.abs(w["11.bias"]).max() <= 1 / math.sqrt(6400)
    assert (w["1.weight"] == 1).all() and (w["1.bias"] == 0).all()
    assert (w["1.running_mean"] == 0).all() and (w["1.running_var"] == 1).all()
    assert w["1.num_batches_tracked"].dtype == np.int64 and w["1.num_batches_tracked"] == 0
    again, other = ns.init_weights(net, seed=3), ns.init_weights(net, seed=4)
    assert all(np.array_equal(w[k], again[k]) for k in w)
    assert not np.array_equal(w["0.weight"], other["0.weight"])


def test_weights_file_round_trip_and_checks(tmp_path: Path) -> None:
    net = ns.Experiment.load("specs/mlp.json").network
    w = ns.init_weights(net, seed=0)
    ns.save_weights(w, tmp_path / "w.npz")
    back = ns.load_weights(tmp_path / "w.npz", net)
    assert list(back) == list(w) and all(np.array_equal(back[k], w[k]) and back[k].dtype == w[k].dtype for k in w)
    with pytest.raises(ns.SpecError, match="missing \\['4.bias'\\]"):
        ns.check_weights(net, {k: v for k, v in w.items() if k != "4.bias"})
    with pytest.raises(ns.SpecError, match="'0.weight' has shape"):
        ns.check_weights(net, {**w, "0.weight": w["0.weight"].T})


ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "specs" / "schema"


def test_schema_command_writes_a_schema_for_every_layer(tmp_path: Path) -> None:
    assert runner.main(["schema", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.schema.json", "search.schema.json", "sweep.schema.json"]
    schema = json.loads((tmp_path / "experiment.schema.json").read_text())
    for layer in ns.LAYER_TYPES:
        assert layer.__name__ in schema["$defs"]
        assert schema["$defs"][layer.__name__]["additionalProperties"] is False
    assert schema["$defs"]["Dropout"]["properties"]["p"]["description"]


def test_the_repositorys_schemas_are_current() -> None:
    """specs/schema/ is what `netspec schema -o specs/schema` writes today (regenerate it after a spec change)."""
    for name, make in SCHEMAS.items():
        assert json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()) == make(), name


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "specs").rglob("*.json") if p.parent != SCHEMA_DIR),
                         ids=lambda p: p.stem)
def test_every_spec_file_points_editors_to_its_schema_and_validates(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(path.read_text())
    kind = {"sweeps": "sweep", "searches": "search"}.get(path.parent.name, "experiment")
    schema_path = (path.parent / data["$schema"]).resolve()
    assert schema_path == SCHEMA_DIR / f"{kind}.schema.json"
    jsonschema.validate(data, json.loads(schema_path.read_text()))


def test_a_saved_spec_points_editors_to_a_schema_that_resolves_from_where_it_is(tmp_path: Path) -> None:
    """Saved outside the checkout, the reference is the schema's absolute file URI; inside it, a path
    relative to the file (specs/ itself: "schema/experiment.schema.json", as the shipped files say)."""
    from urllib.parse import unquote, urlparse

    from netspec.spec.experiment import schema_reference

    (tmp_path / "deep").mkdir()
    ns.Experiment.load(ROOT / "specs" / "mlp.json").save(tmp_path / "deep" / "mine.json")
    reference = json.loads((tmp_path / "deep" / "mine.json").read_text())["$schema"]
    assert urlparse(reference).scheme == "file" and Path(unquote(urlparse(reference).path)) == SCHEMA_DIR / "experiment.schema.json"
    assert schema_reference(ROOT / "specs" / "mine.json") == "schema/experiment.schema.json"
    assert (ROOT / "specs" / "sweeps" / schema_reference(ROOT / "specs" / "sweeps" / "x.json")).resolve() == \
        SCHEMA_DIR / "experiment.schema.json"


def test_the_schema_key_is_the_editors_and_never_changes_a_run(tmp_path: Path) -> None:
    from netspec.runs.run_folder import run_id

    with_key = ns.Experiment.load(ROOT / "specs" / "mlp.json")
    plain = tmp_path / "mlp.json"
    plain.write_text(json.dumps(without_schema_key(json.loads((ROOT / "specs" / "mlp.json").read_text()))))
    assert ns.Experiment.load(plain) == with_key and run_id(ns.Experiment.load(plain)) == run_id(with_key)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(plain.read_text()), "$schemas": "x"}))
    with pytest.raises(ns.SpecError, match="unknown field '\\$schemas'"):
        ns.Experiment.load(bad)
