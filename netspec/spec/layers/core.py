"""Linear, Identity and Scale: the layers that are neither windows nor activations.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

from pydantic import StrictBool

from netspec.spec import reference as ref
from netspec.errors import ShapeError
from netspec.spec.layers.base import Count, LayerSpec, ParamInfo, Real, Shape


class Linear(LayerSpec):
    """Fully connected layer y = x W^T + b on a flat input (F,)."""

    type: Literal["Linear"] = "Linear"
    drawn: ClassVar[Mapping[str, int]] = {"flat": 3}
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"out_features": tuple(range(1, 9)),
                                                              "bias": (True, True, True, True, False)}
    out_features: Count
    """Number of output features."""
    bias: StrictBool = True
    """Add a learnable bias."""

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ShapeError(f"Linear needs a flat input (F,) but gets {shape}; insert a Flatten before it")
        return (self.out_features,)

    def params(self, shape: Shape) -> dict[str, ParamInfo]:
        fan_in = shape[0]
        out = {"weight": ParamInfo((self.out_features, fan_in), "fan_in_uniform", fan_in)}
        if self.bias:
            out["bias"] = ParamInfo((self.out_features,), "fan_in_uniform", fan_in)
        return out

    def reference(self, x, tensors, train=False, mask=None):
        return ref.linear(x, tensors["weight"], tensors.get("bias")), tensors



class Identity(LayerSpec):
    """Its input, unchanged (a residual's shortcut, a placeholder in a sweep's ablation)."""

    type: Literal["Identity"] = "Identity"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}

    def reference(self, x, tensors, train=False, mask=None):
        return x, tensors


class Scale(LayerSpec):
    """Multiplies by a constant (ResNet-9's logits x 0.125)."""

    type: Literal["Scale"] = "Scale"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"factor": (0.125, -0.5, 2.0)}
    factor: Real
    """The constant."""

    def reference(self, x, tensors, train=False, mask=None):
        return x * self.factor, tensors
