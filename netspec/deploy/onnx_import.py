"""ONNX import: an untrusted .onnx file into a Network and its canonical weights (issue 34).

    imported = import_onnx("model.onnx")      # .network, .weights, .experiment (netspec's own files)

The subset read is what netspec's layers express, in the forms exporters write (torch.onnx.export's
TorchScript exporter, netspec.deploy.export): Conv (groups 1, dilation 1), BatchNormalization (inference),
Relu, LeakyRelu, Gelu, Celu, Tanh, Sigmoid, MaxPool, AveragePool, GlobalAveragePool/GlobalMaxPool (and
ReduceMean/ReduceMax over H, W), Flatten or Reshape to (N, -1) (the Shape-Gather-Unsqueeze-Concat chain of
x.view(x.size(0), -1) is folded), Gemm (any transB, alpha, beta) and MatMul (+ Add of a bias), Add/Sum of
activations, Concat on the channels, Mul or Div by a scalar constant, Dropout and Identity (eval: nothing).
Fusions: Conv+BatchNorm folded by an exporter is a Conv2d with its bias (its BatchNorm is gone from the
file; nothing brings it back), MatMul+Add is one Linear, GlobalAveragePool+Flatten one GlobalPool.

Every unsupported node or attribute is one line (`node 'Conv_7' (Conv): group=32 is not supported; ...`),
all of them at once, in one SpecError. The file is untrusted: its size is bounded before reading, a
truncated protobuf, external data (refused, never read from elsewhere), opsets outside
[MIN_OPSET, MAX_OPSET], names used before they are made (a cycle) or never made, and initializers whose
shapes do not fit are each one line. The onnx package parses; nothing is executed.

A file netspec exported carries its network (and, from a run, its experiment) in metadata_props: the
layers the graph cannot say (dropout rates, BatchNorm momentum, ids) come back from it, but only when its
eval graph is the file's graph (the metadata network exported and imported again gives the same layers),
so the metadata never overrides what the graph computes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import ValidationError

from netspec.deploy.export import NETWORK_KEY, SPEC_KEY, onnx_model
from netspec.deploy.layer_graph import Activation, LayerGraph, float32_decimal, node_problem
from netspec.errors import ShapeError, SpecError, missing_package
from netspec.io import open_regular
from netspec.spec.experiment import Experiment
from netspec.spec.layers import (CELU, GELU, Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, Dropout2d, Flatten,
                                 GlobalPool, Identity, LayerSpec, LeakyReLU, Linear, MaxPool2d, ReLU, Scale, Shape,
                                 Sigmoid, Tanh)
from netspec.spec.network import NETWORK_INPUT, Network
from netspec.spec.params import Weights, check_weights

MAX_ONNX_BYTES = 2**31 - 1
"""Largest file read: protobuf's own limit for one message (2 GiB); bigger models need external data,
which is refused."""
MIN_OPSET, MAX_OPSET = 11, 22
"""The default-domain opsets read: 11 (explicit pads and Resize-era semantics everywhere) to 22."""
MAX_NODES = 20_000
"""Most nodes in one graph: a bound on the import's work (the largest shipped spec exports ~60)."""
BATCH = -(2**40)
"""The batch dimension inside folded shape arithmetic (x.view(x.size(0), -1)): a sentinel no real size equals."""
UNSUPPORTED_HINT = "netspec's layers are Conv2d, BatchNorm, Linear, pooling, activations, Add and Concat"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise missing_package("ONNX import", "the onnx package", "export") from None
    return onnx


class _Unsupported(Exception):
    """One node's problem, in words (becomes `node 'name' (Op): words`)."""


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node: Any, position: int) -> str:
    return f"node '{node.name or f'#{position}'}' ({node.op_type})"


# ---- reading the file --------------------------------------------------------------------------

