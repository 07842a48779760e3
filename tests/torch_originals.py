"""Originals written in plain torch.nn, not built by netspec: the
report's CNN and a torchvision-style ResNet-9 (Page's DAWNBench network), small in width for speed, with
BatchNorm statistics moved off their initial values so that a lost or misread BatchNorm shows."""
from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """prep, layer1 + residual, layer2, layer3 + residual, global max pool, linear, x 0.125."""

    def __init__(self, c: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.prep = conv_bn(3, c)
        self.layer1 = nn.Sequential(conv_bn(c, 2 * c), nn.MaxPool2d(2), Residual(2 * c))
        self.layer2 = nn.Sequential(conv_bn(2 * c, 4 * c), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv_bn(4 * c, 8 * c), nn.MaxPool2d(2), Residual(8 * c))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(8 * c, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.fc(torch.flatten(self.pool(x), 1)) * 0.125


def report_cnn(c: int = 8, side: int = 32) -> nn.Sequential:
    """The report's best CNN (two 5x5 convs, BN, ReLU, Dropout2d, max-pool; a linear head), c channels."""
    after = ((side - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(3, c, 5), nn.BatchNorm2d(c), nn.ReLU(), nn.Dropout2d(0.1), nn.MaxPool2d(2),
        nn.Conv2d(c, c, 5), nn.BatchNorm2d(c), nn.ReLU(), nn.Dropout2d(0.1), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c * after * after, 10))


def with_statistics(module: nn.Module, seed: int = 0) -> nn.Module:
    """`module` in eval mode with random BatchNorm statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return module.eval()


def onnx_bytes(module: nn.Module, input_shape: tuple[int, ...], fold: bool = True) -> bytes:
    """torch.onnx.export's TorchScript exporter (dynamo=False: torch 2.13's default is the dynamo exporter,
    which needs onnxscript, not installed), batch symbolic. fold=False keeps BatchNorm as its own node
    (no constant folding); the default folds it into the Conv before it, as exporters do in eval mode."""
    out = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(2, *input_shape),), out, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, do_constant_folding=fold)
    return out.getvalue()
