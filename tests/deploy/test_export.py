"""ONNX export from the spec and canonical weights: onnxruntime gives each backend's own eval logits."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import netspec as ns  # noqa: E402
from netspec.deploy import export  # noqa: E402
from netspec.protocol.backend import load_backend  # noqa: E402
from netspec.errors import SetupError  # noqa: E402
from netspec.deploy.inference import load_run  # noqa: E402
from tests.trained_runs import BACKENDS, trained_run  # noqa: E402

TOLERANCE = 1e-5  # absolute, on logits of order 1 (float32 rounding of differently ordered sums)
BATCH_SIZES = (1, 7)  # one file serves every batch size

EVERY_LAYER = ns.Network(input_shape=(3, 11, 10), layers=[
    ns.Conv2d(out_channels=5, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2)),
    # Before any ReLU, so its padded cells compete with negative values: -inf padding, not zeros.
    ns.MaxPool2d(kernel_size=3, stride=(1, 2), padding=1),
    ns.BatchNorm(eps=1e-3), ns.ReLU(), ns.Dropout2d(p=0.3),
    ns.Conv2d(out_channels=4, kernel_size=2, bias=False), ns.Flatten(),
    ns.Linear(out_features=9, bias=False), ns.BatchNorm(momentum=0.3), ns.ReLU(), ns.Dropout(p=0.5),
    ns.Linear(out_features=6),
])
"""Every layer type: padded/strided conv, padded maxpool, 2-d and 1-d BatchNorm, both dropouts."""


def random_weights(network: ns.Network, seed: int = 0) -> ns.Weights:
    """Initial weights with non-trivial BatchNorm affine parameters and running statistics."""
    rng = np.random.default_rng(seed)
    weights = ns.init_weights(network, seed)
    for name, value in weights.items():
        kind = name.split(".", 1)[1]
        if kind == "running_mean" or (kind == "bias" and value.ndim == 1):
            weights[name] = rng.normal(0.0, 0.5, value.shape).astype(np.float32)
        elif kind == "running_var":
            weights[name] = rng.uniform(0.2, 3.0, value.shape).astype(np.float32)
        elif kind == "weight" and value.ndim == 1:  # BatchNorm's scale
            weights[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
    return weights


def max_difference(session: ort.InferenceSession, model, network: ns.Network, seed: int = 1) -> float:
    """Largest |onnxruntime - backend| over the batch sizes; also checks the logits' shape."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in BATCH_SIZES:
        x = rng.normal(size=(n, *network.input_shape)).astype(np.float32)
        (got,) = session.run([export.OUTPUT], {export.INPUT: x})
        expected = model.forward(x, train=False)
        assert got.shape == expected.shape == (n, *network.output_shape)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def session_of(path_or_bytes: Path | bytes) -> ort.InferenceSession:
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_layer_type_matches_the_backend(backend: str) -> None:
    weights = random_weights(EVERY_LAYER)
    session = session_of(export.onnx_model(EVERY_LAYER, weights).SerializeToString())
    model = load_backend(backend).compile(EVERY_LAYER, weights, device="cpu")
    difference = max_difference(session, model, EVERY_LAYER)
    print(f"every-layer network, {backend}: max |onnx - backend| = {difference:.2e}", file=sys.stderr)
    assert difference < TOLERANCE


