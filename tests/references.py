"""torch.nn constructions the tests compare the backends with, independent of backends/.

`torch_nn_network` assembles a network from torch.nn built-ins only (torch's own BatchNorm and
Dropout, pools, activations and its padding='same'), run in order or, for a graph, by a small runner
written here: a second, separate construction of what backends/torch/builders.py builds. The numpy
statement of the spec's semantics lives in the core (netspec/spec/reference.py, LayerSpec.reference).
"""
from __future__ import annotations

import numpy as np

from netspec.spec import layers as spec
from netspec.spec.network import Network
from netspec.spec.params import Weights


def _module(layer, shape):
    """One layer as torch.nn built-ins (a few one-line modules where torch.nn has no layer)."""
    import torch
    from torch import nn

    class Lambda(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *xs):
            return self.fn(*xs)

    if isinstance(layer, spec.Linear):
        return nn.Linear(shape[0], layer.out_features, bias=layer.bias)
    if isinstance(layer, spec.Conv2d):
        return nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, layer.padding, bias=layer.bias)
    if isinstance(layer, spec.BatchNorm):
        norm = (nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d)(shape[0], eps=layer.eps, momentum=layer.momentum,
                                                                        affine=layer.affine)
        if not layer.train_weight:
            norm.weight.requires_grad_(False)
        return norm
    simple = {spec.ReLU: nn.ReLU, spec.Flatten: nn.Flatten, spec.Identity: nn.Identity, spec.Tanh: nn.Tanh,
              spec.Sigmoid: nn.Sigmoid}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, spec.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, spec.Dropout2d):
        return nn.Dropout2d(layer.p)
    if isinstance(layer, spec.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, spec.AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad)
    if isinstance(layer, spec.GlobalPool):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1) if layer.mode == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten())
    if isinstance(layer, spec.GELU):
        return nn.GELU(approximate=layer.approximate)
    if isinstance(layer, spec.CELU):
        return nn.CELU(layer.alpha)
    if isinstance(layer, spec.LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, spec.Scale):
        return Lambda(lambda x: x * layer.factor)
    if isinstance(layer, spec.Add):
        return Lambda(lambda *xs: torch.stack(xs).sum(0))
    if isinstance(layer, spec.Concat):
        return Lambda(lambda *xs: torch.cat(xs, dim=1))
    raise NotImplementedError(f"no torch.nn reference for {layer.type}")


def torch_nn_network(network: Network):
    """The network from torch.nn built-ins, children named by layer index: state_dict names are the
    canonical ones. A chain is an nn.Sequential; a graph runs each child on the outputs it names."""
    from torch import nn

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
    import torch

    module.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    return module
