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
Flatten -> Flatten(axis=1) (row-major over C, H, W: PyTorch's order); AvgPool2d -> AveragePool
(count_include_pad as the spec's); GlobalPool -> GlobalAveragePool/GlobalMaxPool + Flatten; Scale -> Mul;
GELU -> Erf (or Tanh) arithmetic (Gelu itself needs opset 20); CELU -> Celu; LeakyReLU -> LeakyRelu;
Tanh, Sigmoid -> themselves; SiLU -> Mul(x, Sigmoid(x)) (ONNX has no SiLU); Softplus -> Softplus (beta, threshold other than 1, 20: Where/Mul/Div around it);
Add -> Sum; Concat -> Concat(axis=1); Dropout, Dropout2d, Identity -> nothing.
A graph's layers take the tensors their inputs name.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from netspec.protocol.backend import builder_for
from netspec.errors import missing_package
from netspec.deploy.inference import load_run
from netspec.io import safe_output_dir, write_bytes_atomic
from netspec.spec.layers import (CELU, GELU, Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, Dropout2d, Flatten, GlobalPool,
                     Identity, LayerSpec, LeakyReLU, Linear, MaxPool2d, ReLU, Scale, Sigmoid, SiLU, Softplus, Tanh, pair)
from netspec.spec.network import NETWORK_INPUT, Network
from netspec.spec.params import Weights, check_weights
from netspec.version import __version__

DEFAULT_OPSET = 17
"""ONNX opset of exported models: supported by onnxruntime >= 1.14 and every current converter."""
INPUT, OUTPUT = "images", "logits"
ONNX_FILE = "model.onnx"
NETWORK_KEY, SPEC_KEY = "network", "spec"
"""metadata_props keys: the network's JSON (every export), a run's whole experiment (export_run), so that
`netspec import` gives back the layers the eval graph cannot show and the run id (netspec.deploy.onnx_import)."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise missing_package("ONNX export", "the onnx package", "export") from None
    return onnx


class _GraphBuilder:
    """Collects nodes and initializers. A layer's rule adds its node(s) after the current tensor (at
    first, the layer's first input; a merge takes all of them), and the layer's output is the current
    tensor when its rule ends (a rule that adds nothing passes its input on)."""

    def __init__(self, onnx: Any, weights: Weights) -> None:
        self.onnx, self.weights = onnx, weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.sources: list[str] = [INPUT]
        self.current = INPUT

    def begin(self, sources: list[str]) -> None:
        self.sources, self.current = sources, sources[0]

    def tensor(self, name: str) -> str:
        """A canonical weight as an initializer, under its canonical name ('3.running_mean')."""
        return self.constant(name, self.weights[name])

    def constant(self, name: str, value: Any) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def add(self, op: str, index: int, extra_inputs: list[str], merge: bool = False, first: Optional[str] = None,
            **attributes: Any) -> str:
        """A node `op` on the current tensor (`first` instead, or every input of a merge) and `extra_inputs`;
        its output becomes the current tensor."""
        taken = {n.output[0] for n in self.nodes}
        output = next(name for k in range(len(taken) + 1) if (name := f"{index}.{op}" + (f".{k}" if k else "")) not in taken)
        inputs = self.sources if merge else [first or self.current, *extra_inputs]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=f"layer{index}_{output.split('.', 1)[1]}",
                                                     **attributes))
        self.current = output
        return output


def _linear(g: _GraphBuilder, i: int, layer: Linear) -> None:
    bias = [g.tensor(f"{i}.bias")] if layer.bias else []
    g.add("Gemm", i, [g.tensor(f"{i}.weight"), *bias], transB=1)


def _conv(g: _GraphBuilder, i: int, layer: Conv2d) -> None:
    (top, bottom), (left, right) = layer.pads()
    bias = [g.tensor(f"{i}.bias")] if layer.bias else []
    g.add("Conv", i, [g.tensor(f"{i}.weight"), *bias], kernel_shape=list(pair(layer.kernel_size)),
          strides=list(pair(layer.stride)), pads=[top, left, bottom, right])


def _batchnorm(g: _GraphBuilder, i: int, layer: BatchNorm) -> None:
    if layer.affine:
        scale_and_shift = [g.tensor(f"{i}.weight"), g.tensor(f"{i}.bias")]
    else:  # PyTorch's affine=False: scale 1, shift 0
        c = len(g.weights[f"{i}.running_mean"])
        scale_and_shift = [g.constant(f"{i}.ones", np.ones(c)), g.constant(f"{i}.zeros", np.zeros(c))]
    names = [*scale_and_shift, g.tensor(f"{i}.running_mean"), g.tensor(f"{i}.running_var")]
    g.add("BatchNormalization", i, names, epsilon=layer.eps)


def _pool(op: str) -> Callable[[_GraphBuilder, int, Any], None]:
    def rule(g: _GraphBuilder, i: int, layer: Any) -> None:
        (ph, pw) = pair(layer.padding)
        extra = {"count_include_pad": int(layer.count_include_pad)} if op == "AveragePool" else {}
        g.add(op, i, [], kernel_shape=list(pair(layer.kernel_size)), strides=list(layer.effective_stride),
              pads=[ph, pw, ph, pw], **extra)
    return rule


def _global_pool(g: _GraphBuilder, i: int, layer: GlobalPool) -> None:
    g.add("GlobalAveragePool" if layer.mode == "avg" else "GlobalMaxPool", i, [])
    g.add("Flatten", i, [], axis=1)


def _gelu(g: _GraphBuilder, i: int, layer: GELU) -> None:
    """0.5 x (1 + erf(x / sqrt 2)), or the tanh form, from opset-17 operators (Gelu itself is opset 20)."""
    x = g.current
    if layer.approximate == "tanh":
        cube = g.add("Mul", i, [g.add("Mul", i, [x], first=x)], first=x)
        inner = g.add("Add", i, [g.add("Mul", i, [g.constant(f"{i}.c", 0.044715)], first=cube)], first=x)
        g.add("Tanh", i, [], first=g.add("Mul", i, [g.constant(f"{i}.k", math.sqrt(2.0 / math.pi))], first=inner))
    else:
        g.add("Erf", i, [], first=g.add("Div", i, [g.constant(f"{i}.sqrt2", math.sqrt(2.0))], first=x))
    g.add("Mul", i, [g.constant(f"{i}.half", 0.5)], first=g.add("Mul", i, [x], first=g.add("Add", i, [g.constant(f"{i}.one", 1.0)])))


def _softplus(g: _GraphBuilder, i: int, layer: Softplus) -> None:
    """ONNX's Softplus is log(1 + exp(x)): no beta, no threshold. At PyTorch's defaults (1, 20) it is the
    layer (above 20, log(1 + exp(x)) is x to float32's precision); otherwise the layer written out:
    Where(beta x > threshold, x, Softplus(beta x) / beta)."""
    if (layer.beta, layer.threshold) == (1.0, 20.0):
        g.add("Softplus", i, [])
        return
    x, beta = g.current, g.constant(f"{i}.beta", layer.beta)
    scaled = g.add("Mul", i, [beta], first=x)
    above = g.add("Greater", i, [g.constant(f"{i}.threshold", layer.threshold)], first=scaled)
    soft = g.add("Div", i, [beta], first=g.add("Softplus", i, [], first=scaled))
    g.add("Where", i, [x, soft], first=above)


def _silu(g: _GraphBuilder, i: int, layer: SiLU) -> None:
    """ONNX has no SiLU (HardSwish is another function): x * Sigmoid(x)."""
    x = g.current
    g.add("Mul", i, [g.add("Sigmoid", i, [], first=x)], first=x)


def _identity(g: _GraphBuilder, i: int, layer: LayerSpec) -> None:
    """Dropout in eval mode, Identity: nothing to compute."""


_BUILDERS: dict[type, Callable[[_GraphBuilder, int, Any], None]] = {
    Linear: _linear, Conv2d: _conv, BatchNorm: _batchnorm, MaxPool2d: _pool("MaxPool"),
    ReLU: lambda g, i, layer: g.add("Relu", i, []),
    Flatten: lambda g, i, layer: g.add("Flatten", i, [], axis=1),
    Dropout: _identity, Dropout2d: _identity, Identity: _identity,
    AvgPool2d: _pool("AveragePool"),
    GlobalPool: _global_pool,
    Scale: lambda g, i, layer: g.add("Mul", i, [g.constant(f"{i}.factor", layer.factor)]),
    GELU: _gelu,
    CELU: lambda g, i, layer: g.add("Celu", i, [], alpha=layer.alpha),
    LeakyReLU: lambda g, i, layer: g.add("LeakyRelu", i, [], alpha=layer.negative_slope),
    Tanh: lambda g, i, layer: g.add("Tanh", i, []),
    Sigmoid: lambda g, i, layer: g.add("Sigmoid", i, []),
    SiLU: _silu,
    Add: lambda g, i, layer: g.add("Sum", i, [], merge=True),
    Concat: lambda g, i, layer: g.add("Concat", i, [], merge=True, axis=1),
    Softplus: _softplus,
}
"""Layer type -> its ONNX rule; tests/spec/test_layer_tables.py checks it covers netspec.spec.layers.LAYER_TYPES."""


def onnx_model(network: Network, weights: Weights, opset: int = DEFAULT_OPSET,
               metadata: Optional[Mapping[str, str]] = None) -> Any:
    """The eval-mode network as a checked onnx.ModelProto (see the module docstring)."""
    onnx = _onnx()
    helper = onnx.helper
    g = _GraphBuilder(onnx, check_weights(network, weights, "weights"))
    outputs = {NETWORK_INPUT: INPUT}
    for node in network.nodes():
        g.begin([outputs[i] for i in node.inputs])
        builder_for(_BUILDERS, node.layer, node.index, "ONNX", "netspec/deploy/export.py")(g, node.index, node.layer)
        outputs[node.index] = g.current
    last = outputs[len(network.layers) - 1]
    if g.nodes and g.nodes[-1].output[0] == last and not any(last in n.input for n in g.nodes):
        g.nodes[-1].output[0] = OUTPUT  # the last node writes the graph's output directly
    else:  # the output passed on from an earlier tensor (dropouts, Identity at the end)
        g.nodes.append(helper.make_node("Identity", [last], [OUTPUT]))
    graph = helper.make_graph(
        g.nodes, "netspec", [_value_info(onnx, INPUT, network.input_shape)],
        [_value_info(onnx, OUTPUT, network.output_shape)], initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version the opset allows, so older runtimes load the file too.
    model = helper.make_model(graph, opset_imports=opsets, producer_name="netspec", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, {NETWORK_KEY: network.model_dump_json(), **(metadata or {})})
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
    """One backend's logits against another model's (the exported file, or an imported original), on
    CHECK_BATCH random inputs."""

    backend: str
    largest_difference: float
    largest_logit: float

    @property
    def tolerance(self) -> float:
        """CHECK_RTOL of the largest logit (at least 1): the rule the export's and the import's checks share."""
        return CHECK_RTOL * max(1.0, self.largest_logit)

    @property
    def ok(self) -> bool:
        return self.largest_difference <= self.tolerance

    def line(self) -> str:
        verdict = "agrees" if self.ok else "DISAGREES"
        return (f"checked against {self.backend}'s logits on {CHECK_BATCH} random inputs: largest difference "
                f"{self.largest_difference:.1e} (largest logit {self.largest_logit:.2f}): {verdict}")


def check_export(path: Path, network: Network, weights: Weights, backend: Any, seed: int = 0) -> Optional[ExportCheck]:
    """Run the exported file in onnxruntime and `backend` (a netspec.protocol.backend.Backend) on the same random
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
                "experiment": json.dumps({"name": saved.experiment.name, "description": saved.experiment.description}),
                SPEC_KEY: saved.experiment.model_dump_json()}
    return export_onnx(saved.experiment.network, saved.weights,
                       saved.directory / ONNX_FILE if out_path is None else out_path, opset, metadata)