def read_model(path: str | Path) -> Any:
    """The ModelProto of an untrusted file, bounded and checked; SpecError (one line) otherwise."""
    onnx = _onnx()
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise SpecError(f"{path}: {size:,} bytes, more than the {MAX_ONNX_BYTES:,} netspec reads (protobuf's "
                            "limit); a model that big keeps its weights in external data, which import refuses")
        with open_regular(path) as f:  # a FIFO or device would block or never end
            data = f.read(MAX_ONNX_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{path}: cannot read it ({err.strerror or err}); give an .onnx file") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # google.protobuf.message.DecodeError and its kin: the file is cut or not ONNX
        raise SpecError(f"{path}: not a complete ONNX model (the protobuf does not parse: {err}); the file is "
                        "truncated or not ONNX: export it again") from None
    if not model.HasField("graph") or not model.graph.output:
        raise SpecError(f"{path}: not a complete ONNX model (no graph or no output); the file is truncated or not "
                        "ONNX: export it again")
    _check_opsets(model, path)
    _check_no_external_data(onnx, model, path)
    if len(model.graph.node) > MAX_NODES:
        raise SpecError(f"{path}: {len(model.graph.node):,} nodes, more than the {MAX_NODES:,} netspec imports")
    return model


def _check_opsets(model: Any, path: Path) -> None:
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx"):
            raise SpecError(f"{path}: uses operator set {opset.domain!r}, which netspec does not read; "
                            "export with the standard operators only")
        if not MIN_OPSET <= opset.version <= MAX_OPSET:
            raise SpecError(f"{path}: opset {opset.version} is outside the supported {MIN_OPSET}..{MAX_OPSET}; "
                            f"export with opset_version between them (e.g. 17)")


def _check_no_external_data(onnx: Any, model: Any, path: Path) -> None:
    """Tensors stored in other files are refused, never opened: a path inside an untrusted model would
    read whatever file it names."""
    tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "another file")
            raise SpecError(f"{path}: tensor '{tensor.name}' keeps its data in external file {where!r}; refused "
                            "(netspec never reads files an untrusted model names): save the model with its "
                            "weights inside (onnx.save(model, path, save_as_external_data=False))")


# ---- the graph -----------------------------------------------------------------------------------

def _graph_input(onnx: Any, model: Any, path: Path) -> tuple[str, Shape]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise SpecError(f"{path}: the graph takes {len(inputs)} inputs; netspec's networks take one image or "
                        "feature batch")
    value = inputs[0]
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type != onnx.TensorProto.FLOAT:
        raise SpecError(f"{path}: input '{value.name}' is not a float32 tensor; netspec's networks take float32")
    dims = list(tensor.shape.dim)
    shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:])
    if len(dims) not in (2, 4) or any(s <= 0 for s in shape):
        raise SpecError(f"{path}: input '{value.name}' has shape {[d.dim_value or d.dim_param for d in dims]}; "
                        "netspec needs (batch, C, H, W) or (batch, F) with every size but the batch fixed")
    return value.name, shape


def fixed_batch(model: Any) -> Optional[int]:
    """The batch size a file fixes (torch.onnx.export without dynamic_axes writes its example's), or None."""
    initializers = {t.name for t in model.graph.initializer}
    value = next(i for i in model.graph.input if i.name not in initializers)
    first = value.type.tensor_type.shape.dim[0]
    return first.dim_value if first.HasField("dim_value") and first.dim_value > 0 else None


def _check_order(model: Any, path: Path, known: set[str]) -> None:
    """Every node's inputs made before it: ONNX graphs are topologically sorted, so a name made later is a
    cycle (or a misordered graph) and a name made nowhere is dangling."""
    made_by = {out: i for i, n in enumerate(model.graph.node) for out in n.output}
    seen = set(known)
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            if not name or name in seen:
                continue
            if name in made_by:
                raise SpecError(f"{path}: {_where(node, i)} takes '{name}', which node "
                                f"'{model.graph.node[made_by[name]].name}' makes after it: the graph has a cycle or is "
                                "not in order; ONNX graphs list each node after its inputs")
            raise SpecError(f"{path}: {_where(node, i)} takes '{name}', which no node, input or initializer makes "
                            "(a dangling name); the file is damaged: export it again")
        seen.update(node.output)
    for output in model.graph.output:
        if output.name not in seen:
            raise SpecError(f"{path}: the graph's output '{output.name}' is made by no node (a dangling name)")


