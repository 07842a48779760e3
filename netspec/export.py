"""ONNX export, built from the network spec and canonical weights alone (no torch, no jax).

    export_run("runs/cnn/jax/0123456789")      # -> runs/cnn/jax/0123456789/model.onnx

Canonical weights have PyTorch's names and layouts whichever backend trained them, so one exporter
serves runs of both. The model computes the eval-mode forward pass: BatchNorm with its running
statistics, Dropout and Dropout2d as the identity. Input "images" (batch, *input_shape) float32,
already normalized as in training (the scaling and class names are in the model's metadata_props);
output "logits" (batch, classes). The batch size is symbolic ("batch").

Layer -> ONNX operator, each exact for PyTorch's eval semantics:
Linear -> Gemm(transB=1) (its weight is (out, in)); Conv2d -> Conv with explicit pads and strides
(zero padding, as netspec's Conv2d); BatchNorm -> BatchNormalization (inference form; it takes
(N, C) as well as (N, C, H, W), so 1-d and 2-d need no reshape); ReLU -> Relu; MaxPool2d -> MaxPool
(ONNX ignores padded cells, as PyTorch's -inf padding does; floor rounding, as PyTorch's default);
Flatten -> Flatten(axis=1) (row-major over C, H, W: PyTorch's order).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .backend import builder_for
from .errors import SetupError
from .inference import load_run
from .io import safe_output_dir, write_bytes_atomic
from .layers import BatchNorm, Conv2d, Dropout, Dropout2d, Flatten, LayerSpec, Linear, MaxPool2d, ReLU, pair
from .network import Network
from .params import Weights, check_weights
from .version import __version__

DEFAULT_OPSET = 17
"""ONNX opset of exported models: supported by onnxruntime >= 1.14 and every current converter."""
INPUT, OUTPUT = "images", "logits"
ONNX_FILE = "model.onnx"
_INSTALL_HINT = "pip install 'netspec[export]'"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise SetupError(f"ONNX export needs the onnx package, which is not installed; run: {_INSTALL_HINT}") from None
    return onnx


class _GraphBuilder:
    """Collects nodes and initializers; each layer adds its node(s) after the current tensor."""

    def __init__(self, onnx: Any, weights: Weights) -> None:
        self.onnx, self.weights = onnx, weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.current = INPUT

    def tensor(self, name: str) -> str:
        """A canonical weight as an initializer, under its canonical name ('3.running_mean')."""
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(self.weights[name], np.float32), name))
        return name

    def add(self, op: str, index: int, extra_inputs: list[str], **attributes: Any) -> None:
        output = f"{index}.{op}"
        self.nodes.append(self.onnx.helper.make_node(op, [self.current, *extra_inputs], [output],
                                                     name=f"layer{index}_{op}", **attributes))
        self.current = output


def _linear(g: _GraphBuilder, i: int, layer: Linear) -> None:
    bias = [g.tensor(f"{i}.bias")] if layer.bias else []
    g.add("Gemm", i, [g.tensor(f"{i}.weight"), *bias], transB=1)


def _conv(g: _GraphBuilder, i: int, layer: Conv2d) -> None:
    (ph, pw) = pair(layer.padding)
    bias = [g.tensor(f"{i}.bias")] if layer.bias else []
    g.add("Conv", i, [g.tensor(f"{i}.weight"), *bias], kernel_shape=list(pair(layer.kernel_size)),
          strides=list(pair(layer.stride)), pads=[ph, pw, ph, pw])


def _batchnorm(g: _GraphBuilder, i: int, layer: BatchNorm) -> None:
    names = [g.tensor(f"{i}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
    g.add("BatchNormalization", i, names, epsilon=layer.eps)


def _maxpool(g: _GraphBuilder, i: int, layer: MaxPool2d) -> None:
    (ph, pw) = pair(layer.padding)
    g.add("MaxPool", i, [], kernel_shape=list(pair(layer.kernel_size)), strides=list(layer.effective_stride),
          pads=[ph, pw, ph, pw])


def _identity(g: _GraphBuilder, i: int, layer: LayerSpec) -> None:
    """Dropout in eval mode: nothing to compute."""


_BUILDERS: dict[type, Callable[[_GraphBuilder, int, Any], None]] = {
    Linear: _linear, Conv2d: _conv, BatchNorm: _batchnorm, MaxPool2d: _maxpool,
    ReLU: lambda g, i, layer: g.add("Relu", i, []),
    Flatten: lambda g, i, layer: g.add("Flatten", i, [], axis=1),
    Dropout: _identity, Dropout2d: _identity,
}


def onnx_model(network: Network, weights: Weights, opset: int = DEFAULT_OPSET,
               metadata: Optional[Mapping[str, str]] = None) -> Any:
    """The eval-mode network as a checked onnx.ModelProto (see the module docstring)."""
    onnx = _onnx()
    helper = onnx.helper
    g = _GraphBuilder(onnx, check_weights(network, weights, "weights"))
    for index, layer in enumerate(network.layers):
        builder_for(_BUILDERS, layer, index, "ONNX", "netspec/export.py")(g, index, layer)
    if g.nodes:  # the last node writes the graph's output directly
        g.nodes[-1].output[0] = OUTPUT
    else:  # a network of dropouts only
        g.nodes.append(helper.make_node("Identity", [INPUT], [OUTPUT]))
    graph = helper.make_graph(
        g.nodes, "netspec", [_value_info(onnx, INPUT, network.input_shape)],
        [_value_info(onnx, OUTPUT, network.output_shape)], initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version the opset allows, so older runtimes load the file too.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="netspec", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, {"network": network.model_dump_json(), **(metadata or {})})
    onnx.checker.check_model(model, full_check=True)  # full_check: shape inference must agree too
    return model


def _value_info(onnx: Any, name: str, shape: tuple[int, ...]) -> Any:
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", *shape])


def export_onnx(network: Network, weights: Weights, path: str | Path, opset: int = DEFAULT_OPSET,
                metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write the eval-mode network with `weights` (canonical) as an ONNX file; returns the path.
    `metadata` (string key/values, e.g. Preprocess.metadata()) goes to the model's metadata_props."""
    model = onnx_model(network, weights, opset, metadata)
    path = Path(path)
    safe_output_dir(path.parent)
    # Serialized in memory, then the one atomic writer: a link planted at model.onnx is replaced, never followed.
    write_bytes_atomic(path, model.SerializeToString())
    return path


