"""BatchNorm: batch normalization over features or channels.

One family of netspec.spec.layers (its docstring says what a layer type is)."""
from __future__ import annotations

from typing import ClassVar, Literal, Mapping

import numpy as np

from pydantic import Field, StrictBool, model_validator

from netspec.spec import reference as ref
from netspec.errors import ShapeError
from netspec.spec.layers.base import LayerSpec, ParamInfo, Real, Shape


class BatchNorm(LayerSpec):
    """Batch normalization over features (F,) or channels (C, H, W), PyTorch's conventions.

    Training normalizes with the biased batch variance and updates
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance for running_var.
    """

    type: Literal["BatchNorm"] = "BatchNorm"
    drawn: ClassVar[Mapping[str, int]] = {"image": 1, "flat": 1}
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
