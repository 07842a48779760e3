"""Layer specs: one pydantic model per layer type, and the `Layer` tagged union.

A layer type is defined here once: its configuration, the output shape it gives for an input shape,
the tensors it owns (names, shapes, initializer, trainable or buffer) and its meaning, as a small
float64 numpy forward pass (`reference`, built on netspec.spec.reference) that the contract suite, the
random-network tests and the exporter's checks compare every backend with. Besides this class, a new
layer type needs one builder per backend and one ONNX rule (docs/design.md, "Adding a layer type"); a
test fails while any of those tables misses it. Input sizes are never written: the network infers them. Shapes exclude the batch dimension: (F,) or (C, H, W). Semantics follow
PyTorch's conventions (docs/design.md, "Semantics live once"); every backend implements these and
redefines nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Iterator, Literal, Optional, Union, get_args

import numpy as np

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, Strict, StrictBool,
                      StringConstraints, model_serializer, model_validator)

from netspec.spec import reference as ref
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


class Linear(LayerSpec):
    """Fully connected layer y = x W^T + b on a flat input (F,)."""

    type: Literal["Linear"] = "Linear"
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


class Conv2d(LayerSpec):
    """2-d convolution on (C, H, W), kernel in OIHW layout; padding is zeros, explicit or 'same'."""

    type: Literal["Conv2d"] = "Conv2d"
    out_channels: Count
    """Number of output channels."""
    kernel_size: IntOrPair
    """Kernel height and width (an int for a square kernel)."""
    stride: IntOrPair = 1
    """Step of the window."""
    padding: Union[NonNegIntOrPair, Literal["same"]] = 0
    """Zeros added on each side of H and W; 'same' (stride 1 only): the output keeps the input's size,
    with PyTorch's split of an odd total (the extra zero at the bottom and the right)."""
    bias: StrictBool = True
    """Add a learnable bias per output channel."""

    def output_shape(self, shape: Shape) -> Shape:
        _spatial("Conv2d", shape)
        if self.padding == "same":
            if pair(self.stride) != (1, 1):
                raise ShapeError(f"Conv2d padding 'same' needs stride 1 (PyTorch's rule), not {self.stride}; "
                                 "give the padding as a number")
            return (self.out_channels, *shape[1:])
        return (self.out_channels, *_window_output("Conv2d", "kernel", shape, self.kernel_size, self.stride, self.padding))

    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Zeros added ((top, bottom), (left, right)): the padding written out per side."""
        if self.padding != "same":
            ph, pw = pair(self.padding)
            return (ph, ph), (pw, pw)
        (kh, kw) = pair(self.kernel_size)
        return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)

    def params(self, shape: Shape) -> dict[str, ParamInfo]:
        kh, kw = pair(self.kernel_size)
        fan_in = shape[0] * kh * kw
        out = {"weight": ParamInfo((self.out_channels, shape[0], kh, kw), "fan_in_uniform", fan_in)}
        if self.bias:
            out["bias"] = ParamInfo((self.out_channels,), "fan_in_uniform", fan_in)
        return out

    def reference(self, x, tensors, train=False, mask=None):
        return ref.conv2d(x, tensors["weight"], tensors.get("bias"), pair(self.stride), self.pads()), tensors


class BatchNorm(LayerSpec):
    """Batch normalization over features (F,) or channels (C, H, W), PyTorch's conventions.

    Training normalizes with the biased batch variance and updates
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance for running_var.
    """

    type: Literal["BatchNorm"] = "BatchNorm"
    momentum: Real = Field(0.1, gt=0.0, le=1.0)
    """Weight of the new batch statistic in the running average (PyTorch's meaning, not Flax's)."""
    eps: Real = Field(1e-5, gt=0.0, le=1.0)
    """Added to the variance before the square root."""
    affine: StrictBool = True
    """A learnable per-channel scale ('weight') and shift ('bias'); false: neither (PyTorch's affine=False)."""
    train_weight: StrictBool = True
    """false: the scale stays at its initial 1, a buffer rather than a parameter, and only the shift
    trains (airbench's BatchNorm). Needs affine."""

    OMITTED_AT_DEFAULT: ClassVar[tuple[str, ...]] = (*LayerSpec.OMITTED_AT_DEFAULT, "affine", "train_weight")

    @model_validator(mode="after")
    def _frozen_weight_needs_affine(self) -> "BatchNorm":
        if not self.affine and not self.train_weight:
            raise ValueError("train_weight false freezes the scale of an affine BatchNorm; with affine false there is none")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise ShapeError(f"BatchNorm needs an (F,) or (C, H, W) input but gets {shape}")
        return shape

    def params(self, shape: Shape) -> dict[str, ParamInfo]:
        c = (shape[0],)
        scale_and_shift = {"weight": ParamInfo(c, "ones", trainable=self.train_weight),
                           "bias": ParamInfo(c, "zeros")} if self.affine else {}
        return {
            **scale_and_shift,
            "running_mean": ParamInfo(c, "zeros", trainable=False),
            "running_var": ParamInfo(c, "ones", trainable=False),
            "num_batches_tracked": ParamInfo((), "zeros", trainable=False, dtype="int64"),
        }

    def reference(self, x, tensors, train=False, mask=None):
        ones, zeros = np.ones(len(tensors["running_mean"])), np.zeros(len(tensors["running_mean"]))
        affine = tensors.get("weight", ones), tensors.get("bias", zeros), tensors["running_mean"], tensors["running_var"]
        if not train:
            return ref.batch_norm_eval(x, *affine, eps=self.eps), tensors
        out, mean, var = ref.batch_norm_train(x, *affine, momentum=self.momentum, eps=self.eps)
        return out, {**tensors, "running_mean": mean, "running_var": var,
                     "num_batches_tracked": np.asarray(tensors["num_batches_tracked"]) + 1}


class ReLU(LayerSpec):
    """max(x, 0), element-wise."""

    type: Literal["ReLU"] = "ReLU"

    def reference(self, x, tensors, train=False, mask=None):
        return np.maximum(x, 0.0), tensors


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
    p: Rate = 0.5
    """Probability of dropping a value, in [0, 1)."""


class Dropout2d(_DropoutBase):
    """Channel dropout on (C, H, W): whole channels zeroed with probability p (mask per sample and
    channel, constant over H and W), kept ones scaled by 1/(1-p)."""

    type: Literal["Dropout2d"] = "Dropout2d"
    p: Rate = 0.5
    """Probability of dropping a channel, in [0, 1)."""

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ShapeError(f"Dropout2d drops whole channels and needs a (C, H, W) input but gets {shape}; use Dropout")
        return shape


class _Pool2d(LayerSpec):
    """What both windowed pools share: stride defaulting to the kernel, padding at most half the kernel.
    (No fields here: each subclass's own, so the JSON keeps its key order.)"""

    @property
    def effective_stride(self) -> tuple[int, int]:
        return pair(self.kernel_size if self.stride is None else self.stride)  # type: ignore[attr-defined]

    def output_shape(self, shape: Shape) -> Shape:
        _spatial(self.type, shape)  # type: ignore[attr-defined]
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)  # type: ignore[attr-defined]
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(f"{self.type} padding {ph}x{pw} is more than half its kernel {kh}x{kw}; lower the padding")
        return (shape[0], *_window_output(self.type, "pool", shape, self.kernel_size, self.effective_stride, self.padding))  # type: ignore[attr-defined]