def input_layout(shape: tuple[int, ...]) -> str:
    """What the model's input is, for its metadata: '[batch, 3, 32, 32] float32 (NCHW)', or for a flat
    input '[batch, 3072] float32, the NCHW pixels flattened in C, H, W order'."""
    dims = f"[batch, {', '.join(map(str, shape))}] float32"
    layout = ", the NCHW pixels flattened in C, H, W order" if len(shape) == 1 else " (NCHW)" if len(shape) == 3 else ""
    return f"{dims}{layout}: (pixels - shift) / scale per channel"


CHECK_BATCH = 8
CHECK_RTOL = 1e-4
"""The exported model against the backend's eval logits: float32 sums in another order differ by ~1e-6
of the logits' size; a wrong operator or layout differs by their whole size."""


@dataclass(frozen=True)
class ExportCheck:
    """The exported model's logits against the backend's, on CHECK_BATCH random inputs."""

    backend: str
    largest_difference: float
    largest_logit: float

    @property
    def ok(self) -> bool:
        return self.largest_difference <= CHECK_RTOL * max(1.0, self.largest_logit)

    def line(self) -> str:
        verdict = "agrees" if self.ok else "DISAGREES"
        return (f"checked against {self.backend}'s logits on {CHECK_BATCH} random inputs: largest difference "
                f"{self.largest_difference:.1e} (largest logit {self.largest_logit:.2f}): {verdict}")


def check_export(path: Path, network: Network, weights: Weights, backend: Any, seed: int = 0) -> Optional[ExportCheck]:
    """Run the exported file in onnxruntime and `backend` (a netspec.backend.Backend) on the same random
    inputs; None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    x = np.random.default_rng(seed).normal(size=(CHECK_BATCH, *network.input_shape)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {INPUT: x})
    expected = backend.compile(network, weights).forward(x, train=False)
    return ExportCheck(backend.name, float(np.abs(got - expected).max()), float(np.abs(expected).max()))


def export_run(run_dir: str | Path, out_path: Optional[str | Path] = None, opset: int = DEFAULT_OPSET,
               log: Callable[[str], None] = print) -> Path:
    """Export a run's best weights (a run of either backend) to `out_path`, default <run_dir>/model.onnx.
    The class names, the input's layout and scaling and the run's name go to the model's metadata_props."""
    _onnx()  # the missing-package line before any reading
    saved = load_run(run_dir, log)
    metadata = {**saved.preprocess.metadata(), "input": input_layout(saved.experiment.network.input_shape),
                "run": saved.directory.name,
                "experiment": json.dumps({"name": saved.experiment.name, "description": saved.experiment.description})}
    return export_onnx(saved.experiment.network, saved.weights,
                       saved.directory / ONNX_FILE if out_path is None else out_path, opset, metadata)
