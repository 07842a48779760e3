"""The cross-check's own contract: what it compares and how tightly.

The check is run on torch against torch (bit-identical, every row 0) and against a torch model that
differs from it in one running statistic only, by a known relative amount, at a known moment (the
first pass or the Adam steps). The tolerances are the documented ones, written here as numbers (not
read from netspec.check.crosscheck, so loosening them there fails these tests): float64 one pass 1e-9, float64
after the steps 1e-6, float32 one pass 1e-4. A difference 10x a tolerance must fail, 0.1x must pass.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.check.crosscheck import run_crosscheck

pytestmark = pytest.mark.skipif("torch" not in installed_backends(), reason="needs torch")

DOCUMENTED = {"float64 pass": 1e-9, "float64 steps": 1e-6, "float32 pass": 1e-4}

NETWORK = ns.Network(input_shape=(6,), layers=[
    ns.Linear(out_features=8, bias=False), ns.BatchNorm(), ns.ReLU(), ns.Linear(out_features=8, bias=False),
    ns.BatchNorm(momentum=0.3), ns.ReLU(), ns.Linear(out_features=3)])
STEPS = 4


class _OffByOne:
    """A model equal to the real one but for one tensor, changed once by `change` right after the first
    train-mode forward pass (when='pass') or the first train_steps call (when='steps')."""

    def __init__(self, model: Any, when: str, tensor: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
        self._model, self._when, self._tensor, self._change = model, when, tensor, change
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _shift(self, moment: str) -> None:
        if moment == self._when and not self._done:
            weights = self._model.get_weights()
            weights[self._tensor] = self._change(weights[self._tensor]).astype(weights[self._tensor].dtype)
            self._model.set_weights(weights)
            self._done = True

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        out = self._model.forward(x, train)
        if train:
            self._shift("pass")
        return out

    def train_steps(self, data: Any, batches: np.ndarray, lr: float) -> tuple[float, float]:
        out = self._model.train_steps(data, batches, lr)
        self._shift("steps")
        return out


class _OffBackend:
    def __init__(self, when: str, tensor: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
        self._torch = load_backend("torch")
        self.name = f"torch ({tensor} changed after the {when})"
        self._args = (when, tensor, change)

    def compile(self, *args: Any, **kwargs: Any) -> _OffByOne:
        return _OffByOne(self._torch.compile(*args, **kwargs), *self._args)

    def describe(self) -> dict[str, Any]:
        return self._torch.describe()

    def device(self, name: Optional[str] = None) -> str:
        return self._torch.device(name)


def check(other: Any, tiers: tuple[str, ...] = ("float64",)) -> ns.check.crosscheck.CrosscheckReport:
    return run_crosscheck(NETWORK, load_backend("torch"), other, seed=1, batch_size=6, steps=STEPS, tiers=tiers)


def scaled(relative: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda value: value * (1.0 + relative)


def test_it_compares_every_tensor_after_the_pass_and_after_the_steps() -> None:
    report = check(load_backend("torch"), tiers=("float64", "float32"))
    assert report.ok and all(row.max_abs == 0.0 for row in report.rows)  # torch against itself: identical
    infos = NETWORK.param_infos()
    trainable = {name for name, info in infos.items() if info.trainable}
    statistics = set(infos) - trainable
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "4.running_var"} <= statistics
    for tier in ("float64", "float32"):
        rows = [row for row in report.rows if row.tier == tier]
        tensors: dict[str, set[str]] = {}
        for row in rows:
            tensors.setdefault(row.quantity, set()).add(row.tensor)
        assert tensors["grad"] == trainable
        assert tensors["running stat"] == statistics
        assert tensors[f"after {STEPS} steps"] == set(infos)
        quantities = {row.quantity for row in rows}
        assert {"eval logits", "loss", "train logits", "evaluate loss", "evaluate acc", f"after {STEPS} steps loss sum",
                f"after {STEPS} steps eval logits", f"after {STEPS} steps evaluate loss"} <= quantities
    asserted = {row.tier: row.tolerance for row in report.rows if row.quantity == "loss"}
    assert asserted == {"float64": DOCUMENTED["float64 pass"], "float32": DOCUMENTED["float32 pass"]}
    assert {row.tolerance for row in report.rows if row.quantity.startswith("after") and row.tier == "float64"
            and "acc" not in row.quantity} == {DOCUMENTED["float64 steps"]}


@pytest.mark.parametrize("when", ["pass", "steps"])
def test_one_running_statistic_off_fails_even_where_no_logit_shows_it(when: str) -> None:
    """A BatchNorm that counts one batch too many: num_batches_tracked changes no logit, so only the
    comparison of the running statistics themselves can see it."""
    report = check(_OffBackend(when, "4.num_batches_tracked", lambda n: n + 1))
    assert not report.ok
    failing = {row.tensor for row in report.rows if not row.ok}
    assert failing == {"4.num_batches_tracked"}


@pytest.mark.parametrize("when, tolerance", [("pass", DOCUMENTED["float64 pass"]), ("steps", DOCUMENTED["float64 steps"])])
def test_float64_tolerances_are_the_documented_ones(when: str, tolerance: float) -> None:
    """A running variance off by 10x the documented tolerance fails; by 0.1x it passes."""
    failing = check(_OffBackend(when, "1.running_var", scaled(10 * tolerance)))
    assert not failing.ok and "1.running_var" in {row.tensor for row in failing.rows if not row.ok}
    assert check(_OffBackend(when, "1.running_var", scaled(0.1 * tolerance))).ok


def test_float32_pass_tolerance_is_the_documented_one() -> None:
    tolerance = DOCUMENTED["float32 pass"]
    failing = check(_OffBackend("pass", "4.running_var", scaled(10 * tolerance)), tiers=("float32",))
    assert not failing.ok
    assert check(_OffBackend("pass", "4.running_var", scaled(0.1 * tolerance)), tiers=("float32",)).ok


class _FirstLrOnly:
    """A model that keeps the first learning rate it is given (a compiled step that baked it in)."""

    def __init__(self, model: Any) -> None:
        self._model, self._lr = model, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def train_steps(self, data: Any, batches: np.ndarray, lr: float) -> tuple[float, float]:
        self._lr = lr if self._lr is None else self._lr
        return self._model.train_steps(data, batches, self._lr)


class _FirstLrBackend(_OffBackend):
    def __init__(self) -> None:
        super().__init__("steps", "", lambda value: value)
        self.name = "torch (keeps its first lr)"

    def compile(self, *args: Any, **kwargs: Any) -> _FirstLrOnly:  # type: ignore[override]
        return _FirstLrOnly(self._torch.compile(*args, **kwargs))


def test_the_steps_change_the_learning_rate_between_calls() -> None:
    """The trainer's schedule changes the lr between train_steps calls; a model that ignores the change
    must fail the check."""
    report = check(_FirstLrBackend())
    assert not report.ok
    assert any(row.quantity == f"after {STEPS} steps" and not row.ok for row in report.rows)


DROPPING = ns.Network(input_shape=(2, 6, 6), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3), ns.Dropout2d(p=0.5), ns.Flatten(), ns.Dropout(p=0.3),
    ns.Linear(out_features=4)])


class _NoDropoutBackend(_OffBackend):
    """torch, but its models drop nothing: what a backend that ignored the shared mask stream would do."""

    def __init__(self) -> None:
        super().__init__("steps", "", lambda value: value)
        self.name = "torch (drops nothing)"

    def compile(self, network: ns.Network, *args: Any, **kwargs: Any) -> Any:
        from netspec.check.random_networks import without_dropout

        return self._torch.compile(without_dropout(network), *args, **kwargs)


def test_dropout_stays_on_and_every_mask_is_checked() -> None:
    """Both backends draw the same masks, so the check keeps both kinds of dropout on: one
    mask row per dropout layer and backend, each naming its layer; a backend that drops nothing fails
    its mask rows, and its passes differ too."""
    torch = load_backend("torch")
    report = run_crosscheck(DROPPING, torch, torch, seed=1, batch_size=6, steps=2, tiers=("float64",))
    masks = [row for row in report.rows if row.quantity.startswith("dropout mask")]
    assert report.ok and sorted({row.tensor for row in masks}) == ["1.Dropout2d", "3.Dropout"] and len(masks) == 4
    assert all(row.max_abs == 0 for row in masks)
    bad = run_crosscheck(DROPPING, torch, _NoDropoutBackend(), seed=1, batch_size=6, steps=2, tiers=("float64",))
    assert not bad.ok
    assert {row.tensor for row in bad.rows if row.quantity.startswith("dropout mask") and not row.ok} == {"1.Dropout2d", "3.Dropout"}
