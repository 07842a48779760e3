"""Each parity bug below, injected into one backend by monkeypatching (no file is edited), must make
the cross-check fail on the specs where it applies. The default suite runs each on one spec
(DEFAULT_SPECS; CNNs narrowed as in tests/check/test_crosscheck.py); --runslow on every spec where it applies.
Only the asserted float64 tier runs (it is what fails; the float32 tier would double the cost)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import netspec as ns  # noqa: E402
from netspec_backends.jax import layers as jax_layers  # noqa: E402
from netspec_backends.jax.builders import BUILDERS as JAX_BUILDERS  # noqa: E402
from netspec_backends.jax.model import JaxModel  # noqa: E402
from netspec_backends.torch import builders as torch_build  # noqa: E402
from netspec_backends.torch import layers as torch_layers  # noqa: E402
from netspec_backends.torch import model as torch_model  # noqa: E402
from netspec_backends.torch.model import TorchModel  # noqa: E402
from netspec.check.crosscheck import run_crosscheck  # noqa: E402
from netspec.spec.experiment import AdamConfig, TrainConfig, load  # noqa: E402
from tests.check.test_crosscheck import PAIR, SPECS, spec_check  # noqa: E402

Mutation = Callable[[pytest.MonkeyPatch], None]
DEFAULT_SPECS = ("mlp", "cnn")
"""By default a mutation runs on the first of these it applies to; --runslow: on every spec."""


def _adam(change: Callable[[AdamConfig], AdamConfig]) -> Mutation:
    """torch's Adam built with `change(config.optimizer)`."""
    def inject(monkeypatch: pytest.MonkeyPatch) -> None:
        original = TorchModel.setup_optimizer

        def mutated(self: TorchModel, config: TrainConfig) -> None:
            original(self, config.model_copy(update={"optimizer": change(config.optimizer)}))
        monkeypatch.setattr(TorchModel, "setup_optimizer", mutated)
    return inject


def _lr_times(factor: float) -> Mutation:
    def inject(monkeypatch: pytest.MonkeyPatch) -> None:
        original = JaxModel.train_steps
        monkeypatch.setattr(JaxModel, "train_steps", lambda self, data, batches, lr: original(self, data, batches, lr * factor))
    return inject


def _flax_momentum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flax's convention: momentum is the weight of the old value (0.9 where PyTorch's 0.1 is meant)."""
    monkeypatch.setitem(JAX_BUILDERS, ns.BatchNorm,
                        lambda s, site: jax_layers.BatchNorm(1.0 - s.momentum, s.eps, name=site.name))


def _biased_running_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's running_var updated with the biased batch variance (Flax's choice): the update's
    batch term rescaled by (n - 1) / n after the layer's own update."""
    original = torch_layers.BatchNorm.forward

    def mutated(self: torch_layers.BatchNorm, x: torch.Tensor) -> torch.Tensor:
        kept = (1.0 - self.momentum) * self.running_var.clone()
        out = original(self, x)
        if self.training:
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_var.copy_(kept + (self.running_var - kept) * ((n - 1) / n))
        return out
    monkeypatch.setattr(torch_layers.BatchNorm, "forward", mutated)


def _flatten_hwc(monkeypatch: pytest.MonkeyPatch) -> None:
    """JAX flattening NHWC directly: the canonical Linear weights then see H, W, C order."""
    monkeypatch.setitem(JAX_BUILDERS, ns.Flatten, lambda s, site: lambda x, train: x.reshape(x.shape[0], -1))


class _Untransposed(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.T, self.bias)


def _linear_untransposed(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch using a Linear's [out, in] weight as [in, out] (only a square layer runs at all)."""
    monkeypatch.setitem(torch_build.BUILDERS, ns.Linear,
                        lambda s, site: _Untransposed(site.input_shape[0], s.out_features, bias=s.bias))


def _eval_logits_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    original = torch_model.build_module

    def mutated(network: ns.Network) -> nn.Sequential:
        module = original(network)
        module.register_forward_hook(lambda m, inputs, out: None if m.training else out * 1.0001)
        return module
    monkeypatch.setattr(torch_model, "build_module", mutated)


def _has(layer_type: type) -> Callable[[ns.Network], bool]:
    return lambda network: any(isinstance(layer, layer_type) for layer in network.layers)


MUTATIONS: dict[str, tuple[Mutation, Callable[[ns.Network], bool]]] = {
    "adam_b2_0.99": (_adam(lambda o: o.model_copy(update={"betas": (o.betas[0], 0.99)})), lambda n: True),
    "adam_eps_1e-4": (_adam(lambda o: o.model_copy(update={"eps": 1e-4})), lambda n: True),
    "lr_x1.01": (_lr_times(1.01), lambda n: True),
    "bn_momentum_flax": (_flax_momentum, _has(ns.BatchNorm)),
    "bn_biased_running_var": (_biased_running_var, _has(ns.BatchNorm)),
    "flatten_hwc": (_flatten_hwc, _has(ns.Conv2d)),
    "eval_logits_x1.0001": (_eval_logits_scaled, lambda n: True),
}
"""name -> (injection, whether it applies to a network)."""


def _cases() -> list[object]:
    cases = []
    for name, (_, applies) in MUTATIONS.items():
        paths = [path for path in SPECS if applies(load(path).network)]
        default = next(path for stem in DEFAULT_SPECS for path in paths if path.stem == stem)
        cases += [pytest.param(name, path, marks=() if path == default else (pytest.mark.slow,), id=f"{name}-{path.stem}")
                  for path in paths]
    return cases


@pytest.mark.parametrize("mutation, path", _cases())
def test_mutation_fails_the_check(mutation: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    MUTATIONS[mutation][0](monkeypatch)
    report = spec_check(path, tiers=("float64",))
    assert not report.ok, report.table()
    print(f"{mutation} {path.stem}: worst {report.worst} at {report.worst_row.score:.3g} of its tolerance")


def test_linear_untransposed_fails_on_square_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    square = ns.Network(input_shape=(6,), layers=[ns.Linear(out_features=6), ns.BatchNorm(), ns.ReLU(),
                                                   ns.Linear(out_features=6), ns.ReLU(), ns.Linear(out_features=6)])
    assert run_crosscheck(square, *PAIR, tiers=("float64",)).ok
    _linear_untransposed(monkeypatch)
    report = run_crosscheck(square, *PAIR, tiers=("float64",))
    assert not report.ok and not next(r for r in report.rows if r.quantity == "eval logits").ok, report.table()
