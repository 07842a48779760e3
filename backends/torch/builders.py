"""Spec -> torch module: one builder per layer type, and the network as an nn.Sequential (a chain) or
a Graph (layers that name their inputs).

Both name their children "0", "1", ... (the layer's index), so state_dict names are exactly the
canonical names of netspec.spec.params ("0.weight", "1.running_mean"); nothing needs renaming in either
direction. Conv2d, Linear, the pools and the activations are torch's own: their semantics are
PyTorch's by definition. BatchNorm and Dropout are hand-written (layers.py); Add, Concat, Scale and
GlobalPool are one-line modules (layers.py).
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import nn

from netspec.spec import layers as spec
from netspec.protocol.backend import Site, builder_for
from netspec.spec.layers import LayerSpec, pair
from netspec.spec.network import Network

from .layers import Add, BatchNorm, Concat, Dropout, GlobalPool, Graph, Scale

Builder = Callable[[LayerSpec, Site], nn.Module]
"""builder(layer spec, site) -> module; the site has the input shape without the batch dimension."""


def _linear(layer: spec.Linear, site: Site) -> nn.Module:
    return nn.Linear(site.input_shape[0], layer.out_features, bias=layer.bias)


def _conv2d(layer: spec.Conv2d, site: Site) -> nn.Module:
    (top, bottom), (left, right) = layer.pads()
    conv = nn.Conv2d(site.input_shape[0], layer.out_channels, pair(layer.kernel_size), stride=pair(layer.stride),
                     padding=(top, left), bias=layer.bias)
    if (top, left) == (bottom, right):
        return conv
    # 'same' with an even kernel: the extra zero at the bottom and the right (PyTorch's split), padded
    # explicitly; the module stays an nn.Conv2d so its state_dict names stay "3.weight".
    conv.padding = (0, 0)
    conv.register_forward_pre_hook(lambda module, args: (F.pad(args[0], (left, right, top, bottom)),))
    return conv


def _batch_norm(layer: spec.BatchNorm, site: Site) -> nn.Module:
    return BatchNorm(site.input_shape[0], momentum=layer.momentum, eps=layer.eps, affine=layer.affine,
                     train_weight=layer.train_weight)


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


def _avg_pool2d(layer: spec.AvgPool2d, site: Site) -> nn.Module:
    return nn.AvgPool2d(pair(layer.kernel_size), stride=layer.effective_stride, padding=pair(layer.padding),
                        count_include_pad=layer.count_include_pad)


BUILDERS: dict[type[LayerSpec], Builder] = {
    spec.Linear: _linear,
    spec.Conv2d: _conv2d,
    spec.BatchNorm: _batch_norm,
    spec.ReLU: _relu,
    spec.Dropout: _dropout,
    spec.Dropout2d: _dropout2d,
    spec.MaxPool2d: _max_pool2d,
    spec.Flatten: _flatten,
    spec.AvgPool2d: _avg_pool2d,
    spec.GlobalPool: lambda layer, site: GlobalPool(layer.mode),
    spec.Identity: lambda layer, site: nn.Identity(),
    spec.Scale: lambda layer, site: Scale(layer.factor),
    spec.GELU: lambda layer, site: nn.GELU(approximate=layer.approximate),
    spec.CELU: lambda layer, site: nn.CELU(layer.alpha),
    spec.LeakyReLU: lambda layer, site: nn.LeakyReLU(layer.negative_slope),
    spec.Tanh: lambda layer, site: nn.Tanh(),
    spec.Sigmoid: lambda layer, site: nn.Sigmoid(),
    spec.Add: lambda layer, site: Add(),
    spec.Concat: lambda layer, site: Concat(),
    spec.Softplus: lambda layer, site: nn.Softplus(layer.beta, layer.threshold),
    spec.SiLU: lambda layer, site: nn.SiLU(),
}
"""Every layer type of the spec union (tests/spec/test_layer_tables.py checks it against netspec.spec.layers.LAYER_TYPES)."""


def build_module(network: Network) -> nn.Module:
    """The network as an nn.Sequential (a chain: no per-layer bookkeeping, as fast as before graphs) or a
    Graph, with torch's default initialization (the model overwrites it with canonical weights)."""
    nodes = network.nodes()
    modules = [builder_for(BUILDERS, n.layer, n.index, "torch")(n.layer, Site(n.index, n.input_shapes)) for n in nodes]
    if network.is_chain:
        return nn.Sequential(*modules)
    return Graph(modules, [n.inputs for n in nodes])
