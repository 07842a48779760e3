"""netspec.from_torch: plain torch.nn modules, traced with torch.fx, come in as a Network and
canonical weights that both backends compute as the module does (eval mode); unsupported modules and
calls are named by their qualified names, all at once.

Tolerance: 1e-4 of the largest logit (netspec.deploy.import_check.IMPORT_RTOL), against the torch
module's own output: float32 sums in another order differ by ~1e-6 of it."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import netspec as ns  # noqa: E402
from netspec.deploy.import_check import IMPORT_RTOL  # noqa: E402
from tests.torch_originals import ResNet9, report_cnn, with_statistics  # noqa: E402

BACKENDS = [ns.load_backend("torch"), ns.load_backend("jax")]


def _matches(module: nn.Module, network: ns.Network, weights: ns.Weights, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(x)).numpy()
    for backend in BACKENDS:
        got = backend.compile(network, weights).forward(x)
        difference = float(np.abs(got - want).max())
        print(f"{type(module).__name__} via from_torch, {backend.name}: largest difference {difference:.1e}", file=sys.stderr)
        assert difference <= IMPORT_RTOL * max(1.0, float(np.abs(want).max()))


def test_the_report_cnn_keeps_its_batchnorms_and_dropouts() -> None:
    module = with_statistics(report_cnn(8))
    network, weights = ns.load_backend("torch").from_torch(module, (3, 32, 32))
    assert [layer.type for layer in network.layers] == [
        "Conv2d", "BatchNorm", "ReLU", "Dropout2d", "MaxPool2d"] * 2 + ["Flatten", "Linear"]
    assert network.layers[3].p == 0.1  # a traced module keeps what its eval graph would drop
    np.testing.assert_array_equal(weights["1.running_var"], module[1].running_var.numpy())
    _matches(module, network, weights, (3, 32, 32))


def test_resnet9_residuals_written_with_plus(capsys: pytest.CaptureFixture[str]) -> None:
    module = with_statistics(ResNet9(4)).train()
    network, weights = ns.from_torch(module, (3, 16, 16))
    assert module.training  # the caller's module keeps its mode
    printed = capsys.readouterr().out
    assert printed.count(": agrees") == 2  # the verification's lines, one per backend
    types = [layer.type for layer in network.layers]
    assert types.count("Add") == 2 and types[-3:] == ["GlobalPool", "Linear", "Scale"]
    assert network.layers[-1].factor == 0.125 and not network.is_chain
    _matches(module, network, weights, (3, 16, 16))


class Functional(nn.Module):
    """Functional calls: F.relu, F.max_pool2d, torch.cat, view(x.size(0), -1), x * c, x.mean((2, 3))."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 2, 1)
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x))], dim=1)
        y = F.max_pool2d(y, 2)
        return self.head(y.view(y.size(0), -1)) * 0.5 + self.head(torch.flatten(y, 1)) / 4


def test_functional_calls() -> None:
    module = Functional()
    network, weights = ns.from_torch(module, (3, 8, 8), verify=False)
    assert {"Concat", "MaxPool2d", "Sigmoid", "Flatten", "Scale", "Add"} <= {layer.type for layer in network.layers}
    _matches(module, network, weights, (3, 8, 8))


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(4, 4, 3, groups=2)
        self.rnn = nn.LSTM(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sin(self.grouped(x))
        return self.rnn(y.flatten(2).permute(2, 0, 1))[0]


def test_unsupported_modules_and_calls_are_named_at_once() -> None:
    with pytest.raises(ns.SpecError) as err:
        ns.from_torch(Unsupported(), (4, 6, 6))
    lines = str(err.value).splitlines()
    print("\n".join(lines), file=sys.stderr)
    assert any("module 'grouped' (Conv2d): groups=2 is not supported; netspec's Conv2d has groups 1" in line for line in lines)
    assert any("call 'torch.sin' at node 'sin': is not supported" in line for line in lines)
    assert any("module 'rnn' (LSTM): is not supported; the modules netspec reads are Conv2d" in line for line in lines)
