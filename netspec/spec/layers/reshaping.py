"""Flatten: (C, H, W) to (C*H*W,).

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

import math
from typing import ClassVar, Literal, Mapping

from netspec.spec.layers.base import LayerSpec, Shape


class Flatten(LayerSpec):
    """Flattens (C, H, W) to (C*H*W,) in C, H, W order (PyTorch's), whatever layout a backend uses."""

    type: Literal["Flatten"] = "Flatten"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def reference(self, x, tensors, train=False, mask=None):
        return x.reshape(len(x), -1), tensors  # NCHW, row-major: C, H, W order
