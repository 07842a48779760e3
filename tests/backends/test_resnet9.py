"""specs/resnet9.json is David Page's ResNet-9 exactly: checked against a torch.nn version written here
independently, in the style of davidcpage/cifar10-fast (conv_bn blocks, residuals, MaxPool2d(4),
Linear without bias, Mul(0.125)): the same parameter count, the same tensors in the same order, and
the same logits from the same weights. And its ablation sweep loads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec as ns

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parents[2]


class ConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.res1, self.res2 = ConvBN(c, c), ConvBN(c, c)

    def forward(self, x):
        return x + self.res2(self.res1(x))


class PageResNet9(nn.Module):
    """cifar10-fast's net(): prep, layer1 (+ residual), layer2, layer3 (+ residual), MaxPool2d(4), Linear, x 0.125."""

    def __init__(self, weight: float = 0.125) -> None:
        super().__init__()
        self.prep = ConvBN(3, 64)
        self.layer1 = nn.Sequential(ConvBN(64, 128), nn.MaxPool2d(2), Residual(128))
        self.layer2 = nn.Sequential(ConvBN(128, 256), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(ConvBN(256, 512), nn.MaxPool2d(2), Residual(512))
        self.pool = nn.MaxPool2d(4)
        self.linear = nn.Linear(512, 10, bias=False)
        self.weight = weight

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.linear(self.pool(x).flatten(1)) * self.weight


def test_resnet9_is_pages_resnet9() -> None:
    network = ns.Experiment.load(ROOT / "specs/resnet9.json").network
    page = PageResNet9()
    count = sum(p.numel() for p in page.parameters())
    assert network.num_params() == count == 6_573_120
    ours = network.param_infos()
    theirs = page.state_dict()
    assert [tuple(info.shape) for info in ours.values()] == [tuple(t.shape) for t in theirs.values()]
    # The same weights in registration order give the same logits (eval mode, float64).
    rng = np.random.default_rng(0)
    weights = {name: (rng.uniform(0.5, 1.5, info.shape) if name.endswith("running_var") else
                      rng.normal(0, 0.05, info.shape)).astype(info.dtype) for name, info in ours.items()}
    weights = {n: (np.array(3, np.int64) if n.endswith("num_batches_tracked") else w) for n, w in weights.items()}
    page.load_state_dict({k: torch.from_numpy(w) for k, w in zip(theirs, weights.values())})
    x = rng.standard_normal((2, 3, 32, 32))
    expected = page.double().eval()(torch.from_numpy(x)).detach().numpy()
    model = ns.load_backend("torch").compile(network, weights, device="cpu", precision="float64")
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-10, atol=1e-12)


def test_the_ablation_sweep_loads_its_variants() -> None:
    from netspec.sweeps.sweep import load_sweep

    sweep = load_sweep(ROOT / "specs/sweeps/resnet9_ablation.json")
    assert sweep is not None
    no_residual = ns.Experiment.load(ROOT / "specs/resnet9_no_residual.json").network
    assert not any(layer.type == "Add" for layer in no_residual.layers) and no_residual.is_chain
    assert ns.Experiment.load(ROOT / "specs/resnet9_avg_pool.json").network.num_params() == 6_573_120
