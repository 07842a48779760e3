"""netspec import: ONNX files written by torch.onnx.export from plain torch.nn originals come in
as specs with canonical weights, and both backends compute what the original computes; every shipped
spec round-trips through export and import with its layers and run id; bad files are one line each.

Tolerance: float32 logits of order 1, compared with the original (onnxruntime, or the torch module
itself, independent of netspec): 1e-4 of the largest logit, netspec.deploy.import_check.IMPORT_RTOL
(float32 sums in another order differ by ~1e-6 of it; a misread layer by its whole size)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
onnx = pytest.importorskip("onnx", reason="ONNX import needs the onnx package (netspec[export])")
ort = pytest.importorskip("onnxruntime", reason="the import's verification runs onnxruntime (netspec[export])")

import netspec as ns  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.deploy import onnx_import, onnx_rules  # noqa: E402
from netspec.deploy.export import SPEC_KEY, onnx_model  # noqa: E402
from netspec.deploy.import_check import (CHECK_BATCH, IMPORT_RTOL, Original, import_and_verify, onnx_original,  # noqa: E402
                                         verify)
from netspec.errors import SpecError  # noqa: E402
from netspec.runs.run_folder import run_id  # noqa: E402
from tests.helpers import tiny_experiment  # noqa: E402
from tests.torch_originals import ResNet9, onnx_bytes, report_cnn, with_statistics  # noqa: E402

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.json"))
BACKENDS = [ns.load_backend("torch"), ns.load_backend("jax")]
ORIGINALS = {"cnn": (lambda: report_cnn(8), (3, 32, 32)), "resnet9": (lambda: ResNet9(4), (3, 16, 16))}


def _file(tmp_path: Path, data: bytes, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _torch_logits(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fold", [True, False], ids=["conv-bn-folded", "bn-kept"])
@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_torch_exported_originals_match_on_both_backends(name: str, fold: bool, tmp_path: Path) -> None:
    make, shape = ORIGINALS[name]
    module = with_statistics(make())
    imported = onnx_import.import_onnx(_file(tmp_path, onnx_bytes(module, shape, fold)), log=lambda line: None)
    types = [layer.type for layer in imported.network.layers]
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    assert types.count("BatchNorm") == (0 if fold else batchnorms)  # folded: Conv2d with its bias
    assert types.count("Add") == (2 if name == "resnet9" else 0)
    # against onnxruntime on the file, and against the torch module itself (independent of netspec)
    for original in (onnx_original(imported.model, imported.tensors),
                     Original("the torch module", lambda x: _torch_logits(module, x), lambda x: {})):
        check = verify(imported.network, imported.weights, original, BACKENDS)
        for line in check.lines():
            print(f"{name} ({'folded' if fold else 'kept'}): {line}", file=sys.stderr)
        assert check.ok and check.parting is None
        assert all(m.largest_difference <= IMPORT_RTOL * max(1.0, m.largest_logit) for m in check.matches)


def test_a_misread_layer_is_named(tmp_path: Path) -> None:
    module = with_statistics(report_cnn(8))
    imported = onnx_import.import_onnx(_file(tmp_path, onnx_bytes(module, (3, 32, 32), False)), log=lambda line: None)
    broken = dict(imported.weights)
    broken["1.running_mean"] = broken["1.running_mean"] + 1.0  # the first BatchNorm, as if its mean were misread
    check = verify(imported.network, broken, onnx_original(imported.model, imported.tensors), BACKENDS)
    assert not check.ok
    assert check.parting is not None and "at layer 1 (BatchNorm)" in check.parting


def test_the_command_writes_a_verified_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = with_statistics(report_cnn(8))
    path = _file(tmp_path, onnx_bytes(module, (3, 32, 32), False), "my cnn.onnx")
    assert main(["import", str(path), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("): agrees") == 2 and "verified: every backend agrees" in out
    experiment = ns.Experiment.load(tmp_path / "out" / "my_cnn.json")
    weights = ns.load_weights(tmp_path / "out" / "weights.npz", experiment.network)
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    got = BACKENDS[1].compile(experiment.network, weights).forward(x)
    np.testing.assert_allclose(got, _torch_logits(module, x), atol=IMPORT_RTOL * max(1.0, np.abs(got).max()))


def test_export_of_an_import_computes_the_original(tmp_path: Path) -> None:
    data = onnx_bytes(with_statistics(ResNet9(4)), (3, 16, 16))
    imported = onnx_import.import_onnx(_file(tmp_path, data), log=lambda line: None)
    again = onnx_model(imported.network, imported.weights).SerializeToString()
    x = np.random.default_rng(2).normal(size=(CHECK_BATCH, 3, 16, 16)).astype(np.float32)
    original = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exported = ort.InferenceSession(again, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(exported, original, atol=IMPORT_RTOL * max(1.0, np.abs(original).max()))


def _random_weights(network: ns.Network) -> ns.Weights:
    """Initial weights with BatchNorm statistics and affine parameters away from 1 and 0."""
    rng = np.random.default_rng(3)
    weights = ns.init_weights(network)
    for name, value in weights.items():
        if name.endswith(("running_mean", "bias")) and ".weight" not in name:
            weights[name] = (value + rng.uniform(-0.5, 0.5, value.shape)).astype(value.dtype)
        elif name.endswith("running_var"):
            weights[name] = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
    return weights


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_round_trips(spec: Path, tmp_path: Path) -> None:
    experiment = ns.Experiment.load(spec, ["data.source=synthetic"])
    network = experiment.network
    weights = _random_weights(network)
    for info_name, info in network.param_infos().items():  # an affine=False BatchNorm has no scale to move
        if not info.trainable and info_name.endswith(".weight"):
            weights[info_name] = np.ones(info.shape, np.float32)
    model = onnx_model(network, weights, metadata={SPEC_KEY: experiment.model_dump_json()})
    path = _file(tmp_path, model.SerializeToString())
    imported = onnx_import.import_onnx(path, log=lambda line: pytest.fail(f"metadata not taken: {line}"))
    assert imported.network.layers == network.layers and imported.network == network
    assert imported.experiment is not None and run_id(imported.experiment) == run_id(experiment)
    for name, value in weights.items():
        np.testing.assert_array_equal(imported.weights[name], value.astype(imported.weights[name].dtype)
                                      if not name.endswith("num_batches_tracked") else 0)
    # the graph alone (metadata stripped, as a foreign file): the same function, dropouts gone
    del model.metadata_props[:]
    graph_network, graph_weights, _ = onnx_import.import_graph(model)
    x = np.random.default_rng(4).normal(size=(2, *network.input_shape))
    want, _ = network.reference_forward(weights, x)
    got, _ = graph_network.reference_forward(graph_weights, x)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    assert not any(layer.type in ("Dropout", "Dropout2d") for layer in graph_network.layers)


# ---- bad input: one line each, exit 2, nothing written ---------------------------------------------

def _refused(tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = tmp_path / "out"
    assert main(["import", str(path), "-o", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())  # nothing written, nothing half-written
    err = capsys.readouterr().err.strip().splitlines()
    print("\n".join(err), file=sys.stderr)
    return err


def test_a_grouped_conv_and_an_lstm_are_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, groups=2)
            self.lstm = torch.nn.LSTM(4, 3, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x).flatten(2).transpose(1, 2)
            return self.lstm(y)[0][:, -1]

    err = _refused(tmp_path, _file(tmp_path, onnx_bytes(Both().eval(), (4, 6, 6))), capsys)
    assert "problem(s)" in err[0]
    assert any("(Conv): group=2 is not supported; netspec's Conv2d has groups 1" in line for line in err)
    assert any("(LSTM): operator LSTM is not supported" in line for line in err)


def _cnn_model() -> object:
    return onnx.load_from_string(onnx_bytes(with_statistics(report_cnn(4)), (3, 32, 32), False))


def test_external_data_is_refused_and_never_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _cnn_model()
    secret = tmp_path / "weights.bin"
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location=secret.name, size_threshold=0)
    (line,) = _refused(tmp_path, tmp_path / "ext.onnx", capsys)
    assert "keeps its data in external file 'weights.bin'; refused" in line


def _mutated(tmp_path: Path, change: object) -> Path:
    model = _cnn_model()
    change(model)  # type: ignore[operator]
    return _file(tmp_path, model.SerializeToString(), "bad.onnx")


def _swap_first_nodes(model: object) -> None:
    nodes = list(model.graph.node)  # type: ignore[attr-defined]
    del model.graph.node[:]  # type: ignore[attr-defined]
    model.graph.node.extend([nodes[1], nodes[0], *nodes[2:]])  # type: ignore[attr-defined]


def _dangle(model: object) -> None:
    model.graph.node[2].input[0] = "nowhere"  # type: ignore[attr-defined]


def _misfit_initializer(model: object) -> None:
    conv = model.graph.initializer[0]  # type: ignore[attr-defined]
    conv.CopyFrom(onnx.numpy_helper.from_array(np.zeros((4, 2, 5, 5), np.float32), conv.name))


def _zero_kernel(model: object) -> None:
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")  # type: ignore[attr-defined]
    kernel = next(a for a in pool.attribute if a.name == "kernel_shape")
    kernel.ints[:] = [0, 0]


def _opset(version: int) -> object:
    def change(model: object) -> None:
        model.opset_import[0].version = version  # type: ignore[attr-defined]
    return change


@pytest.mark.parametrize("change, words", [
    (_swap_first_nodes, "the graph has a cycle or is not in order"),
    (_dangle, "takes 'nowhere', which no node, input or initializer makes (a dangling name)"),
    (_misfit_initializer, "its weight has shape [4, 2, 5, 5], but its input needs [4, 3, 5, 5]"),
    (_zero_kernel, "(MaxPool): its attributes or constants do not make a valid layer (kernel_size"),
    (_opset(7), "opset 7 is outside the supported 11..22"),
    (_opset(99), "opset 99 is outside the supported 11..22"),
], ids=["cycle", "dangling", "initializer-shape", "zero-kernel", "opset-low", "opset-high"])
def test_a_damaged_graph_is_one_line(change: object, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(tmp_path, _mutated(tmp_path, change), capsys)
    assert any(words in line for line in err) and len(err) <= 2  # a problem list has its heading line


def test_a_truncated_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _cnn_model().SerializeToString()  # type: ignore[attr-defined]
    (line,) = _refused(tmp_path, _file(tmp_path, data[: len(data) // 3]), capsys)
    assert "not a complete ONNX model" in line and "truncated" in line


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "m.onnx")  # no writer: a plain open() would wait forever (issue 36's corpus)
    with pytest.raises(SpecError, match="a FIFO, not a file"):
        onnx_import.read_model(tmp_path / "m.onnx")


def test_a_file_over_the_bound_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(onnx_import, "MAX_ONNX_BYTES", 1000)
    (line,) = _refused(tmp_path, _file(tmp_path, _cnn_model().SerializeToString()), capsys)  # type: ignore[attr-defined]
    assert "more than the 1,000 netspec reads" in line


def test_metadata_that_is_not_the_graph_is_not_taken(tmp_path: Path) -> None:
    """netspec's metadata is words in an untrusted file: a network other than the graph's (here one far
    bigger than the file holds) is never taken, nor allocated; the graph's layers are."""
    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=3), ns.Dropout(p=0.5)])
    claimed = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2**24), ns.Dropout(p=0.5)])
    model = onnx_model(network, ns.init_weights(network), metadata={"network": claimed.model_dump_json()})
    lines: list[str] = []
    imported = onnx_import.import_onnx(_file(tmp_path, model.SerializeToString()), log=lines.append)
    assert [layer.type for layer in imported.network.layers] == ["Linear"] and imported.experiment is None
    assert len(lines) == 1 and "does not describe it" in lines[0]
    other = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=3), ns.ReLU()])
    model = onnx_model(network, ns.init_weights(network), metadata={"network": other.model_dump_json()})
    lines.clear()
    imported = onnx_import.import_onnx(_file(tmp_path, model.SerializeToString()), log=lines.append)
    assert [layer.type for layer in imported.network.layers] == ["Linear"]
    assert "names another network than its graph computes" in lines[0]


