"""Layer specs: one pydantic model per layer type, grouped by family, and the `Layer` tagged union.

A layer type is defined once, in its family's module: its configuration, the output shape it gives for
an input shape, the tensors it owns (names, shapes, initializer, trainable or buffer) and its meaning, as
a small float64 numpy forward pass (`reference`, built on netspec.spec.reference) that the contract
suite, the random-network tests and the exporter's checks compare every backend with. Besides this
class (and its place in `Layer` below), a new layer type needs one builder per backend, one ONNX rule
and one random generator (docs/design.md, "Adding a layer type"); tests/spec/test_layer_tables.py fails,
naming the table, while any of them misses it. Input sizes are never written: the network infers them.
Shapes exclude the batch dimension: (F,) or (C, H, W). Semantics follow PyTorch's conventions
(docs/design.md, "Semantics live once"); every backend implements these and redefines nothing.

Every name is importable from here (`from netspec.spec.layers import Conv2d, LayerSpec, pair`); the family
modules are where a type is read and written.
"""
from __future__ import annotations

from typing import Annotated, Union, get_args

from pydantic import Field

from netspec.spec.layers.base import (FLOAT32_MAX, FLOAT32_TINY, INPUT, MAX_INPUTS, MAX_SIZE, Count, IntOrPair, LayerId,
                                      LayerRef, LayerSpec, NonNegCount, NonNegIntOrPair, ParamInfo, Real, Shape, Tensors,
                                      check_float32, pair)
from netspec.spec.layers.activations import CELU, GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from netspec.spec.layers.convolution import Conv2d
from netspec.spec.layers.core import Identity, Linear, Scale
from netspec.spec.layers.merging import Add, Concat
from netspec.spec.layers.normalization import BatchNorm
from netspec.spec.layers.pooling import AvgPool2d, GlobalPool, MaxPool2d
from netspec.spec.layers.regularization import Dropout, Dropout2d, Rate
from netspec.spec.layers.reshaping import Flatten

# The union's order is the JSON Schema's order and LAYER_TYPES' order: a new type goes at the end.
Layer = Annotated[
    Union[Linear, Conv2d, BatchNorm, ReLU, Dropout, Dropout2d, MaxPool2d, Flatten, AvgPool2d, GlobalPool, Identity,
          Scale, GELU, CELU, LeakyReLU, Tanh, Sigmoid, Add, Concat, Softplus, SiLU],
    Field(discriminator="type"),
]
"""Any layer spec; the `type` field says which."""

LAYER_TYPES: tuple[type[LayerSpec], ...] = get_args(get_args(Layer)[0])
"""Every layer type, in the union's order: the one list that each per-type table is checked against."""

__all__ = [
    "FLOAT32_MAX", "FLOAT32_TINY", "INPUT", "LAYER_TYPES", "MAX_INPUTS", "MAX_SIZE", "Count", "IntOrPair", "Layer",
    "LayerId", "LayerRef", "LayerSpec", "NonNegCount", "NonNegIntOrPair", "ParamInfo", "Rate", "Real", "Shape", "Tensors",
    "check_float32", "pair",
    *(t.__name__ for t in LAYER_TYPES),
]
