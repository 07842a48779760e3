"""ONNX import: an untrusted .onnx file into a Network and its canonical weights.

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
from netspec.deploy.layer_graph import Activation, LayerGraph, node_problem
from netspec.deploy.onnx_rules import _RULES, UNSUPPORTED_HINT, _gelu_step, _onnx, _Unsupported
from netspec.errors import ShapeError, SpecError
from netspec.io import open_regular
from netspec.spec.experiment import Experiment
from netspec.spec.layers import BatchNorm, Dropout, Dropout2d, Identity, LayerSpec, Shape
from netspec.spec.network import NETWORK_INPUT, Network
from netspec.spec.params import Weights, check_weights

MAX_ONNX_BYTES = 2**31 - 1
"""Largest file read: protobuf's own limit for one message (2 GiB); bigger models need external data,
which is refused."""
MIN_OPSET, MAX_OPSET = 11, 22
"""The default-domain opsets read: 11 (explicit pads and Resize-era semantics everywhere) to 22."""
MAX_NODES = 20_000
"""Most nodes in one graph: a bound on the import's work (the largest shipped spec exports ~60)."""


def _attrs(onnx: Any, node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node: Any, position: int) -> str:
    """A node in words: its name, or (ONNX names are optional) its place in the graph's list."""
    return f"node {repr(node.name) if node.name else position} ({node.op_type})"


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
                maker = _where(model.graph.node[made_by[name]], made_by[name])
                raise SpecError(f"{path}: {_where(node, i)} takes '{name}', which {maker} makes after it: the graph "
                                "has a cycle or is not in order; ONNX graphs list each node after its inputs")
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
