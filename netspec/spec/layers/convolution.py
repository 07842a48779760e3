"""Conv2d: the 2-d convolution.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import ClassVar, Literal, Mapping, Union

from pydantic import StrictBool

from netspec.spec import reference as ref
from netspec.errors import ShapeError
from netspec.spec.layers.base import Count, IntOrPair, LayerSpec, NonNegIntOrPair, ParamInfo, Shape, _spatial, _window_output, pair


class Conv2d(LayerSpec):
    """2-d convolution on (C, H, W), kernel in OIHW layout; padding is zeros, explicit or 'same'."""

    type: Literal["Conv2d"] = "Conv2d"
    drawn: ClassVar[Mapping[str, int]] = {"image": 2}
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
