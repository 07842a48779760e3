"""Element-wise activations: ReLU, GELU, CELU, LeakyReLU, Tanh, Sigmoid, Softplus, SiLU.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

import numpy as np

from pydantic import Field

from netspec.spec import reference as ref
from netspec.spec.layers.base import LayerSpec, Real


class _Activation(LayerSpec):
    """What every element-wise activation shares: random networks draw it on images and flat features
    alike, so a new activation is drawn with no edit anywhere else."""

    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}


class ReLU(_Activation):
    """max(x, 0), element-wise."""

    type: Literal["ReLU"] = "ReLU"

    def reference(self, x, tensors, train=False, mask=None):
        return np.maximum(x, 0.0), tensors


class GELU(_Activation):
    """x * Phi(x), Phi the standard normal CDF (PyTorch's GELU); 'tanh': its tanh approximation."""

    type: Literal["GELU"] = "GELU"
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"approximate": ("none", "tanh")}
    approximate: Literal["none", "tanh"] = "none"
    """'none': the exact erf form; 'tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def reference(self, x, tensors, train=False, mask=None):
        return ref.gelu(x, self.approximate == "tanh"), tensors


class CELU(_Activation):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)), element-wise (PyTorch's CELU)."""

    type: Literal["CELU"] = "CELU"
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"alpha": (1.0, 0.5, 2.0)}
    alpha: Real = Field(1.0, gt=0.0)
    """The scale of the negative part (> 0)."""

    def reference(self, x, tensors, train=False, mask=None):
        return np.maximum(x, 0.0) + np.minimum(0.0, self.alpha * np.expm1(x / self.alpha)), tensors


class LeakyReLU(_Activation):
    """x where x >= 0, negative_slope * x elsewhere."""

    type: Literal["LeakyReLU"] = "LeakyReLU"
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"negative_slope": (0.01, 0.2)}
    negative_slope: Real = 0.01
    """The slope for negative inputs (PyTorch's default 0.01)."""

    def reference(self, x, tensors, train=False, mask=None):
        return np.where(x >= 0, x, x * self.negative_slope), tensors


class Tanh(_Activation):
    """tanh(x), element-wise."""

    type: Literal["Tanh"] = "Tanh"

    def reference(self, x, tensors, train=False, mask=None):
        return np.tanh(x), tensors


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), element-wise."""

    type: Literal["Sigmoid"] = "Sigmoid"

    def reference(self, x, tensors, train=False, mask=None):
        return 1.0 / (1.0 + np.exp(-x)), tensors


class Softplus(_Activation):
    """log(1 + exp(beta * x)) / beta, element-wise, and x itself where beta * x > threshold (PyTorch's Softplus)."""

    type: Literal["Softplus"] = "Softplus"
    random_values: ClassVar[Mapping[str, tuple[Any, ...]]] = {"beta": (1.0, 0.5, 3.0), "threshold": (20.0, 1.0)}
    beta: Real = Field(1.0, gt=0.0)
    """The sharpness (> 0): larger is closer to ReLU."""
    threshold: Real = 20.0
    """Above it (beta * x > threshold) the output is x, where log(1 + exp(beta * x)) / beta equals x in float32."""

    def reference(self, x, tensors, train=False, mask=None):
        scaled = self.beta * x
        return np.where(scaled > self.threshold, x, np.logaddexp(0.0, scaled) / self.beta), tensors


class SiLU(_Activation):
    """x * sigmoid(x), element-wise (the swish of Ramachandran et al. with beta 1; PyTorch's SiLU)."""

    type: Literal["SiLU"] = "SiLU"

    def reference(self, x, tensors, train=False, mask=None):
        return x / (1.0 + np.exp(-x)), tensors