def import_graph(model: Any, path: str | Path = "<model>") -> tuple[Network, Weights, dict[int, str]]:
    """The network and canonical weights a ModelProto (from read_model) computes, and the file's tensor
    that holds each layer's output; SpecError listing every unsupported node, one line each."""
    onnx = _onnx()
    path = Path(path)
    if len(model.graph.output) != 1:
        raise SpecError(f"{path}: the graph has {len(model.graph.output)} outputs; netspec's networks give one (the logits)")
    name, shape = _graph_input(onnx, model, path)
    g = LayerGraph(shape)
    g.batch = fixed_batch(model)
    for tensor in model.graph.initializer:
        try:
            g.values[tensor.name] = onnx.numpy_helper.to_array(tensor)
        except Exception as err:  # a raw_data length that does not fit its dims, an unknown type
            raise SpecError(f"{path}: initializer '{tensor.name}' does not decode ({err}); its data does not fit "
                            f"its shape {list(tensor.dims)}: export the model again") from None
    g.values[name] = Activation(NETWORK_INPUT, shape)
    _check_order(model, path, set(g.values))
    for node in model.graph.node:
        for i in node.input:
            g.consumers[i] = g.consumers.get(i, 0) + 1
            g.consumer_ops.setdefault(i, []).append(node.op_type)
    for position, node in enumerate(model.graph.node):
        if any(isinstance(g.values.get(i), _Poisoned) for i in node.input):
            if node.op_type not in _RULES:  # still named: every unsupported node at once
                g.problems.append(f"{_where(node, position)}: operator {node.op_type} is not supported; {UNSUPPORTED_HINT}")
            for out in node.output:
                g.values[out] = _Poisoned()
            continue
        try:
            rule = _RULES.get(node.op_type)
            if node.op_type in ("Div", "Mul", "Erf", "Add") and _gelu_step(g, node, [g.values[i] if i else None for i in node.input]):
                continue
            if rule is None:
                raise _Unsupported(f"operator {node.op_type} is not supported; {UNSUPPORTED_HINT}")
            rule(g, node, _attrs(onnx, node), [g.values[i] if i else None for i in node.input])
        except (_Unsupported, ShapeError) as err:
            g.problems.append(f"{_where(node, position)}: {err}")
            for out in node.output:
                g.values[out] = _Poisoned()
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:  # a damaged node's values
            g.problems.append(f"{_where(node, position)}: {node_problem(err)}")
            for out in node.output:
                g.values[out] = _Poisoned()
    network, weights = g.finish(str(path), g.values[model.graph.output[0].name])
    tensors = {v.layer: name for name, v in g.values.items() if isinstance(v, Activation) and v.layer >= 0}  # the last
    return network, weights, tensors


class _Poisoned:
    """The output of a node that could not be read: its consumers are named only if unsupported themselves."""


# ---- one rule per operator ------------------------------------------------------------------------

def _act(value: Any, what: str = "its input") -> Activation:
    if isinstance(value, _Gelu):
        raise _Unsupported("takes a part of GELU's erf form (x / sqrt 2, erf, 1 + erf); netspec reads the whole "
                           "0.5 x (1 + erf(x / sqrt 2)) as one GELU")
    if not isinstance(value, Activation):
        raise _Unsupported(f"{what} is a constant, not an activation; netspec's layers compute on the network's data")
    if value.pooled:
        raise _Unsupported("takes a global pool's (C, 1, 1) output; netspec's GlobalPool gives (C,): flatten it first")
    return value