class MaxPool2d(_Pool2d):
    """Max pooling on (C, H, W); stride defaults to the kernel size, padding is -inf."""

    type: Literal["MaxPool2d"] = "MaxPool2d"
    kernel_size: IntOrPair
    """Window height and width."""
    stride: IntOrPair | None = None
    """Step of the window; None means the kernel size (PyTorch's default, unlike Flax's 1)."""
    padding: NonNegIntOrPair = 0
    """Padding on each side; at most half the kernel, as in PyTorch."""

    def reference(self, x, tensors, train=False, mask=None):
        return ref.max_pool2d(x, pair(self.kernel_size), self.effective_stride, pair(self.padding)), tensors


class Flatten(LayerSpec):
    """Flattens (C, H, W) to (C*H*W,) in C, H, W order (PyTorch's), whatever layout a backend uses."""

    type: Literal["Flatten"] = "Flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def reference(self, x, tensors, train=False, mask=None):
        return x.reshape(len(x), -1), tensors  # NCHW, row-major: C, H, W order


class AvgPool2d(_Pool2d):
    """Average pooling on (C, H, W); stride defaults to the kernel size, padding is zeros (PyTorch's)."""

    type: Literal["AvgPool2d"] = "AvgPool2d"
    kernel_size: IntOrPair
    """Window height and width."""
    stride: IntOrPair | None = None
    """Step of the window; None means the kernel size."""
    padding: NonNegIntOrPair = 0
    """Zeros added on each side; at most half the kernel, as in PyTorch."""
    count_include_pad: StrictBool = True
    """Divide by the whole window, padded zeros included (PyTorch's default); false: by the cells inside."""

    def reference(self, x, tensors, train=False, mask=None):
        return ref.avg_pool2d(x, pair(self.kernel_size), self.effective_stride, pair(self.padding),
                              self.count_include_pad), tensors


