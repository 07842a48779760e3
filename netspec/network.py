"""Network: an input shape and a list of layer specs, with shape inference, summary and JSON I/O."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ShapeError
from .io import read_json, validate, write_json
from .layers import Count, Layer, ParamInfo, Shape

SPEC_VERSION = 1
MAX_LAYERS = 1_000
"""Most layers in one network (the report's deepest has 12): a bound on validation and build time."""


class Network(BaseModel):
    """A feed-forward stack of layers. Shape inference runs on construction, so a Network that exists
    is a Network every backend can build."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    version: Literal[1] = SPEC_VERSION
    """Spec format version."""
    input_shape: tuple[Count, ...] = Field(min_length=1, max_length=3)
    """Shape of one input without the batch dimension: (F,) or (C, H, W)."""
    layers: list[Layer] = Field(min_length=1, max_length=MAX_LAYERS)
    """The layers, applied in order."""

    @model_validator(mode="after")
    def _infer_shapes(self) -> "Network":
        if len(self.input_shape) == 2:
            raise ValueError(f"input_shape {self.input_shape} must be (F,) or (C, H, W)")
        self.shapes()
        return self

    def shapes(self) -> list[Shape]:
        """Input shape followed by every layer's output shape. Raises ValueError naming the layer."""
        shapes: list[Shape] = [tuple(self.input_shape)]
        for index, layer in enumerate(self.layers):
            try:
                shapes.append(layer.output_shape(shapes[-1]))
            except ShapeError as err:
                raise ValueError(f"layer {index} ({layer.type}): {err}") from None
        return shapes

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    def param_infos(self) -> dict[str, ParamInfo]:
        """Every tensor of the network by PyTorch state_dict name ('0.weight', '1.running_mean')."""
        shapes = self.shapes()
        return {
            f"{index}.{name}": info
            for index, layer in enumerate(self.layers)
            for name, info in layer.params(shapes[index]).items()
        }

    def reference_forward(self, weights: dict[str, np.ndarray], x: np.ndarray, train: bool = False,
                          masks: Optional[dict[int, np.ndarray]] = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The network's meaning in float64 numpy, layer by layer (LayerSpec.reference) on canonical
        weights: the output for x (N, *input_shape) and the weights after the pass (a training pass moves
        BatchNorm's running statistics). masks: layer index -> keep-mask of a dropout layer (train)."""
        after = dict(weights)
        x = np.asarray(x, np.float64)
        for index, layer in enumerate(self.layers):
            prefix = f"{index}."
            tensors = {n[len(prefix):]: np.asarray(v, np.float64 if np.asarray(v).dtype.kind == "f" else None)
                       for n, v in weights.items() if n.startswith(prefix)}
            x, tensors = layer.reference(x, tensors, train, (masks or {}).get(index))
            after.update({prefix + n: v for n, v in tensors.items()})
        return x, after

    def num_params(self) -> int:
        """Number of trainable parameters."""
        return sum(math.prod(i.shape) for i in self.param_infos().values() if i.trainable)

    def summary(self) -> str:
        """A table of layers, output shapes and trainable parameter counts, with totals."""
        shapes = self.shapes()
        rows = [("#", "layer", "output shape", "params")]
        rows.append(("", "input", str(tuple(self.input_shape)), ""))
        for index, layer in enumerate(self.layers):
            infos = layer.params(shapes[index])
            count = sum(math.prod(i.shape) for i in infos.values() if i.trainable)
            config = ", ".join(f"{k}={v}" for k, v in layer.model_dump(exclude={"type"}, exclude_defaults=True).items())
            rows.append((str(index), f"{layer.type}({config})", str(shapes[index + 1]), f"{count:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        fmt = lambda r: f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
        rule = "-" * len(fmt(rows[0]))
        buffers = sum(math.prod(i.shape) for i in self.param_infos().values() if not i.trainable)
        lines = [fmt(rows[0]), rule, *map(fmt, rows[1:]), rule,
                 f"trainable parameters: {self.num_params():,}   buffers (running statistics): {buffers:,}"]
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        write_json(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "Network":
        return validate(cls, read_json(path), path)
