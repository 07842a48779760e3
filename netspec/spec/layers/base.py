"""What every layer type shares: the strict number and shape types of spec fields, the tensors a layer
owns (ParamInfo), the LayerSpec base (strict, immutable, graph fields, float32 check, defaults left out of
the JSON) and the window arithmetic that convolution and pooling share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Iterator, Literal, Mapping, Optional, Union

import numpy as np

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, Strict, StringConstraints,
                      model_serializer, model_validator)

from netspec.errors import ShapeError

MAX_SIZE = 2**24
"""Largest feature or channel count, kernel, stride, padding or input dimension: far above any CIFAR-10
network, small enough that shape arithmetic stays exact. What a whole network needs in memory is
checked against the machine before its weights exist (netspec.spec.params.check_memory)."""

# Numbers in specs are strict: `true` is not 1, "0.5" is not 0.5, 3.0 is not the integer 3 (pydantic's
# lax mode would take all three silently), and NaN or Infinity (which Python's json accepts) are refused.
Real = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite float (an integer is taken too), never a bool or a string."""
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
"""float32's smallest normal and largest magnitude (as Python floats: comparing with numpy's warns)."""


def _floats(value: Any, where: str) -> Iterator[tuple[str, float]]:
    """The floats in a field's value (a number, or a tuple or list of them: betas, knots), by place."""
    if isinstance(value, float):
        yield where, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _floats(item, f"{where}.{i}")


def check_float32(model: BaseModel) -> None:
    """ValueError for the first real-valued field of `model` that float32 cannot hold: the backends compute
    in float32, where such a value fails deep inside (torch.celu with alpha 1e-50: "value cannot be
    converted to type float without overflow") or silently becomes 0 or infinite. A model validator
    rather than a check in `Real`: a validator inside `Real` would turn the JSON Schema's
    minimum/maximum of every constrained Real into unknown keywords."""
    for name in type(model).model_fields:
        for where, value in _floats(getattr(model, name), name):
            if value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
                fate = "underflows (below its normal range)" if abs(value) < FLOAT32_TINY else "overflows (to infinity)"
                raise ValueError(f"{where}: {value:g} does not fit float32, the backends' number type: it {fate}; "
                                 f"use a value of magnitude {FLOAT32_TINY:.4g} to {FLOAT32_MAX:.4g} (or 0)")


Count = Annotated[int, Strict(), Field(gt=0, le=MAX_SIZE)]
"""A positive integer up to MAX_SIZE."""
NonNegCount = Annotated[int, Strict(), Field(ge=0, le=MAX_SIZE)]

Shape = tuple[int, ...]
MAX_INPUTS = 64
"""Most inputs of one merge layer."""
LayerId = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
"""A layer's name in a graph: a letter or '_' first, then letters, digits, '_' or '-' (64 at most)."""
LayerRef = Union[Annotated[int, Strict(), Field(ge=0, le=2**20)], LayerId]
"""An earlier layer, by index (0 is the first layer) or by id; 'input' is the network's input."""
INPUT = "input"
IntOrPair = Union[Count, tuple[Count, Count]]
NonNegIntOrPair = Union[NonNegCount, tuple[NonNegCount, NonNegCount]]


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """An int or a pair, as a pair (height, width)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class ParamInfo:
    """One tensor a layer owns, in PyTorch's layout.

    init: 'fan_in_uniform' (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's Linear/Conv default),
    'ones', 'zeros'. Buffers (running statistics) are not trained.
    """

    shape: Shape
    init: Literal["fan_in_uniform", "ones", "zeros"]
    fan_in: int = 0
    trainable: bool = True
    dtype: str = "float32"


Tensors = dict[str, np.ndarray]
"""A layer's own tensors by state_dict suffix ('weight', 'running_mean')."""


class LayerSpec(BaseModel):
    """Base of every layer spec: strict (unknown fields are errors) and immutable.

    In a graph (netspec.spec.network), a layer may carry an `id` and take `inputs` other than the layer
    before it. A merge layer (`merges = True`: Add, Concat) takes two or more inputs; every other layer
    takes one."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    id: Optional[LayerId] = None
    """A name that later layers' `inputs` may use instead of this layer's index."""
    inputs: Optional[list[LayerRef]] = Field(None, min_length=1, max_length=MAX_INPUTS)
    """The layers this one takes, by index or id ('input': the network's input); unset: the layer before it."""

    merges: ClassVar[bool] = False
    drawn: ClassVar[Mapping[str, int]] = {}
    """How often random networks (netspec.check.random_networks) draw this type as a single-input layer, by
    what it is put on: {'image': weight, 'flat': weight} (C, H, W features, flat features). Empty: never
    drawn so (a merge: random networks build its branches themselves)."""
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    """The values a random configuration draws each field from (one of them uniformly). A type whose
    fields depend on each other or on the input (Conv2d, the pools, BatchNorm, the merges) has a
    generator of its own in random_networks instead; every other type names every field here
    (tests/spec/test_layer_tables.py), so no field is tested at its default only."""
    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("id", "inputs")
    """Fields left out of the layer's JSON while they hold their default, so every spec written before
    they existed keeps its JSON and its run id (a subclass adds its own later fields)."""

    @model_validator(mode="after")
    def _fits_float32(self) -> "LayerSpec":
        check_float32(self)  # once here for every field of every layer type
        return self

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            fields = type(self).model_fields
            for name in self.OMITTED_AT_DEFAULT:
                if name in data and getattr(self, name) == fields[name].default:
                    del data[name]
        return data

    def merged_shape(self, shapes: list[Shape]) -> Shape:
        """A merge layer's output shape for its inputs' shapes; ShapeError naming the misfit."""
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        """The output shape for an input `shape`; raises ShapeError if the layer cannot take it."""
        return shape

    def params(self, shape: Shape) -> dict[str, ParamInfo]:
        """The tensors this layer owns for an input `shape`, by state_dict suffix ('weight', ...)."""
        return {}

    def reference(self, x: np.ndarray, tensors: Tensors, train: bool = False,
                  mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, Tensors]:
        """The layer's meaning: its forward pass in float64 numpy on a batch x (N, *shape), with its
        `tensors` (what params() names), in evaluation or training mode. Returns the output and the
        tensors after the pass (a training pass of BatchNorm moves its running statistics). `mask`: a
        dropout layer's boolean keep-mask for a training pass (masks are each backend's own draw)."""
        raise NotImplementedError(f"{type(self).__name__} states no reference")


def _spatial(name: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{name} needs a (C, H, W) input but gets {shape}; check input_shape or the layers before it")
    return shape  # type: ignore[return-value]


def _window_output(name: str, what: str, shape: Shape, kernel, stride, padding) -> tuple[int, int]:
    """Output H, W of a sliding window (conv or pool), PyTorch's floor rule, with clear errors."""
    _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    hp, wp = h + 2 * ph, w + 2 * pw
    if kh > hp or kw > wp:
        raise ShapeError(
            f"{what} {kh}x{kw} is larger than its input {hp}x{wp} (after padding); "
            f"use a smaller {what}, more padding, or fewer downsampling layers before it")
    return (hp - kh) // sh + 1, (wp - kw) // sw + 1
