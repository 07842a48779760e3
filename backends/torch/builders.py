"""Spec -> torch module: one builder per layer type, and the network as an nn.Sequential.

An nn.Sequential names its children "0", "1", ..., so its state_dict names are exactly the canonical
names of netspec.params ("0.weight", "1.running_mean"); nothing needs renaming in either direction.
Conv2d, Linear, ReLU, MaxPool2d and Flatten are torch's own: their semantics are PyTorch's by
definition. BatchNorm and Dropout are hand-written (layers.py).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from netspec import layers as spec
from netspec.backend import Site, builder_for
from netspec.layers import LayerSpec, pair
from netspec.network import Network

from .layers import BatchNorm, Dropout

Builder = Callable[[LayerSpec, Site], nn.Module]
"""builder(layer spec, site) -> module; the site has the input shape without the batch dimension."""


def _linear(layer: spec.Linear, site: Site) -> nn.Module:
    return nn.Linear(site.input_shape[0], layer.out_features, bias=layer.bias)


def _conv2d(layer: spec.Conv2d, site: Site) -> nn.Module:
    return nn.Conv2d(site.input_shape[0], layer.out_channels, pair(layer.kernel_size), stride=pair(layer.stride),
                     padding=pair(layer.padding), bias=layer.bias)


def _batch_norm(layer: spec.BatchNorm, site: Site) -> nn.Module:
    return BatchNorm(site.input_shape[0], momentum=layer.momentum, eps=layer.eps)


def _relu(layer: spec.ReLU, site: Site) -> nn.Module:
    # Not in place: the first layer's input may be the caller's own array (forward shares memory).
    return nn.ReLU()


def _dropout(layer: spec.Dropout, site: Site) -> nn.Module:
    return Dropout(layer.p, layer=site.index)  # one draw per value


def _dropout2d(layer: spec.Dropout2d, site: Site) -> nn.Module:
    return Dropout(layer.p, broadcast_dims=(2, 3), layer=site.index)  # NCHW: one draw per sample and channel


def _max_pool2d(layer: spec.MaxPool2d, site: Site) -> nn.Module:
    return nn.MaxPool2d(pair(layer.kernel_size), stride=layer.effective_stride, padding=pair(layer.padding))


def _flatten(layer: spec.Flatten, site: Site) -> nn.Module:
    return nn.Flatten()  # (N, C, H, W) -> (N, C*H*W) in C, H, W order: the spec's order


BUILDERS: dict[type[LayerSpec], Builder] = {
    spec.Linear: _linear,
    spec.Conv2d: _conv2d,
    spec.BatchNorm: _batch_norm,
    spec.ReLU: _relu,
    spec.Dropout: _dropout,
    spec.Dropout2d: _dropout2d,
    spec.MaxPool2d: _max_pool2d,
    spec.Flatten: _flatten,
}
"""Every layer type of the spec union (tests/test_layer_tables.py checks it against netspec.layers.LAYER_TYPES)."""


def build_module(network: Network) -> nn.Sequential:
    """The network as an nn.Sequential with torch's default initialization (the model overwrites it
    with canonical weights)."""
    shapes = network.shapes()
    modules = []
    for index, layer in enumerate(network.layers):
        modules.append(builder_for(BUILDERS, layer, index, "torch")(layer, Site(index, (shapes[index],))))
    return nn.Sequential(*modules)
