"""Dropout and Dropout2d: inverted dropout with a mask of the layer's kind.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Mapping

from pydantic import AfterValidator

from netspec.spec import reference as ref
from netspec.errors import ShapeError
from netspec.spec.layers.base import LayerSpec, Real, Shape


def _check_rate(p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate p={p} is outside [0, 1); use a value such as 0.5")
    return p


Rate = Annotated[Real, AfterValidator(_check_rate)]


class _DropoutBase(LayerSpec):
    """What both dropouts mean: inverted dropout with a mask of the layer's kind. (No fields here: `p`
    is each subclass's own, so the JSON keeps its key order.)"""

    def reference(self, x, tensors, train=False, mask=None):
        p = self.p  # type: ignore[attr-defined]
        if not train or p == 0.0:
            return x, tensors
        if mask is None:
            raise ValueError(f"a training pass of {self.type} needs its keep-mask (each backend draws its own)")
        return ref.dropout(x, p, mask), tensors


class Dropout(_DropoutBase):
    """Element-wise dropout: each value zeroed with probability p, kept ones scaled by 1/(1-p)."""

    type: Literal["Dropout"] = "Dropout"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"p": (0.0, 0.3, 0.5)}
    p: Rate = 0.5
    """Probability of dropping a value, in [0, 1)."""


class Dropout2d(_DropoutBase):
    """Channel dropout on (C, H, W): whole channels zeroed with probability p (mask per sample and
    channel, constant over H and W), kept ones scaled by 1/(1-p)."""

    type: Literal["Dropout2d"] = "Dropout2d"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1}
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"p": (0.0, 0.3, 0.5)}
    p: Rate = 0.5
    """Probability of dropping a channel, in [0, 1)."""

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ShapeError(f"Dropout2d drops whole channels and needs a (C, H, W) input but gets {shape}; use Dropout")
        return shape
