"""A torch.nn.Module into a netspec Network and canonical weights, by torch.fx (reached as
`netspec.from_torch`, through the torch backend of the registry).

    network, weights, original = trace(module, (3, 32, 32))

torch.fx.symbolic_trace records the module's forward as a graph of calls; each call maps to a layer:
modules (Conv2d, BatchNorm1d/2d, Linear, ReLU, LeakyReLU, GELU, CELU, Tanh, Sigmoid, MaxPool2d, AvgPool2d,
AdaptiveAvg/MaxPool2d(1), Flatten, Dropout, Dropout2d, Identity, nn.Sequential and any module made of
them), functions (`+`/torch.add of two activations, torch.cat on the channels, F.relu, F.max_pool2d,
F.avg_pool2d, torch.flatten(x, 1), `x * c` and `x / c` for a number c), and methods (x.view(x.size(0), -1),
x.flatten(1), x.relu(), x.mean((2, 3))). Anything else is one line naming its qualified name (the
module's path in the model, or the function), all at once. The layers' tensors are the module's own
state_dict entries, under canonical names. `original` runs the module itself (eval mode) and records each
layer's output for the verification (netspec.deploy.import_check).
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from netspec.deploy import import_check
from netspec.deploy.import_check import Original
from netspec.deploy.layer_graph import Activation, LayerGraph, node_problem
from netspec.errors import ShapeError, SpecError
from netspec.protocol.backend import installed_backends, load_backend
from netspec.spec import layers as L
from netspec.spec.network import NETWORK_INPUT, Network
from netspec.spec.params import Weights


class _Unsupported(Exception):
    """One call's problem, in words."""


def _pair(value: Any) -> Any:
    """An int or a pair as netspec writes it: the int when both sides agree."""
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    return a if a == b else [a, b]


def _tensors(module: nn.Module, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    state = module.state_dict()
    return {n: state[n].detach().cpu().numpy().copy() for n in names if n in state and state[n] is not None}


# ---- modules ---------------------------------------------------------------------------------------

def _conv(m: nn.Conv2d) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
    if m.groups != 1:
        raise _Unsupported(f"groups={m.groups} is not supported; netspec's Conv2d has groups 1")
    if tuple(m.dilation) != (1, 1):
        raise _Unsupported(f"dilation={tuple(m.dilation)} is not supported; netspec's Conv2d has dilation 1")
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r} is not supported; netspec's Conv2d pads with zeros")
    padding = "same" if m.padding == "same" else 0 if m.padding == "valid" else _pair(m.padding)
    spec = L.Conv2d(out_channels=m.out_channels, kernel_size=_pair(m.kernel_size), stride=_pair(m.stride),
                    padding=padding, bias=m.bias is not None)
    return spec, _tensors(m, ("weight", "bias"))


def _batchnorm(m: nn.modules.batchnorm._BatchNorm) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
    if not m.track_running_stats or m.running_mean is None:
        raise _Unsupported("track_running_stats=False is not supported; netspec's BatchNorm keeps running statistics")
    if m.momentum is None:
        raise _Unsupported("momentum=None (a cumulative average) is not supported; netspec's BatchNorm has a momentum")
    spec = L.BatchNorm(momentum=m.momentum, eps=m.eps, affine=m.affine)
    return spec, _tensors(m, ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))


def _pool(kind: type) -> Callable[[Any], tuple[L.LayerSpec, dict[str, np.ndarray]]]:
    def rule(m: Any) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
        return _pool_spec(kind, m.kernel_size, m.stride, m.padding, m.ceil_mode, getattr(m, "dilation", 1),
                          getattr(m, "count_include_pad", True), getattr(m, "divisor_override", None)), {}
    return rule


