"""Merge layers (two or more inputs): Add and Concat.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from netspec.errors import ShapeError
from netspec.spec.layers.base import LayerSpec, Shape


def _same_rank(name: str, shapes: list[Shape]) -> None:
    if len(shapes) < 2:
        raise ShapeError(f"{name} merges two or more inputs but has {len(shapes)}; list them in inputs")
    if len({len(s) for s in shapes}) > 1:
        raise ShapeError(f"{name} inputs have shapes {', '.join(map(str, shapes))}: images and flat features do not mix")


class Add(LayerSpec):
    """The element-wise sum of two or more inputs of one shape (a residual connection)."""

    type: Literal["Add"] = "Add"
    merges: ClassVar[bool] = True

    def merged_shape(self, shapes: list[Shape]) -> Shape:
        _same_rank("Add", shapes)
        if len(set(shapes)) > 1:
            raise ShapeError(f"Add needs inputs of one shape but gets {', '.join(map(str, shapes))}; "
                             "make the branches agree (a 1x1 Conv2d on the shortcut, or the same strides)")
        return shapes[0]

    def reference(self, x, tensors, train=False, mask=None):
        return sum(x[1:], x[0]), tensors


class Concat(LayerSpec):
    """Two or more inputs joined along the channels (C, H, W) or the features (F,), in the order listed."""

    type: Literal["Concat"] = "Concat"
    merges: ClassVar[bool] = True

    def merged_shape(self, shapes: list[Shape]) -> Shape:
        _same_rank("Concat", shapes)
        if len({s[1:] for s in shapes}) > 1:
            raise ShapeError(f"Concat joins channels and needs one spatial size but gets {', '.join(map(str, shapes))}; "
                             "pool or pad the branches to one size")
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def reference(self, x, tensors, train=False, mask=None):
        return np.concatenate(x, axis=1), tensors