def test_a_bad_name_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="a spec's name is letters"):
        import_and_verify(tmp_path / "m.onnx", tmp_path / "out", BACKENDS, name="../escape")


class ViewHead(torch.nn.Module):
    """x.view(x.size(0), -1): a Shape-Gather-Unsqueeze-Concat-Reshape chain (or a constant shape when the
    batch is fixed), and GELU, written as Erf arithmetic below opset 20 and as Gelu from it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.gelu(self.conv(x))
        return self.head(y.view(y.size(0), -1))


@pytest.mark.parametrize("opset, dynamic", [(17, True), (17, False), (20, True)],
                         ids=["opset17-batch-symbolic", "opset17-batch-fixed", "opset20"])
def test_exporter_patterns(opset: int, dynamic: bool, tmp_path: Path) -> None:
    import io
    import warnings
    module, buffer = ViewHead().eval(), io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(1, 3, 8, 8),), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}} if dynamic else None)
    imported = onnx_import.import_onnx(_file(tmp_path, buffer.getvalue()), log=lambda line: None)
    assert [layer.type for layer in imported.network.layers] == ["Conv2d", "GELU", "Flatten", "Linear"]
    original = Original("the torch module", lambda x: _torch_logits(module, x), lambda x: {})
    assert verify(imported.network, imported.weights, original, BACKENDS).ok
    assert verify(imported.network, imported.weights, onnx_original(imported.model, imported.tensors), BACKENDS).ok


def test_a_scale_by_one_over_root_two_stays_a_scale() -> None:
    """Only x / sqrt 2 that an Erf takes starts GELU's erf form; netspec's GELU export reads back as GELU."""
    network = ns.Network(input_shape=(6,), layers=[ns.Linear(out_features=5), ns.GELU(), ns.Scale(factor=0.7071067811865476),
                                                   ns.Linear(out_features=3)])
    model = onnx_model(network, ns.init_weights(network))
    del model.metadata_props[:]
    again, _, _ = onnx_import.import_graph(model)
    assert [layer.type for layer in again.layers] == ["Linear", "GELU", "Scale", "Linear"]
    assert again.layers[2].factor == 0.70710677  # the file holds float32: its shortest decimal


def test_an_imported_model_fine_tunes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """netspec import's DIR/<name>.json and DIR/weights.npz are what train --weights takes."""
    experiment = tiny_experiment("from_weights", epochs=1)
    weights = ns.init_weights(experiment.network, seed=2)
    (tmp_path / "m.onnx").write_bytes(onnx_model(experiment.network, weights).SerializeToString())
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "imported"), "--name", "from_weights"]) == 0
    spec = tmp_path / "imported" / "from_weights.json"
    assert main(["train", str(spec), "--weights", str(tmp_path / "imported" / "weights.npz"), "--out", str(tmp_path / "runs"),
                 "--data", "synthetic", "--epochs", "1", "--set", "data.train_size=400", "--set", "data.val_size=100",
                 "--set", "data.test_size=100", "--device", "cpu"]) == 0
    (folder,) = (tmp_path / "runs" / "from_weights" / "torch").iterdir()
    assert (folder / "metrics.json").is_file()
    assert json.loads((folder / "spec.json").read_text())["train"]["init_weights"] == str(tmp_path / "imported" / "weights.npz")