def _pool_spec(kind: type, kernel: Any, stride: Any, padding: Any, ceil_mode: bool, dilation: Any = 1,
               count_include_pad: bool = True, divisor_override: Any = None) -> L.LayerSpec:
    if ceil_mode:
        raise _Unsupported("ceil_mode=True is not supported; netspec's pools round down (PyTorch's default)")
    if _pair(dilation) != 1:
        raise _Unsupported(f"dilation={dilation} is not supported; netspec's pools have dilation 1")
    if divisor_override is not None:
        raise _Unsupported("divisor_override is not supported")
    stride = None if stride is None or stride == [] or _pair(stride) == _pair(kernel) else _pair(stride)
    fields: dict[str, Any] = {"kernel_size": _pair(kernel), "stride": stride, "padding": _pair(padding)}
    if kind is L.AvgPool2d:
        fields["count_include_pad"] = bool(count_include_pad)
    return kind(**fields)


def _adaptive(mode: str) -> Callable[[Any], tuple[L.LayerSpec, dict[str, np.ndarray]]]:
    def rule(m: Any) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
        if _pair(m.output_size) != 1:
            raise _Unsupported(f"output_size={m.output_size} is not supported; netspec's GlobalPool pools to 1x1")
        return L.GlobalPool(mode=mode), {}  # type: ignore[arg-type]
    return rule


def _plain(make: Callable[[Any], L.LayerSpec]) -> Callable[[Any], tuple[L.LayerSpec, dict[str, np.ndarray]]]:
    return lambda m: (make(m), {})


def _flatten_module(m: nn.Flatten) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
    if (m.start_dim, m.end_dim) != (1, -1):
        raise _Unsupported(f"start_dim={m.start_dim}, end_dim={m.end_dim} is not supported; netspec flattens (N, -1)")
    return L.Flatten(), {}


def _linear(m: nn.Linear) -> tuple[L.LayerSpec, dict[str, np.ndarray]]:
    return L.Linear(out_features=m.out_features, bias=m.bias is not None), _tensors(m, ("weight", "bias"))


_MODULES: dict[type, Callable[[Any], tuple[L.LayerSpec, dict[str, np.ndarray]]]] = {
    nn.Conv2d: _conv, nn.BatchNorm2d: _batchnorm, nn.BatchNorm1d: _batchnorm, nn.Linear: _linear,
    nn.ReLU: _plain(lambda m: L.ReLU()), nn.Tanh: _plain(lambda m: L.Tanh()), nn.Sigmoid: _plain(lambda m: L.Sigmoid()),
    nn.LeakyReLU: _plain(lambda m: L.LeakyReLU(negative_slope=m.negative_slope)),
    nn.GELU: _plain(lambda m: L.GELU(approximate=m.approximate)), nn.CELU: _plain(lambda m: L.CELU(alpha=m.alpha)),
    nn.MaxPool2d: _pool(L.MaxPool2d), nn.AvgPool2d: _pool(L.AvgPool2d),
    nn.AdaptiveAvgPool2d: _adaptive("avg"), nn.AdaptiveMaxPool2d: _adaptive("max"),
    nn.Flatten: _flatten_module, nn.Identity: _plain(lambda m: L.Identity()),
    nn.Dropout: _plain(lambda m: L.Dropout(p=m.p)), nn.Dropout2d: _plain(lambda m: L.Dropout2d(p=m.p)),
}
"""torch.nn module type -> (its layer spec, its tensors by state_dict suffix)."""

_ELEMENTWISE: dict[Any, Callable[[dict[str, Any]], L.LayerSpec]] = {
    F.relu: lambda kw: L.ReLU(), torch.relu: lambda kw: L.ReLU(), "relu": lambda kw: L.ReLU(),
    torch.tanh: lambda kw: L.Tanh(), "tanh": lambda kw: L.Tanh(),
    torch.sigmoid: lambda kw: L.Sigmoid(), "sigmoid": lambda kw: L.Sigmoid(),
    F.gelu: lambda kw: L.GELU(approximate=kw.get("approximate", "none")),
    F.leaky_relu: lambda kw: L.LeakyReLU(negative_slope=kw.get("negative_slope", 0.01)),
}
"""Functions and methods of one activation that are a parameter-free layer (their keyword arguments given)."""