class GlobalPool(LayerSpec):
    """The average or the maximum of each channel over all positions: (C, H, W) -> (C,).

    One layer type with a mode rather than adaptive pooling: at this scale global pooling only ever
    ends a conv stack (ResNet-9's max, the all-convolutional nets' average), its output is what a
    Linear takes (no Flatten needed), and it has one unambiguous meaning in every framework and in
    ONNX (GlobalAveragePool / GlobalMaxPool), where adaptive pooling to other sizes has uneven windows."""

    type: Literal["GlobalPool"] = "GlobalPool"
    mode: Literal["avg", "max"] = "avg"
    """'avg' (PyTorch's AdaptiveAvgPool2d(1) then Flatten) or 'max' (AdaptiveMaxPool2d(1) then Flatten)."""

    def output_shape(self, shape: Shape) -> Shape:
        return (_spatial("GlobalPool", shape)[0],)

    def reference(self, x, tensors, train=False, mask=None):
        return (x.mean(axis=(2, 3)) if self.mode == "avg" else x.max(axis=(2, 3))), tensors


class Identity(LayerSpec):
    """Its input, unchanged (a residual's shortcut, a placeholder in a sweep's ablation)."""

    type: Literal["Identity"] = "Identity"

    def reference(self, x, tensors, train=False, mask=None):
        return x, tensors


class Scale(LayerSpec):
    """Multiplies by a constant (ResNet-9's logits x 0.125)."""

    type: Literal["Scale"] = "Scale"
    factor: Real
    """The constant."""

    def reference(self, x, tensors, train=False, mask=None):
        return x * self.factor, tensors


class GELU(LayerSpec):
    """x * Phi(x), Phi the standard normal CDF (PyTorch's GELU); 'tanh': its tanh approximation."""

    type: Literal["GELU"] = "GELU"
    approximate: Literal["none", "tanh"] = "none"
    """'none': the exact erf form; 'tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def reference(self, x, tensors, train=False, mask=None):
        return ref.gelu(x, self.approximate == "tanh"), tensors


class CELU(LayerSpec):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)), element-wise (PyTorch's CELU)."""

    type: Literal["CELU"] = "CELU"
    alpha: Real = Field(1.0, gt=0.0)
    """The scale of the negative part (> 0)."""

    def reference(self, x, tensors, train=False, mask=None):
        return np.maximum(x, 0.0) + np.minimum(0.0, self.alpha * np.expm1(x / self.alpha)), tensors


class LeakyReLU(LayerSpec):
    """x where x >= 0, negative_slope * x elsewhere."""

    type: Literal["LeakyReLU"] = "LeakyReLU"
    negative_slope: Real = 0.01
    """The slope for negative inputs (PyTorch's default 0.01)."""

    def reference(self, x, tensors, train=False, mask=None):
        return np.where(x >= 0, x, x * self.negative_slope), tensors


class Tanh(LayerSpec):
    """tanh(x), element-wise."""

    type: Literal["Tanh"] = "Tanh"

    def reference(self, x, tensors, train=False, mask=None):
        return np.tanh(x), tensors


class Sigmoid(LayerSpec):
    """1 / (1 + exp(-x)), element-wise."""

    type: Literal["Sigmoid"] = "Sigmoid"

    def reference(self, x, tensors, train=False, mask=None):
        return 1.0 / (1.0 + np.exp(-x)), tensors


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


Layer = Annotated[
    Union[Linear, Conv2d, BatchNorm, ReLU, Dropout, Dropout2d, MaxPool2d, Flatten, AvgPool2d, GlobalPool, Identity,
          Scale, GELU, CELU, LeakyReLU, Tanh, Sigmoid, Add, Concat],
    Field(discriminator="type"),
]
"""Any layer spec; the `type` field says which."""

LAYER_TYPES: tuple[type[LayerSpec], ...] = get_args(get_args(Layer)[0])
"""Every layer type, in the union's order: the one list that each per-type table is checked against."""