def test_random_networks_match_the_numpy_reference() -> None:
    """Every layer type's ONNX rule against the layer's own meaning (LayerSpec.reference, float64), on
    random networks (netspec.check.random_networks) whose layers cover every type between them."""
    from netspec.check.random_networks import random_network

    rng = np.random.default_rng(7)
    seen: set[type] = set()
    count = 0
    while seen != set(ns.LAYER_TYPES):
        network = random_network(rng)
        seen |= {type(layer) for layer in network.layers}
        count += 1
        assert count < 100, f"100 random networks and still no {set(ns.LAYER_TYPES) - seen}"
        weights = random_weights(network, int(rng.integers(1000)))
        (got,) = session_of(export.onnx_model(network, weights).SerializeToString()).run(
            None, {export.INPUT: (x := rng.normal(size=(3, *network.input_shape)).astype(np.float32))})
        np.testing.assert_allclose(got, network.reference_forward(weights, x)[0], rtol=1e-4, atol=TOLERANCE)
    assert seen == set(ns.LAYER_TYPES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exported_run_matches_its_backend(backend: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = trained_run(tmp_path_factory, backend)
    path = export.export_run(run, log=lambda line: None)
    assert path == run / "model.onnx"
    saved = load_run(run)
    model = load_backend(backend).compile(saved.experiment.network, saved.weights, device="cpu")
    difference = max_difference(session_of(path), model, saved.experiment.network)
    print(f"trained run, {backend}: max |onnx - backend| = {difference:.2e}", file=sys.stderr)
    assert difference < TOLERANCE


def test_the_model_describes_its_inputs_and_outputs(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = trained_run(tmp_path_factory, "torch")
    path = export.export_run(run, tmp_path / "sub" / "m.onnx", log=lambda line: None)
    model = onnx.load(str(path))
    (images,), (logits,) = model.graph.input, model.graph.output
    dims = lambda info: [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]
    assert (images.name, dims(images)) == ("images", ["batch", 3, 32, 32])
    assert (logits.name, dims(logits)) == ("logits", ["batch", 10])
    props = {p.key: p.value for p in model.metadata_props}
    preprocess = json.loads((run / "preprocess.json").read_text())
    assert json.loads(props["classes"]) == preprocess["classes"] == [f"class_{i}" for i in range(10)]
    assert json.loads(props["normalize_shift"]) == preprocess["shift"]
    assert json.loads(props["normalize_scale"]) == preprocess["scale"]
    assert ns.Network.model_validate_json(props["network"]) == load_run(run).experiment.network
    assert {n.op_type for n in model.graph.node} == {"Conv", "BatchNormalization", "Relu", "MaxPool", "Flatten", "Gemm"}


def test_a_network_of_dropouts_only_is_the_identity() -> None:
    network = ns.Network(input_shape=(4,), layers=[ns.Dropout(p=0.5)])
    session = session_of(export.onnx_model(network, {}).SerializeToString())
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(session.run(None, {"images": x})[0], x)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    weights = random_weights(EVERY_LAYER)
    del weights["0.bias"]
    with pytest.raises(ns.SpecError, match="missing"):
        export.export_onnx(EVERY_LAYER, weights, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_without_onnx_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(SetupError, match=r"pip install 'netspec\[export\]'"):
        export.export_run(tmp_path)


@pytest.mark.parametrize("backend", [b if b == "torch" else pytest.param(b, marks=pytest.mark.slow) for b in BACKENDS])
def test_a_trained_resnet9_matches_its_backend(backend: str) -> None:
    """specs/resnet9.json (a graph: residual Adds, global max pool, Scale) after two training steps on
    synthetic images: onnxruntime's logits against the backend's."""
    network = ns.Experiment.load(Path(__file__).resolve().parents[2] / "specs/resnet9.json").network
    model = load_backend(backend).compile(network, seed=0, device="cpu")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 8)
    model.setup_optimizer(ns.TrainConfig(lr=1e-3))
    model.train_steps(model.to_device(x, y), np.arange(8).reshape(2, 4), 1e-3)
    session = session_of(export.onnx_model(network, model.get_weights()).SerializeToString())
    assert max_difference(session, model, network) < 1e-4  # logits of ~10; 32 layers of float32 sums


@pytest.mark.parametrize("fields", [{}, {"beta": 3.0, "threshold": 1.0}, {"beta": 0.5, "threshold": -2.0}])
def test_softplus_exports_as_torch_nn_softplus(fields: dict) -> None:
    """ONNX's Softplus has no beta or threshold: at the defaults it is used as is, otherwise written out
    around it. Against torch.nn.Softplus in float64, on inputs across the threshold (and past 20, where
    the default's linear branch starts). Tolerance: onnxruntime computes in float32, 1e-6 relative."""
    torch = pytest.importorskip("torch", reason="torch.nn.Softplus is the reference")
    network = ns.Network(input_shape=(9,), layers=[ns.Softplus(**fields)])
    graph = export.onnx_model(network, {})
    ops = [node.op_type for node in graph.graph.node]
    assert ops == (["Softplus"] if not fields else ["Mul", "Greater", "Softplus", "Div", "Where"])
    x = np.array([[-30.0, -4.0, -1.0, -0.1, 0.0, 0.3, 1.5, 19.0, 25.0]], np.float32)
    (got,) = session_of(graph.SerializeToString()).run(None, {export.INPUT: x})
    expected = torch.nn.Softplus(**fields)(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