# ---- the trace -----------------------------------------------------------------------------------

class _Tracer:
    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]) -> None:
        self.module = module
        self.graph = LayerGraph(tuple(input_shape))
        self.layer_of: dict[str, int] = {}
        """fx node name -> the layer whose output it is."""

    def run(self) -> tuple[fx.GraphModule, Any]:
        try:
            traced = fx.symbolic_trace(self.module)
        except Exception as err:  # data-dependent control flow and the like: torch.fx's own words
            raise SpecError(f"torch.fx cannot trace the module ({type(err).__name__}: {str(err).splitlines()[0]}); "
                            "from_torch reads modules whose forward is a fixed graph of calls") from None
        g, output = self.graph, None
        placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise SpecError(f"the module's forward takes {len(placeholders)} inputs; netspec's networks take one")
        for node in traced.graph.nodes:
            if node.op == "placeholder":
                g.values[node.name] = Activation(NETWORK_INPUT, g.input_shape)
                continue
            if node.op == "output":
                output = self._value(node.args[0])
                continue
            if any(isinstance(v, _Poisoned) for v in self._inputs(node)):
                if not self._known(traced, node):  # still named: every unsupported call at once
                    g.problems.append(f"{self._where(traced, node)}: is not supported; "
                                      f"{_SUPPORTED_MODULES if node.op == 'call_module' else _SUPPORTED_CALLS}")
                g.values[node.name] = _Poisoned()
                continue
            try:
                g.values[node.name] = self._node(traced, node)
            except (_Unsupported, ShapeError) as err:
                g.problems.append(f"{self._where(traced, node)}: {err}")
                g.values[node.name] = _Poisoned()
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:  # a layer netspec refuses
                g.problems.append(f"{self._where(traced, node)}: {node_problem(err)}")
                g.values[node.name] = _Poisoned()
            value = g.values[node.name]
            if isinstance(value, Activation) and value.layer >= 0:
                self.layer_of[node.name] = value.layer
        return traced, output

    def _inputs(self, node: fx.Node) -> list[Any]:
        found: list[Any] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(self.graph.values.get(n.name)))
        return found

    def _value(self, arg: Any) -> Any:
        return fx.node.map_aggregate(arg, lambda a: self.graph.values[a.name] if isinstance(a, fx.Node) else a)

    @staticmethod
    def _known(traced: fx.GraphModule, node: fx.Node) -> bool:
        if node.op == "call_module":
            return type(traced.get_submodule(node.target)) in _MODULES
        return node.op in ("call_function", "call_method") and any(node.target is t or node.target == t for t in _KNOWN)

    @staticmethod
    def _where(traced: fx.GraphModule, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"module '{node.target}' ({type(traced.get_submodule(node.target)).__name__})"
        qualified = fx.node._get_qualified_name(node.target) if node.op == "call_function" else str(node.target)
        return f"{'call' if node.op == 'call_function' else 'method'} '{qualified}' at node '{node.name}'"

    def _act(self, value: Any) -> Activation:
        if not isinstance(value, Activation):
            raise _Unsupported("takes a constant where netspec's layers take the network's data")
        if value.pooled:
            raise _Unsupported("takes a (C, 1, 1) global pool; netspec's GlobalPool gives (C,): flatten it first")
        return value

    def _node(self, traced: fx.GraphModule, node: fx.Node) -> Any:
        g = self.graph
        args = [self._value(a) for a in node.args]
        kwargs = {k: self._value(v) for k, v in node.kwargs.items()}
        if node.op == "call_module":
            sub = traced.get_submodule(node.target)
            rule = _MODULES.get(type(sub))
            if rule is None:
                raise _Unsupported(f"is not supported; {_SUPPORTED_MODULES}")
            spec, tensors = rule(sub)
            out = g.layer(spec, [self._act(args[0])], tensors)
            out.pooled = isinstance(spec, L.GlobalPool)  # AdaptivePool2d(1) gives (C, 1, 1)
            return out
        if node.op == "get_attr":
            raise _Unsupported("reads a tensor attribute of the module; netspec's layers own their tensors")
        target = node.target
        if target in (operator.add, torch.add, "add"):
            if all(isinstance(a, Activation) for a in args[:2]):
                return g.layer(L.Add(), [self._act(a) for a in args[:2]])
            raise _Unsupported("adds a constant; netspec's Add sums two activations (a residual)")
        if target in (operator.mul, torch.mul, "mul", operator.truediv, torch.div, "div"):
            acts = [a for a in args[:2] if isinstance(a, Activation)]
            numbers = [a for a in args[:2] if isinstance(a, (int, float)) and not isinstance(a, bool)]
            divides = target in (operator.truediv, torch.div, "div")
            if len(acts) == 1 and len(numbers) == 1 and numbers[0] != 0 and (not divides or args[1] is numbers[0]):
                factor = 1.0 / numbers[0] if divides else float(numbers[0])
                return g.layer(L.Scale(factor=factor), [self._act(acts[0])])
            raise _Unsupported("multiplies by something other than a number; netspec's Scale multiplies by a constant")
        if target is torch.cat:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            tensors = [self._act(a) for a in (args[0] if isinstance(args[0], (list, tuple)) else [])]
            if dim != 1 or len(tensors) < 2:
                raise _Unsupported(f"dim={dim} is not supported; netspec's Concat joins channels (dim 1)")
            return g.layer(L.Concat(), tensors)
        if target in _ELEMENTWISE:
            if kwargs.get("inplace") or (len(args) > 1 and target is F.relu and args[1]):
                pass  # in place or not, the same values
            return g.layer(_ELEMENTWISE[target](kwargs), [self._act(args[0])])
        if target in (F.max_pool2d, F.avg_pool2d):
            names = ("kernel_size", "stride", "padding") + (("dilation", "ceil_mode") if target is F.max_pool2d
                                                            else ("ceil_mode", "count_include_pad", "divisor_override"))
            given = {**dict(zip(names, args[1:])), **kwargs}
            kind = L.MaxPool2d if target is F.max_pool2d else L.AvgPool2d
            spec = _pool_spec(kind, given["kernel_size"], given.get("stride"), given.get("padding", 0),
                              given.get("ceil_mode", False), given.get("dilation", 1),
                              given.get("count_include_pad", True), given.get("divisor_override"))
            return g.layer(spec, [self._act(args[0])])
        if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            if _pair(kwargs.get("output_size", args[1] if len(args) > 1 else None)) != 1:
                raise _Unsupported("pools to a size other than 1; netspec's GlobalPool pools to 1x1")
            out = g.layer(L.GlobalPool(mode="avg" if target is F.adaptive_avg_pool2d else "max"), [self._act(args[0])])
            out.pooled = True
            return out
        if target in (F.dropout, F.dropout2d, "dropout"):
            spec = (L.Dropout2d if target is F.dropout2d else L.Dropout)(p=float(kwargs.get("p", args[1] if len(args) > 1 else 0.5)))
            return g.layer(spec, [self._act(args[0])])
        if target in (torch.flatten, "flatten"):
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            if (start, end) != (1, -1):
                raise _Unsupported(f"start_dim={start}, end_dim={end} is not supported; netspec flattens to (N, -1)")
            return self._flat(args[0])
        if target in ("view", "reshape"):
            shape = list(args[1:]) if not isinstance(args[1], (list, tuple)) else list(args[1])
            x = args[0]
            if isinstance(x, Activation) and len(shape) == 2 and shape[0] in (_BATCH, -1) and shape[1] in (-1, _numel(x)) \
                    and shape != [-1, -1]:
                return self._flat(x)
            raise _Unsupported(f"to {shape} is not supported; netspec reshapes to (N, -1) only (its Flatten)")
        if target == "size":
            if isinstance(args[0], Activation) and (args[1:] == [0] or kwargs.get("dim") == 0):
                return _BATCH
            raise _Unsupported("of a dimension other than the batch is not supported")
        if target == "mean" and isinstance(args[0], Activation):
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if dims is not None and sorted(d % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims])) == [2, 3]:
                out = g.layer(L.GlobalPool(mode="avg"), [self._act(args[0])])
                out.pooled = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
                return out
            raise _Unsupported(f"over dims {dims} is not supported; netspec's GlobalPool averages over H and W")
        raise _Unsupported(f"is not supported; {_SUPPORTED_CALLS}")

    def _flat(self, x: Any) -> Activation:
        x = x if isinstance(x, Activation) else self._act(x)
        if x.pooled:
            return Activation(x.layer, x.shape)
        return self.graph.layer(L.Flatten(), [x])


