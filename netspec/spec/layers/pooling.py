"""Windowed and global pooling: MaxPool2d, AvgPool2d, GlobalPool.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

from pydantic import StrictBool

from netspec.spec import reference as ref
from netspec.errors import ShapeError
from netspec.spec.layers.base import IntOrPair, LayerSpec, NonNegIntOrPair, Shape, _spatial, _window_output, pair


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
    drawn: ClassVar[Mapping[str, int]] = {"image": 1}
    kernel_size: IntOrPair
    """Window height and width."""
    stride: IntOrPair | None = None
    """Step of the window; None means the kernel size (PyTorch's default, unlike Flax's 1)."""
    padding: NonNegIntOrPair = 0
    """Padding on each side; at most half the kernel, as in PyTorch."""

    def reference(self, x, tensors, train=False, mask=None):
        return ref.max_pool2d(x, pair(self.kernel_size), self.effective_stride, pair(self.padding)), tensors


class AvgPool2d(_Pool2d):
    """Average pooling on (C, H, W); stride defaults to the kernel size, padding is zeros (PyTorch's)."""

    type: Literal["AvgPool2d"] = "AvgPool2d"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1}
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
    drawn: ClassVar[Mapping[str, int]] = {"image": 1}
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"mode": ("avg", "max")}
    mode: Literal["avg", "max"] = "avg"
    """'avg' (PyTorch's AdaptiveAvgPool2d(1) then Flatten) or 'max' (AdaptiveMaxPool2d(1) then Flatten)."""

    def output_shape(self, shape: Shape) -> Shape:
        return (_spatial("GlobalPool", shape)[0],)

    def reference(self, x, tensors, train=False, mask=None):
        return (x.mean(axis=(2, 3)) if self.mode == "avg" else x.max(axis=(2, 3))), tensors
