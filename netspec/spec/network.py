"""Network: an input shape and a list of layer specs forming a graph, with shape inference, summary and
JSON I/O.

A network is a list of layers. Written as a chain (no `inputs` anywhere) each layer takes the one
before it, exactly as before graphs existed. A layer may carry an `id` and list `inputs` naming
earlier layers by index or id ('input': the network's input); merge layers (Add, Concat) take two or
more. The output is the last layer's. Canonical weight names stay the layer's index ('3.weight'),
whatever the graph. Every bad graph is one line naming the layer: an input naming a later layer,
itself or nothing, a cycle, merges of misfitting shapes, a dead branch, an id used twice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from netspec.errors import ShapeError
from netspec.io import read_json, validate, write_json
from netspec.spec.blocks import expand_network
from netspec.spec.layers import INPUT, Count, Layer, LayerSpec, ParamInfo, Shape

SPEC_VERSION = 1
MAX_LAYERS = 1_000
"""Most layers in one network (the report's deepest has 12): a bound on validation and build time."""
NETWORK_INPUT = -1
"""A node's input index that means the network's input."""


@dataclass(frozen=True)
class Node:
    """One layer in the resolved graph: which outputs it takes (layer indices; -1 the network's input),
    their shapes, and its output shape."""

    index: int
    layer: LayerSpec
    inputs: tuple[int, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]


class Network(BaseModel):
    """A feed-forward graph of layers (a chain unless layers name their `inputs`). Shape inference runs on
    construction, so a Network that exists is a Network every backend can build."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    version: Literal[1] = SPEC_VERSION
    """Spec format version."""
    input_shape: tuple[Count, ...] = Field(min_length=1, max_length=3)
    """Shape of one input without the batch dimension: (F,) or (C, H, W)."""
    layers: list[Layer] = Field(min_length=1, max_length=MAX_LAYERS)
    """The layers, in order: each takes the layer before it, or the earlier layers its `inputs` name."""

    @model_validator(mode="after")
    def _infer_shapes(self) -> "Network":
        if len(self.input_shape) == 2:
            raise ValueError(f"input_shape {self.input_shape} must be (F,) or (C, H, W)")
        self.nodes()
        return self

    # ---- the graph ----

    def nodes(self) -> list[Node]:
        """Every layer with its resolved inputs and shapes, in order. Raises ValueError naming the layer."""
        ids = self._ids()
        nodes: list[Node] = []
        used: set[int] = set()
        for index, layer in enumerate(self.layers):
            try:
                inputs = tuple(self._resolve(index, ref, ids) for ref in self._refs(index))
                shapes = tuple(tuple(self.input_shape) if i == NETWORK_INPUT else nodes[i].output_shape for i in inputs)
                if layer.merges:
                    out = layer.merged_shape(list(shapes))
                elif len(inputs) != 1:
                    raise ShapeError(f"takes one input but lists {len(inputs)}; merge them first with Add or Concat")
                else:
                    out = layer.output_shape(shapes[0])
            except ShapeError as err:
                raise ValueError(f"layer {index} ({layer.type}): {err}") from None
            used.update(inputs)
            nodes.append(Node(index, layer, inputs, shapes, out))
        dead = [n for n in nodes[:-1] if n.index not in used]
        if dead:
            n = dead[0]
            raise ValueError(f"layer {n.index} ({n.layer.type}): nothing takes its output and it is not the last layer "
                             "(a dead branch); list it in a later layer's inputs or remove it")
        return nodes

    def _ids(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        for index, layer in enumerate(self.layers):
            if layer.id is None:
                continue
            if layer.id == INPUT:
                raise ValueError(f"layer {index} ({layer.type}): id 'input' names the network's input; choose another id")
            if layer.id in ids:
                raise ValueError(f"layer {index} ({layer.type}): id {layer.id!r} is used twice (layer {ids[layer.id]} "
                                 "has it too); give each layer its own id")
            ids[layer.id] = index
        return ids

    def _refs(self, index: int) -> list[int | str]:
        """What layer `index` names as inputs, as written (unset: the layer before it, or the input)."""
        layer = self.layers[index]
        if layer.inputs is not None:
            return list(layer.inputs)
        return [index - 1] if index else [INPUT]

    def _resolve(self, index: int, ref: int | str, ids: dict[str, int]) -> int:
        """A reference of layer `index` as a layer index (NETWORK_INPUT for 'input'); ShapeError unless it
        names an earlier layer."""
        if ref == INPUT:
            return NETWORK_INPUT
        if isinstance(ref, str):
            if ref not in ids:
                raise ShapeError(f"input {ref!r} names no layer (no layer has that id); use an earlier layer's id or index")
            target = ids[ref]
        else:
            target = ref
            if target >= len(self.layers):
                raise ShapeError(f"input {ref} names no layer (the network has {len(self.layers)}, numbered from 0)")
        if target == index:
            raise ShapeError(f"input {ref!r} names the layer itself; a layer takes earlier layers only")
        if target > index:
            loop = self._path(target, index, ids)
            if loop:
                raise ShapeError(f"input {ref!r} makes a cycle ({' -> '.join(map(str, [index, *loop]))}); "
                                 "a network is a graph without cycles, each layer after its inputs")
            raise ShapeError(f"input {ref!r} is layer {target}, which comes later; a layer takes earlier layers only "
                             "(move it after its inputs)")
        return target

    def _path(self, start: int, goal: int, ids: dict[str, int]) -> list[int]:
        """A chain of input references from layer `start` back to layer `goal` ([start, ..., goal]), or []."""
        seen: set[int] = set()
        stack: list[list[int]] = [[start]]
        while stack:
            path = stack.pop()
            for ref in self._refs(path[-1]):
                target = ids.get(ref) if isinstance(ref, str) else ref
                if target == goal:
                    return [*path, goal]
                if isinstance(target, int) and 0 <= target < len(self.layers) and target not in seen:
                    seen.add(target)
                    stack.append([*path, target])
        return []

    @property
    def is_chain(self) -> bool:
        """Each layer takes the one before it: backends build it as a plain sequence."""
        return all(n.inputs == (n.index - 1 if n.index else NETWORK_INPUT,) for n in self.nodes())

    def shapes(self) -> list[Shape]:
        """Input shape followed by every layer's output shape. Raises ValueError naming the layer."""
        return [tuple(self.input_shape), *(n.output_shape for n in self.nodes())]

    @property
    def output_shape(self) -> Shape:
        return self.nodes()[-1].output_shape

    def param_infos(self) -> dict[str, ParamInfo]:
        """Every tensor of the network by PyTorch state_dict name ('0.weight', '1.running_mean')."""
        return {f"{n.index}.{name}": info for n in self.nodes() for name, info in n.layer.params(n.input_shape).items()}

    def reference_forward(self, weights: dict[str, np.ndarray], x: np.ndarray, train: bool = False,
                          masks: Optional[dict[int, np.ndarray]] = None,
                          activations: Optional[dict[int, np.ndarray]] = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The network's meaning in float64 numpy, layer by layer (LayerSpec.reference) on canonical
        weights: the output for x (N, *input_shape) and the weights after the pass (a training pass moves
        BatchNorm's running statistics). masks: layer index -> keep-mask of a dropout layer (train).
        activations: a dict that receives every layer's output by index (the import check's per-layer view)."""
        after = dict(weights)
        outputs: dict[int, np.ndarray] = {NETWORK_INPUT: np.asarray(x, np.float64)}
        for node in self.nodes():
            prefix = f"{node.index}."
            tensors = {n[len(prefix):]: np.asarray(v, np.float64 if np.asarray(v).dtype.kind == "f" else None)
                       for n, v in weights.items() if n.startswith(prefix)}
            inputs = [outputs[i] for i in node.inputs]
            out, tensors = node.layer.reference(inputs if node.layer.merges else inputs[0], tensors, train,
                                                (masks or {}).get(node.index))
            outputs[node.index] = out
            if activations is not None:
                activations[node.index] = out
            after.update({prefix + n: v for n, v in tensors.items()})
        return outputs[len(self.layers) - 1], after

    def num_params(self) -> int:
        """Number of trainable parameters."""
        return sum(math.prod(i.shape) for i in self.param_infos().values() if i.trainable)

    def summary(self) -> str:
        """A table of layers (with their ids and inputs in a graph), output shapes and trainable parameter
        counts, with totals."""
        graph = not self.is_chain or any(layer.id for layer in self.layers)
        names = {NETWORK_INPUT: "input", **{i: (layer.id or str(i)) for i, layer in enumerate(self.layers)}}
        head = ("#", "id", "layer", "inputs", "output shape", "params") if graph else ("#", "layer", "output shape", "params")
        rows = [head, ("", "", "input", "", str(tuple(self.input_shape)), "") if graph else ("", "input", str(tuple(self.input_shape)), "")]
        for node in self.nodes():
            layer = node.layer
            infos = layer.params(node.input_shape)
            count = sum(math.prod(i.shape) for i in infos.values() if i.trainable)
            config = ", ".join(f"{k}={v}" for k, v in layer.model_dump(exclude={"type", "id", "inputs"}, exclude_defaults=True).items())
            cells = (str(node.index), f"{layer.type}({config})", str(node.output_shape), f"{count:,}")
            if graph:
                cells = (cells[0], layer.id or "", cells[1], ", ".join(names[i] for i in node.inputs), *cells[2:])
            rows.append(cells)
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        right = {0, len(head) - 1}

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join(f"{cell:>{w}}" if c in right else f"{cell:<{w}}" for c, (cell, w) in enumerate(zip(row, widths)))
        rule = "-" * len(fmt(rows[0]))
        buffers = sum(math.prod(i.shape) for i in self.param_infos().values() if not i.trainable)
        lines = [fmt(rows[0]), rule, *map(fmt, rows[1:]), rule,
                 f"trainable parameters: {self.num_params():,}   buffers (running statistics): {buffers:,}"]
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        write_json(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "Network":
        return validate(cls, expand_network(read_json(path), str(path)), path)
