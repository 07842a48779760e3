"""The layer graph an importer builds (netspec.deploy.onnx_import from ONNX nodes, the torch backend's
fx_import from torch.fx calls): layers appended with their inputs and canonical tensors, each output
shape by netspec's own shape rules, every problem kept as one line until the end, then one Network."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from pydantic import ValidationError

from netspec.errors import SpecError, format_validation_error
from netspec.spec.layers import LayerSpec, Shape
from netspec.spec.network import NETWORK_INPUT, Network
from netspec.spec.params import Weights, check_weights


@dataclass
class Activation:
    """An activation tensor: the layer that makes it (NETWORK_INPUT: the network's input) and its shape
    without the batch. `pooled`: a global pool's (C, 1, 1) seen as the GlobalPool's (C,)."""

    layer: int
    shape: Shape
    pooled: bool = False


@dataclass
class LayerGraph:
    """The layers read so far, their canonical weights, and the problems found (one line each)."""

    input_shape: Shape
    layers: list[dict[str, Any]] = field(default_factory=list)
    weights: Weights = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    """Tensor name -> Activation, or a numpy constant (initializers, Constant nodes, folded shape arithmetic)."""
    problems: list[str] = field(default_factory=list)
    consumers: dict[str, int] = field(default_factory=dict)
    consumer_ops: dict[str, list[str]] = field(default_factory=dict)
    batch: Optional[int] = None
    """The batch size the file fixes, if it does (a Reshape to (batch, -1) is then a Flatten too)."""

    def layer(self, spec: LayerSpec, inputs: list[Activation], tensors: Optional[dict[str, np.ndarray]] = None) -> Activation:
        """Append `spec` taking `inputs`; its output shape by netspec's own shape rule (ShapeError: a misfit)."""
        index = len(self.layers)
        shapes = [a.shape for a in inputs]
        out = spec.merged_shape(shapes) if spec.merges else spec.output_shape(shapes[0])
        data = spec.model_dump(mode="json")
        chained = len(inputs) == 1 and inputs[0].layer == (index - 1 if index else NETWORK_INPUT)
        if not chained:
            data["inputs"] = ["input" if a.layer == NETWORK_INPUT else a.layer for a in inputs]
        self.layers.append(data)
        for suffix, value in (tensors or {}).items():
            self.weights[f"{index}.{suffix}"] = value
        return Activation(index, tuple(out))

    def finish(self, source: str, out: Any) -> tuple[Network, Weights]:
        """The network whose output is `out`, and its canonical weights; SpecError when the problems list is
        not empty (all of them, one line each) or the output is not the last layer's."""
        if self.problems:
            raise SpecError(f"{source}: {len(self.problems)} problem(s) importing it:\n" + "\n".join(self.problems))
        if not isinstance(out, Activation) or out.layer == NETWORK_INPUT:
            raise SpecError(f"{source}: the output is not computed from the input by any layer netspec expresses")
        if out.layer != len(self.layers) - 1:
            raise SpecError(f"{source}: the output is layer {out.layer}'s, but layers after it feed nothing "
                            "(a dead branch); give the model its one output")
        try:
            network = Network(input_shape=self.input_shape, layers=self.layers)
        except ValidationError as err:
            raise SpecError(f"{source}: the imported network does not validate: {format_validation_error(err, Network)}") from None
        counters = {n: np.zeros((), np.int64) for n in network.param_infos() if n.endswith(".num_batches_tracked")}
        return network, check_weights(network, {**self.weights, **counters}, source)  # the counter is no part of ONNX


def node_problem(err: Exception) -> str:
    """A node whose attributes or constants make no layer (a kernel of 0, an index out of range), in words."""
    what = format_validation_error(err) if isinstance(err, ValidationError) else (str(err).splitlines() or [""])[0]
    return f"its attributes or constants do not make a valid layer ({what or type(err).__name__}); export the model again"


def float32_decimal(value: float) -> float:
    """The shortest decimal a float32 attribute stands for (1e-05, not 9.999999747378752e-06)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-")) if value else value
