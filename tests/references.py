"""Reference implementations the tests compare the backends with, independent of backends/.

`torch_nn_network` assembles a network from torch.nn built-ins only (torch's own BatchNorm and
Dropout): a second, separate construction of what backends/torch/builders.py builds. The numpy
functions state the spec's semantics (docs/design.md, "Semantics live once") as plainly as possible,
for the contract suite's layer harness.
"""
from __future__ import annotations

import numpy as np

from netspec import layers as spec
from netspec.layers import pair
from netspec.network import Network
from netspec.params import Weights


# ---- torch.nn (imports torch only when called) ------------------------------------------------------

def torch_nn_network(network: Network):
    """The network as an nn.Sequential of torch.nn built-ins; state_dict names are the canonical ones."""
    from torch import nn

    modules: list[nn.Module] = []
    for layer, shape in zip(network.layers, network.shapes()):
        if isinstance(layer, spec.Linear):
            modules.append(nn.Linear(shape[0], layer.out_features, bias=layer.bias))
        elif isinstance(layer, spec.Conv2d):
            modules.append(nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                     bias=layer.bias))
        elif isinstance(layer, spec.BatchNorm):
            norm = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
            modules.append(norm(shape[0], eps=layer.eps, momentum=layer.momentum))
        elif isinstance(layer, spec.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, spec.Dropout):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, spec.Dropout2d):
            modules.append(nn.Dropout2d(layer.p))
        elif isinstance(layer, spec.MaxPool2d):
            modules.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, spec.Flatten):
            modules.append(nn.Flatten())
        else:
            raise NotImplementedError(f"no torch.nn reference for {layer.type}")
    return nn.Sequential(*modules)


def load_into(module, weights: Weights):
    """Canonical weights into any torch module whose state_dict names are the canonical ones."""
    import torch

    module.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
    return module


# ---- numpy: the spec's semantics, float64 --------------------------------------------------------------

def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    return x @ weight.T + (0.0 if bias is None else bias)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding) -> np.ndarray:
    """NCHW x, OIHW weight, explicit zero padding on both sides."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    _, _, kh, kw = weight.shape
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nihw,oihw->no", patch, weight)
    return out + (0.0 if bias is None else bias[None, :, None, None])


def max_pool2d(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """-inf padding (a padded position never wins)."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    out_h, out_w = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty((*x.shape[:2], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return out


def batch_norm_train(x: np.ndarray, weight, bias, running_mean, running_var, momentum: float, eps: float):
    """(output, new running_mean, new running_var): normalized with the biased batch variance;
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    view = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    n = x.size // x.shape[1]
    mean, var = x.mean(axes), x.var(axes)
    out = (x - mean.reshape(view)) / np.sqrt(var + eps).reshape(view) * weight.reshape(view) + bias.reshape(view)
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def batch_norm_eval(x: np.ndarray, weight, bias, running_mean, running_var, eps: float) -> np.ndarray:
    view = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    return (x - running_mean.reshape(view)) / np.sqrt(running_var + eps).reshape(view) * weight.reshape(view) \
        + bias.reshape(view)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy of integer labels, float64."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_probs[np.arange(len(y)), y]
