"""torch.nn constructions the tests compare the backends with, independent of backends/.

`torch_nn_network` assembles a network from torch.nn built-ins only (torch's own BatchNorm and
Dropout, pools, activations and its padding='same'), run in order or, for a graph, by a small runner
written here: a second, separate construction of what backends/torch/builders.py builds. The numpy
statement of the spec's semantics lives in the core (netspec/spec/reference.py, LayerSpec.reference).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from netspec.spec import layers as spec
from netspec.spec.network import Network
from netspec.spec.params import Weights


class _Lambda(nn.Module):
    """A one-line module where torch.nn has no layer."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def _batch_norm(layer, shape):
    norm = (nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d)(shape[0], eps=layer.eps, momentum=layer.momentum,
                                                                    affine=layer.affine)
    if not layer.train_weight:
        norm.weight.requires_grad_(False)
    return norm


TORCH_NN = {
    spec.Linear: lambda layer, shape: nn.Linear(shape[0], layer.out_features, bias=layer.bias),
    spec.Conv2d: lambda layer, shape: nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride,
                                                layer.padding, bias=layer.bias),
    spec.BatchNorm: _batch_norm,
    spec.ReLU: lambda layer, shape: nn.ReLU(),
    spec.Dropout: lambda layer, shape: nn.Dropout(layer.p),
    spec.Dropout2d: lambda layer, shape: nn.Dropout2d(layer.p),
    spec.MaxPool2d: lambda layer, shape: nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding),
    spec.Flatten: lambda layer, shape: nn.Flatten(),
    spec.AvgPool2d: lambda layer, shape: nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                                      count_include_pad=layer.count_include_pad),
    spec.GlobalPool: lambda layer, shape: nn.Sequential(
        nn.AdaptiveAvgPool2d(1) if layer.mode == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten()),
    spec.Identity: lambda layer, shape: nn.Identity(),
    spec.Scale: lambda layer, shape: _Lambda(lambda x: x * layer.factor),
    spec.GELU: lambda layer, shape: nn.GELU(approximate=layer.approximate),
    spec.CELU: lambda layer, shape: nn.CELU(layer.alpha),
    spec.LeakyReLU: lambda layer, shape: nn.LeakyReLU(layer.negative_slope),
    spec.Tanh: lambda layer, shape: nn.Tanh(),
    spec.Sigmoid: lambda layer, shape: nn.Sigmoid(),
    spec.Add: lambda layer, shape: _Lambda(lambda *xs: torch.stack(xs).sum(0)),
    spec.Concat: lambda layer, shape: _Lambda(lambda *xs: torch.cat(xs, dim=1)),
    spec.Softplus: lambda layer, shape: nn.Softplus(layer.beta, layer.threshold),
    spec.SiLU: lambda layer, shape: nn.SiLU(),
}
"""Layer type -> its torch.nn construction (layer, input shape) -> module; tests/spec/test_layer_tables.py
checks it covers netspec.spec.layers.LAYER_TYPES."""


def _module(layer, shape):
    """One layer as torch.nn built-ins (a few one-line modules where torch.nn has no layer)."""
    if type(layer) not in TORCH_NN:
        raise NotImplementedError(f"no torch.nn reference for {layer.type}: add it to tests/references.py TORCH_NN")
    return TORCH_NN[type(layer)](layer, shape)


def torch_nn_network(network: Network):
    """The network from torch.nn built-ins, children named by layer index: state_dict names are the
    canonical ones. A chain is an nn.Sequential; a graph runs each child on the outputs it names."""

    nodes = network.nodes()
    modules = [_module(node.layer, node.input_shape) for node in nodes]
    if network.is_chain:
        return nn.Sequential(*modules)

    class GraphReference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for node, module in zip(nodes, modules):
                self.add_module(str(node.index), module)

        def forward(self, x):
            outputs = {-1: x}
            for node, module in zip(nodes, self.children()):
                outputs[node.index] = module(*(outputs[i] for i in node.inputs))
            return outputs[nodes[-1].index]

    return GraphReference()


def load_into(module, weights: Weights):
    """Canonical weights into any torch module whose state_dict names are the canonical ones."""

    module.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    return module