@pytest.mark.parametrize("form", ["gemm-transB0-alpha-beta", "matmul-add"])
def test_gemm_and_matmul_forms_are_one_linear(form: str) -> None:
    """Hand-built graphs (onnx.helper): Gemm without transB and with alpha, beta; MatMul then Add of a bias.
    Each is one Linear whose logits are numpy's x @ W + b on the same numbers."""
    h, rng = onnx.helper, np.random.default_rng(5)
    w, b = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)
    if form == "matmul-add":
        nodes = [h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Add", ["m", "B"], ["y"])]
        want = lambda x: x @ w + b  # noqa: E731
    else:
        nodes = [h.make_node("Gemm", ["x", "W", "B"], ["y"], alpha=0.5, beta=2.0)]
        want = lambda x: 0.5 * x @ w + 2.0 * b  # noqa: E731
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 6])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])],
                         initializer=[onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "B")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    network, weights, _ = onnx_import.import_graph(model)
    assert [layer.model_dump(exclude={"id", "inputs"}) for layer in network.layers] == [
        {"type": "Linear", "out_features": 3, "bias": True}]
    x = rng.normal(size=(4, 6)).astype(np.float32)
    for backend in BACKENDS:
        np.testing.assert_allclose(backend.compile(network, weights).forward(x), want(x.astype(np.float64)), atol=1e-5)