def _const(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise _Unsupported(f"{what} must be a constant (an initializer) in netspec's subset, not computed")
    return value


def _fit(array: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """An initializer of the shape its use needs, as float32; else one line naming both shapes."""
    if array.size == math.prod(shape) and array.shape != shape and array.squeeze().shape == tuple(s for s in shape if s != 1):
        array = array.reshape(shape)  # (1, F) biases and the like
    if array.shape != shape:
        raise _Unsupported(f"{what} has shape {list(array.shape)}, but its input needs {list(shape)}")
    if array.dtype.kind != "f" or not np.isfinite(array).all():
        raise _Unsupported(f"{what} must hold finite floats, not {array.dtype}{' with NaN or infinity' if array.dtype.kind == 'f' else ''}")
    return array.astype(np.float32)


def _only(attrs: dict[str, Any], allowed: dict[str, Any]) -> None:
    """Attributes outside `allowed` (name -> the one value netspec has, or None for any) are refused."""
    for name, value in attrs.items():
        if name not in allowed:
            raise _Unsupported(f"attribute {name}={_shown(value)} is not supported")
        if allowed[name] is not None and _shown(value) != _shown(allowed[name]):
            raise _Unsupported(f"{name}={_shown(value)} is not supported; netspec's layer has {name}={_shown(allowed[name])}")


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def _window(attrs: dict[str, Any], kernel: tuple[int, int], op: str) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    strides = tuple(attrs.get("strides", [1, 1]))
    pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise _Unsupported(f"auto_pad={_shown(attrs['auto_pad'])} is not supported; export with explicit pads")
    if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
        raise _Unsupported(f"dilations={list(attrs['dilations'])} is not supported; netspec's {op} has dilation 1")
    if len(kernel) != 2 or len(strides) != 2 or len(pads) != 4:
        raise _Unsupported("is not 2-d; netspec's layers work on (N, C, H, W)")
    return strides, pads  # type: ignore[return-value]


def _conv(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x = _act(inputs[0])
    if len(x.shape) != 3:
        raise _Unsupported(f"takes {x.shape}; netspec's Conv2d needs (C, H, W)")
    w = _const(inputs[1], "its weight")
    if w.ndim != 4:
        raise _Unsupported(f"weight has shape {list(w.shape)}; netspec's Conv2d is 2-d (O, I, kH, kW)")
    if attrs.get("group", 1) != 1:
        raise _Unsupported(f"group={attrs['group']} is not supported; netspec's Conv2d has groups 1")
    _only(attrs, {"group": None, "kernel_shape": None, "strides": None, "pads": None, "dilations": None, "auto_pad": None})
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", w.shape[2:]))
    strides, (top, left, bottom, right) = _window(attrs, kernel, "Conv2d")
    out = int(w.shape[0])
    tensors = {"weight": _fit(w, (out, x.shape[0], *kernel), "its weight")}
    if len(inputs) > 2 and inputs[2] is not None:
        tensors["bias"] = _fit(_const(inputs[2], "its bias"), (out,), "its bias")
    padding: Any
    if top == bottom and left == right:
        padding = top if top == left else [top, left]
    else:
        same = Conv2d(out_channels=out, kernel_size=list(kernel), padding="same")
        if strides != (1, 1) or same.pads() != ((top, bottom), (left, right)):
            raise _Unsupported(f"pads={[top, left, bottom, right]} are uneven; netspec's Conv2d pads evenly, or as "
                               "padding 'same' at stride 1")
        padding = "same"
    square = (lambda p: p[0] if p[0] == p[1] else list(p))
    spec = Conv2d(out_channels=out, kernel_size=square(kernel), stride=square(strides), padding=padding,
                  bias="bias" in tensors)
    g.values[node.output[0]] = g.layer(spec, [x], tensors)


def _batchnorm(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x = _act(inputs[0])
    if attrs.get("training_mode", 0):
        raise _Unsupported("training_mode=1 is not supported; export the model in eval mode")
    if len(node.output) > 1 and any(node.output[1:]):
        raise _Unsupported("outputs its batch statistics (training form); export the model in eval mode")
    _only(attrs, {"epsilon": None, "momentum": None, "training_mode": None, "spatial": 1})
    c = (x.shape[0],)
    names = ("weight", "bias", "running_mean", "running_var")
    tensors = {n: _fit(_const(v, f"its {n}"), c, f"its {n}") for n, v in zip(names, inputs[1:5])}
    if (tensors["running_var"] < 0).any():
        raise _Unsupported("running_var has negative values; a variance is never negative")
    # ONNX's momentum weighs the running value (0.9 = PyTorch's 0.1)
    kept = float(attrs.get("momentum", 0.9))
    momentum = round(1.0 - kept, 6) if 0.0 <= kept < 1.0 else 0.1
    spec = BatchNorm(momentum=momentum, eps=float32_decimal(float(attrs.get("epsilon", 1e-5))))
    g.values[node.output[0]] = g.layer(spec, [x], tensors)


def _elementwise(spec: LayerSpec, allowed: Optional[dict[str, Any]] = None) -> Any:
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        _only(attrs, allowed or {})
        g.values[node.output[0]] = g.layer(spec, [_act(inputs[0])])
    return rule


def _alpha(make: Any, default: float) -> Any:
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        _only(attrs, {"alpha": None})
        spec = make(float32_decimal(float(attrs.get("alpha", default))))
        g.values[node.output[0]] = g.layer(spec, [_act(inputs[0])])
    return rule


def _gelu(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    _only(attrs, {"approximate": None})
    approximate = _shown(attrs.get("approximate", b"none"))
    if approximate not in ("none", "tanh"):
        raise _Unsupported(f"approximate={approximate} is not supported; netspec's GELU has none or tanh")
    g.values[node.output[0]] = g.layer(GELU(approximate=approximate), [_act(inputs[0])])  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Gelu:
    """A step of the erf form of GELU that exporters write below opset 20 (netspec's own, torch's):
    x / sqrt(2) -> erf -> + 1 -> * x -> * 0.5. `step` is how far it got, `x` the activation it is of."""

    x: Activation
    step: str


def _gelu_step(g: LayerGraph, node: Any, inputs: list[Any]) -> bool:
    """Advance the erf form of GELU by one node; False when the node is not its next step."""
    exprs = [v for v in inputs if isinstance(v, _Gelu)]
    consts = [float(v.reshape(-1)[0]) for v in inputs if isinstance(v, np.ndarray) and v.size == 1]
    acts = [v for v in inputs if isinstance(v, Activation)]
    op, out = node.op_type, node.output[0]
    if not exprs and g.consumer_ops.get(out) != ["Erf"]:  # a plain Scale unless an Erf alone takes it
        return False
    if op == "Div" and len(acts) == 1 and consts and inputs[0] is acts[0] and math.isclose(consts[0], math.sqrt(2), rel_tol=1e-6):
        g.values[out] = _Gelu(acts[0], "scaled")
    elif op == "Mul" and len(acts) == 1 and consts and math.isclose(consts[0], 1 / math.sqrt(2), rel_tol=1e-6):
        g.values[out] = _Gelu(acts[0], "scaled")
    elif not exprs:
        return False
    elif op == "Erf" and exprs[0].step == "scaled":
        g.values[out] = _Gelu(exprs[0].x, "erf")
    elif op == "Add" and exprs[0].step == "erf" and consts and consts[0] == 1.0:
        g.values[out] = _Gelu(exprs[0].x, "one_plus")
    elif op == "Mul" and exprs[0].step == "one_plus" and acts and acts[0] is exprs[0].x:
        g.values[out] = _Gelu(exprs[0].x, "times_x")
    elif op == "Mul" and exprs[0].step == "one_plus" and consts and consts[0] == 0.5:
        g.values[out] = _Gelu(exprs[0].x, "half")
    elif op == "Mul" and ((exprs[0].step == "times_x" and consts and consts[0] == 0.5)
                          or (exprs[0].step == "half" and acts and acts[0] is exprs[0].x)):
        g.values[out] = g.layer(GELU(), [_act(exprs[0].x)])
    else:
        return False
    return True


def _pool(op: str) -> Any:
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        x = _act(inputs[0])
        if len(node.output) > 1 and any(node.output[1:]):
            raise _Unsupported("outputs the max's indices; netspec's MaxPool2d gives the values only")
        if attrs.get("ceil_mode", 0):
            raise _Unsupported("ceil_mode=1 is not supported; netspec's pools round down (PyTorch's default)")
        allowed = {"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "ceil_mode": 0, "dilations": None}
        if op == "MaxPool2d":
            allowed["storage_order"] = 0
        else:
            allowed["count_include_pad"] = None
        _only(attrs, allowed)
        kernel = tuple(int(k) for k in attrs["kernel_shape"])
        strides, (top, left, bottom, right) = _window(attrs, kernel, op)
        if (top, left) != (bottom, right):
            raise _Unsupported(f"pads={[top, left, bottom, right]} are uneven; netspec's {op} pads evenly")
        square = (lambda p: p[0] if p[0] == p[1] else list(p))
        fields: dict[str, Any] = {"kernel_size": square(kernel), "padding": square((top, left)),
                                  "stride": None if strides == kernel else square(strides)}
        if op == "AvgPool2d":  # ONNX's default is 0, PyTorch's True
            fields["count_include_pad"] = bool(attrs.get("count_include_pad", 0)) or (top, left) == (0, 0)
        spec = (MaxPool2d if op == "MaxPool2d" else AvgPool2d)(**fields)
        g.values[node.output[0]] = g.layer(spec, [x], {})
    return rule


def _global_pool(mode: str) -> Any:
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        _only(attrs, {})
        act = g.layer(GlobalPool(mode=mode), [_act(inputs[0])])  # type: ignore[arg-type]
        act.pooled = True  # (C, 1, 1) until a Flatten or Reshape makes it the GlobalPool's (C,)
        g.values[node.output[0]] = act
    return rule


def _reduce(mode: str) -> Any:
    """ReduceMean/ReduceMax over H and W (x.mean((2, 3))): a GlobalPool."""
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        x = _act(inputs[0])
        axes = attrs.get("axes", list(_const(inputs[1], "its axes")) if len(inputs) > 1 and inputs[1] is not None else [])
        axes = sorted(int(a) % 4 for a in axes)
        _only(attrs, {"axes": None, "keepdims": None, "noop_with_empty_axes": 0})
        if len(x.shape) != 3 or axes != [2, 3]:
            raise _Unsupported(f"reduces axes {axes}; netspec expresses a reduction over H and W only (GlobalPool)")
        act = g.layer(GlobalPool(mode=mode), [x])  # type: ignore[arg-type]
        act.pooled = bool(attrs.get("keepdims", 1))
        g.values[node.output[0]] = act
    return rule


def _flat(g: LayerGraph, node: Any, x: Activation) -> None:
    """Flatten to (N, -1): a pooled (C, 1, 1) is the GlobalPool's (C,) already."""
    if x.pooled:
        g.values[node.output[0]] = Activation(x.layer, x.shape)
    else:
        g.values[node.output[0]] = g.layer(Flatten(), [x])


def _flatten(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    _only(attrs, {"axis": 1})
    if isinstance(inputs[0], Activation):
        _flat(g, node, inputs[0])
    else:
        raise _Unsupported("flattens a constant; netspec's Flatten takes the network's data")


def _reshape(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x, target = inputs[0], [int(s) for s in _const(inputs[1], "its shape").reshape(-1)]
    if not isinstance(x, Activation):
        g.values[node.output[0]] = _const(x, "its data").reshape(target)
        return
    _only(attrs, {"allowzero": 0})
    features = math.prod(x.shape)
    if len(target) == 2 and target[0] in (BATCH, 0, -1, g.batch) and target[1] in (-1, features) and target != [-1, -1]:
        _flat(g, node, x)
        return
    raise _Unsupported(f"reshapes to {['N' if t == BATCH else t for t in target]}; netspec reshapes to (N, -1) only "
                       "(its Flatten)")


def _gemm(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x = _act(inputs[0])
    if attrs.get("transA", 0):
        raise _Unsupported("transA=1 is not supported; the data is Gemm's first input, untransposed")
    _only(attrs, {"alpha": None, "beta": None, "transA": 0, "transB": None})
    if len(x.shape) != 1:
        raise _Unsupported(f"takes {x.shape}; netspec's Linear needs a flat input: flatten it first")
    b = _const(inputs[1], "its weight B")
    w = b if attrs.get("transB", 0) else b.T  # Linear's weight is (out, in): transB=1 is PyTorch's layout
    if w.ndim != 2 or w.shape[1] != x.shape[0]:
        raise _Unsupported(f"weight has shape {list(b.shape)} (transB={attrs.get('transB', 0)}), which does not take "
                           f"{x.shape[0]} input features")
    tensors = {"weight": _fit(w * float(attrs.get("alpha", 1.0)), tuple(w.shape), "its weight")}
    if len(inputs) > 2 and inputs[2] is not None:
        c = _const(inputs[2], "its bias C")
        tensors["bias"] = _fit(np.broadcast_to(c, (1, w.shape[0])).reshape(-1) * float(attrs.get("beta", 1.0)),
                               (w.shape[0],), "its bias C")
    g.values[node.output[0]] = g.layer(Linear(out_features=int(w.shape[0]), bias="bias" in tensors), [x], tensors)


def _matmul(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x = _act(inputs[0])
    w = _const(inputs[1], "its second input (the weight)")
    if len(x.shape) != 1 or w.ndim != 2 or w.shape[0] != x.shape[0]:
        raise _Unsupported(f"multiplies {x.shape} by {list(w.shape)}; netspec's Linear takes (N, F) @ (F, out)")
    weight = _fit(np.ascontiguousarray(w.T), (w.shape[1], w.shape[0]), "its weight")
    g.values[node.output[0]] = g.layer(Linear(out_features=int(w.shape[1]), bias=False), [x], {"weight": weight})


def _add(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    acts = [v for v in inputs if isinstance(v, Activation)]
    consts = [v for v in inputs if isinstance(v, np.ndarray)]
    if len(acts) == len(inputs) and len(acts) >= 2:
        g.values[node.output[0]] = g.layer(Add(), [_act(a) for a in acts])
        return
    if len(acts) == 1 and len(consts) == 1 and node.op_type == "Add":
        x = acts[0]
        last = g.layers[x.layer] if x.layer >= 0 else None
        # MatMul + Add: the bias of the Linear just made, when nothing else takes its bias-free output
        if (last is not None and x.layer == len(g.layers) - 1 and last["type"] == "Linear" and not last["bias"]
                and g.consumers.get(node.input[inputs.index(x)], 0) == 1):
            last["bias"] = True
            g.weights[f"{x.layer}.bias"] = _fit(np.broadcast_to(consts[0], (1, x.shape[0])).reshape(-1),
                                                 x.shape, "its bias")
            g.values[node.output[0]] = x
            return
    raise _Unsupported("adds a constant other than a MatMul's bias; netspec's Add sums activations "
                       "(a residual), a Linear or Conv2d holds biases")


def _concat(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    if all(isinstance(v, np.ndarray) for v in inputs):  # shape arithmetic: x.view(x.size(0), -1)
        g.values[node.output[0]] = np.concatenate([v.reshape(-1) for v in inputs], axis=int(attrs.get("axis", 0)))
        return
    acts = [_act(v, "an input") for v in inputs]
    rank = len(acts[0].shape) + 1
    if int(attrs.get("axis", 0)) % rank != 1:
        raise _Unsupported(f"axis={attrs.get('axis')} is not supported; netspec's Concat joins the channels (axis 1)")
    g.values[node.output[0]] = g.layer(Concat(), acts)


def _scale(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    acts = [v for v in inputs if isinstance(v, Activation)]
    consts = [v for v in inputs if isinstance(v, np.ndarray)]
    if len(acts) == 1 and len(consts) == 1 and consts[0].size == 1 and (node.op_type == "Mul" or inputs[1] is consts[0]):
        c = float(consts[0].reshape(()))
        if np.isfinite(c) and c != 0:
            factor = c if node.op_type == "Mul" else 1.0 / c
            g.values[node.output[0]] = g.layer(Scale(factor=float32_decimal(factor)), [_act(acts[0])])
            return
    if not acts:  # constants only: fold
        a, b = (np.asarray(v) for v in inputs)
        g.values[node.output[0]] = a * b if node.op_type == "Mul" else a / b
        return
    raise _Unsupported(f"{'multiplies' if node.op_type == 'Mul' else 'divides'} by something other than one "
                       "constant number; netspec's Scale multiplies by a scalar")


def _pass(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    """Identity, and Dropout in eval form (its mask output unused, no training_mode)."""
    if node.op_type == "Dropout" and (len(inputs) > 2 and isinstance(inputs[2], np.ndarray) and bool(inputs[2])):
        raise _Unsupported("has training_mode true; export the model in eval mode")
    if len(node.output) > 1 and any(g.consumers.get(o, 0) for o in node.output[1:]):
        raise _Unsupported("its mask is used; export the model in eval mode")
    g.values[node.output[0]] = inputs[0]


# shape arithmetic on constants (the view(x.size(0), -1) chain); nothing on activations
def _shape(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    x = inputs[0]
    dims = np.array([g.batch or BATCH, *x.shape], np.int64) if isinstance(x, Activation) else np.array(np.shape(x), np.int64)
    g.values[node.output[0]] = dims[attrs.get("start", 0): attrs.get("end", None)]


def _constant(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
    onnx = _onnx()
    (name, value), = attrs.items()
    if name == "value":
        g.values[node.output[0]] = onnx.numpy_helper.to_array(value)
    elif name in ("value_float", "value_int", "value_floats", "value_ints"):
        g.values[node.output[0]] = np.asarray(value, np.float32 if "float" in name else np.int64)
    else:
        raise _Unsupported(f"a constant of kind {name} is not supported")


def _on_constants(fn: Any) -> Any:
    def rule(g: LayerGraph, node: Any, attrs: dict[str, Any], inputs: list[Any]) -> None:
        if any(isinstance(v, Activation) for v in inputs):
            raise _Unsupported(f"operator {node.op_type} on activations is not supported; {UNSUPPORTED_HINT}")
        g.values[node.output[0]] = np.asarray(fn(attrs, *[_const(v, "an input") for v in inputs if v is not None]))
    return rule


def _unsqueeze(attrs: dict[str, Any], x: np.ndarray, axes: Optional[np.ndarray] = None) -> np.ndarray:
    for a in sorted(int(a) for a in (attrs["axes"] if axes is None else axes)):
        x = np.expand_dims(x, a)
    return x


_RULES: dict[str, Any] = {
    "Conv": _conv, "BatchNormalization": _batchnorm,
    "Relu": _elementwise(ReLU()), "Tanh": _elementwise(Tanh()), "Sigmoid": _elementwise(Sigmoid()),
    "LeakyRelu": _alpha(lambda a: LeakyReLU(negative_slope=a), 0.01), "Celu": _alpha(lambda a: CELU(alpha=a), 1.0),
    "Gelu": _gelu,
    "MaxPool": _pool("MaxPool2d"), "AveragePool": _pool("AvgPool2d"),
    "GlobalAveragePool": _global_pool("avg"), "GlobalMaxPool": _global_pool("max"),
    "ReduceMean": _reduce("avg"), "ReduceMax": _reduce("max"),
    "Flatten": _flatten, "Reshape": _reshape,
    "Gemm": _gemm, "MatMul": _matmul, "Add": _add, "Sum": _add, "Concat": _concat, "Mul": _scale, "Div": _scale,
    "Dropout": _pass, "Identity": _pass,
    "Shape": _shape, "Constant": _constant,
    "Gather": _on_constants(lambda attrs, x, i: np.take(x, i, axis=int(attrs.get("axis", 0)))),
    "Unsqueeze": _on_constants(_unsqueeze),
    "Squeeze": _on_constants(lambda attrs, x, *axes: np.squeeze(x, tuple(int(a) for a in (attrs.get("axes") or (axes[0] if axes else ()))) or None)),
    "Cast": _on_constants(lambda attrs, x: x),
    "Transpose": _on_constants(lambda attrs, x: np.transpose(x, attrs.get("perm"))),  # a weight, unfolded
}
"""ONNX operator -> its rule: it reads the node's inputs (activations or constants) and sets its output."""


# ---- netspec's own metadata -----------------------------------------------------------------------

EVAL_ONLY = (Dropout, Dropout2d, Identity)
"""Layers the eval graph does not show (the exporter writes nothing for them)."""


def restore_from_metadata(model: Any, network: Network, weights: Weights, tensors: dict[int, str],
                          log: Any = print) -> tuple[Network, Weights, dict[int, str], Optional[Experiment]]:
    """The network (and experiment) of netspec's metadata when its eval graph is `network`'s, with
    `weights` (and the layers' tensors) under its layer indices; else the imported network as it is."""
    unchanged = network, weights, tensors, None
    props = {p.key: p.value for p in model.metadata_props}
    if NETWORK_KEY not in props:
        return unchanged
    try:
        stated = Network.model_validate_json(props[NETWORK_KEY])
        # untrusted words: a network bigger than the file's own tensors is never allocated
        if sum(math.prod(i.shape) for i in stated.param_infos().values()) > 2 * sum(w.size for w in weights.values()) + 2**16:
            raise ValueError("it states more weights than the file holds")
        zeros = {n: np.zeros(i.shape, i.dtype) for n, i in stated.param_infos().items()}
        again, _, _ = import_graph(onnx_model(stated, zeros), "metadata")
    except (ValidationError, SpecError, ValueError) as err:
        log(f"the model's netspec metadata does not describe it ({str(err).splitlines()[0][:200]}); using the graph's layers")
        return unchanged
    if [_eval_layer(a) for a in again.layers] != [_eval_layer(b) for b in network.layers] or _wiring(again) != _wiring(network):
        log("the model's netspec metadata names another network than its graph computes; using the graph's layers")
        return unchanged
    kept = [i for i, layer in enumerate(stated.layers) if not isinstance(layer, EVAL_ONLY)]
    restored: Weights = {}
    nodes = stated.nodes()
    for k, i in enumerate(kept):
        for suffix, info in stated.layers[i].params(nodes[i].input_shape).items():
            value = weights.get(f"{k}.{suffix}", np.zeros(info.shape, info.dtype))
            restored[f"{i}.{suffix}"] = value
    for k, i in enumerate(kept):  # affine=False: the graph's scale and shift must be PyTorch's 1 and 0
        layer = stated.layers[i]
        if isinstance(layer, BatchNorm) and not layer.affine and not (
                np.all(weights[f"{k}.weight"] == 1) and np.all(weights[f"{k}.bias"] == 0)):
            log("the model's netspec metadata says a BatchNorm without scale and shift, but the graph has them; "
                "using the graph's layers")
            return unchanged
    experiment = None
    if SPEC_KEY in props:
        try:
            experiment = Experiment.model_validate_json(props[SPEC_KEY])
        except ValidationError:
            experiment = None
        if experiment is not None and experiment.network != stated:
            experiment = None
    moved = {i: tensors[k] for k, i in enumerate(kept) if k in tensors}
    return stated, check_weights(stated, restored, "the model's weights"), moved, experiment


def _eval_layer(layer: LayerSpec) -> dict[str, Any]:
    return layer.model_dump(mode="json", exclude={"id", "inputs"})


def _wiring(network: Network) -> list[tuple[int, ...]]:
    return [n.inputs for n in network.nodes()]


# ---- the whole import -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Imported:
    """What an import gives: the network, its canonical weights, the experiment when the file carries
    netspec's, the ModelProto and the tensor of each layer's output (for the verification)."""

    network: Network
    weights: Weights
    experiment: Optional[Experiment]
    model: Any
    tensors: dict[int, str]


def import_onnx(path: str | Path, log: Any = print) -> Imported:
    """Read an untrusted ONNX file into a network and canonical weights (see the module docstring)."""
    model = read_model(path)
    network, weights, tensors, experiment = restore_from_metadata(model, *import_graph(model, path), log=log)
    return Imported(network, weights, experiment, model, tensors)


def default_experiment(name: str, network: Network) -> Optional[Experiment]:
    """An experiment with default data and training for a CIFAR-10-shaped network ((3, 32, 32) -> 10
    logits, or its flat 3072 features); None for any other (the network alone is written)."""
    if tuple(network.input_shape) not in ((3, 32, 32), (3072,)) or network.output_shape != (10,):
        return None
    return Experiment(name=name, description="imported", network=network)