_BATCH = object()
"""x.size(0): the batch, whatever its size (view(x.size(0), -1) is a Flatten)."""
_SUPPORTED_MODULES = f"the modules netspec reads are {', '.join(t.__name__ for t in _MODULES)}"
_SUPPORTED_CALLS = ("the calls netspec reads are +, torch.cat, x * c, F.relu, F.max_pool2d, F.avg_pool2d, "
                    "torch.flatten, x.view(x.size(0), -1), x.mean((2, 3)) and activations")


_KNOWN: tuple[Any, ...] = (
    operator.add, torch.add, "add", operator.mul, torch.mul, "mul", operator.truediv, torch.div, "div", torch.cat,
    *_ELEMENTWISE, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout, F.dropout2d,
    "dropout", torch.flatten, "flatten", "view", "reshape", "size", "mean")
"""Every function and method target a call may have (the rest is named as unsupported)."""


def _numel(x: Activation) -> int:
    return int(np.prod(x.shape))


class _Poisoned:
    """The output of a call that could not be read."""


def trace(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[Network, Weights, Original]:
    """The network and canonical weights `module` computes on inputs (N, *input_shape) in eval mode, and the
    module as the Original the import is verified against; SpecError naming every unsupported call."""
    if not isinstance(module, nn.Module):
        raise SpecError(f"from_torch takes a torch.nn.Module, not {type(module).__name__}")
    module = module.eval()
    tracer = _Tracer(module, input_shape)
    traced, output = tracer.run()
    network, weights = tracer.graph.finish("the module", output)
    layer_of = tracer.layer_of

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    def layers(x: np.ndarray) -> dict[int, np.ndarray]:
        seen: dict[int, np.ndarray] = {}

        class Recorder(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                value = super().run_node(n)
                if n.name in layer_of and isinstance(value, torch.Tensor):
                    seen[layer_of[n.name]] = value.detach().numpy()
                return value

        with torch.no_grad():
            Recorder(traced).run(torch.from_numpy(x))
        return seen

    return network, weights, Original("the torch module", logits, layers)



def from_torch(module: nn.Module, input_shape: tuple[int, ...], verify: bool = True,
               log: Callable[[str], None] = print) -> tuple[Network, Weights]:
    """`netspec.from_torch`: trace, then (verify) every installed backend against the module in eval mode
    on random inputs, each one's largest difference logged; SpecError naming the first layer that differs
    when one is beyond the tolerance."""
    training = getattr(module, "training", False)
    try:
        network, weights, original = trace(module, tuple(input_shape))
        if verify:
            check = import_check.verify(network, weights, original, [load_backend(n) for n in installed_backends()])
            for line in check.lines():
                log(line)
            if not check.ok:
                raise SpecError("from_torch: the traced network does not compute what the module does: "
                                + (check.parting or "see the differences above"))
    finally:  # the caller's module keeps its mode (the trace and the check ran it in eval mode)
        if isinstance(module, nn.Module):
            module.train(training)
    return network, weights