def test_a_wrong_import_fails_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An importer that misreads BatchNorm (its mean off by one, as a bug would) fails its own verification:
    exit 1, the first layer named, nothing new left in DIR, and a weights file already there untouched."""
    read = onnx_rules._RULES["BatchNormalization"]

    def misread(g: object, node: object, attrs: dict, inputs: list) -> None:
        read(g, node, attrs, [*inputs[:3], inputs[3] + 1.0, *inputs[4:]])

    monkeypatch.setitem(onnx_rules._RULES, "BatchNormalization", misread)
    path = _file(tmp_path, onnx_bytes(with_statistics(report_cnn(8)), (3, 32, 32), False))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "weights.npz").write_bytes(b"an earlier import's weights")
    assert main(["import", str(path), "-o", str(tmp_path / "out")]) == 1
    out = capsys.readouterr()
    assert out.out.count("DISAGREES") == 2
    assert "parts from onnxruntime at layer 1 (BatchNorm)" in out.out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["weights.npz"]
    assert (tmp_path / "out" / "weights.npz").read_bytes() == b"an earlier import's weights"


def test_a_backend_that_computes_wrongly_is_located_by_the_bisection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer of the import agrees with onnxruntime in numpy, but jax flattens NHWC (the mutation of
    tests/check/test_crosscheck_mutations.py): the cross-check's bisection names the layer where jax parts."""
    from netspec_backends.jax.builders import BUILDERS as JAX_BUILDERS

    module = with_statistics(report_cnn(4))
    imported = onnx_import.import_onnx(_file(tmp_path, onnx_bytes(module, (3, 32, 32))), log=lambda line: None)
    monkeypatch.setitem(JAX_BUILDERS, ns.Flatten, lambda s, site: lambda x, train: x.reshape(x.shape[0], -1))
    check = verify(imported.network, imported.weights, onnx_original(imported.model, imported.tensors), BACKENDS)
    assert [m.ok for m in check.matches] == [True, False]
    flatten = next(i for i, layer in enumerate(imported.network.layers) if layer.type == "Flatten")
    assert check.parting is not None and f"backends part at layer {flatten} (Flatten)" in check.parting
