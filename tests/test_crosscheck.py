"""The cross-backend check: passing on every spec and on random networks, failing when parity is
broken on purpose, and its report."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

import netspec as ns  # noqa: E402
from backends.jax import layers as jax_layers  # noqa: E402
from backends.jax.builders import BUILDERS  # noqa: E402
from netspec.crosscheck import (CrosscheckReport, Row, adam_step_bound, random_network, run_crosscheck,  # noqa: E402
                                without_dropout)
from netspec.experiment import load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.json"))
RANDOM_DEFAULT = 40
"""Random networks checked by default; --runslow checks RANDOM_TOTAL. Each costs an XLA compile of
its programs (~1 s on 2 cores), which is what bounds the count, not the check itself."""
RANDOM_TOTAL = 300

SMALL = ns.Network(input_shape=(2, 8, 8), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3, padding=1), ns.BatchNorm(), ns.ReLU(), ns.MaxPool2d(kernel_size=2),
    ns.Flatten(), ns.Linear(out_features=5), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=4),
])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_crosscheck_passes_on_every_spec(path: Path) -> None:
    network = load(path).network
    wide = any(getattr(layer, "out_channels", 0) >= 128 for layer in network.layers)
    report = run_crosscheck(network, batch_size=2 if wide else 8)  # the 256-channel CNNs: a small batch
    assert report.ok, report.table()


@pytest.mark.parametrize("index", [i if i < RANDOM_DEFAULT else pytest.param(i, marks=pytest.mark.slow)
                                   for i in range(RANDOM_TOTAL)])
def test_crosscheck_passes_on_random_networks(index: int) -> None:
    rng = np.random.default_rng(10_000 + index)
    network = random_network(rng)
    report = run_crosscheck(network, seed=index, batch_size=int(rng.integers(3, 9)))
    assert report.ok, f"{network.model_dump_json()}\n{report.table()}"


def test_random_networks_are_valid_and_varied() -> None:
    rng = np.random.default_rng(0)
    networks = [random_network(rng) for _ in range(500)]
    layers = [layer for net in networks for layer in net.layers]
    assert {type(layer) for layer in layers} == set(ns.LAYER_TYPES)
    assert all(len(net.output_shape) == 1 and isinstance(net.layers[-1], ns.Linear) for net in networks)
    convs = [layer for layer in layers if isinstance(layer, ns.Conv2d)]
    assert {layer.kernel_size for layer in convs} >= {1, 2, 3} and any(isinstance(c.kernel_size, tuple) for c in convs)
    assert {2, 1} <= {layer.stride for layer in convs} and any(layer.padding != 0 for layer in convs)
    pools = [layer for layer in layers if isinstance(layer, ns.MaxPool2d)]
    assert any(p.stride is None for p in pools) and any(p.stride is not None for p in pools)
    assert len({net.input_shape for net in networks}) > 50
    assert any(isinstance(layer, ns.BatchNorm) and layer.momentum != 0.1 for layer in layers)


# ---- parity broken on purpose ----

def test_wrong_batchnorm_momentum_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flax's meaning of momentum (weight of the old value, 0.9) in the JAX backend."""
    monkeypatch.setitem(BUILDERS, ns.BatchNorm, lambda s, name, precision: jax_layers.BatchNorm(0.9, s.eps, name=name))
    report = run_crosscheck(SMALL, steps=2)
    assert not report.ok
    assert report.worst_row.quantity == "running stat" and "running_" in report.worst


def test_flatten_in_hwc_order_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flattening NHWC directly: the canonical Linear weights then see the features in H, W, C order."""
    monkeypatch.setitem(BUILDERS, ns.Flatten, lambda s, name, precision: lambda x, train: x.reshape(x.shape[0], -1))
    report = run_crosscheck(SMALL, steps=2)
    assert not report.ok
    assert not next(r for r in report.rows if r.quantity == "eval logits").ok


def test_runner_crosscheck_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                      tmp_path: Path) -> None:
    runner = pytest.importorskip("runner")
    spec = tmp_path / "small.json"
    ns.Experiment(name="small", network=SMALL).save(spec)
    assert runner.main([str(spec), "--crosscheck"]) == 0
    out = capsys.readouterr().out
    assert "eval logits" in out and "after 10 steps" in out and "9.bias" in out
    monkeypatch.setitem(BUILDERS, ns.BatchNorm, lambda s, name, precision: jax_layers.BatchNorm(0.9, s.eps, name=name))
    assert runner.main([str(spec), "--crosscheck"]) == 1
    assert "running_" in capsys.readouterr().err  # names the worst tensor


# ---- the pieces ----

def test_without_dropout() -> None:
    net = without_dropout(SMALL)
    assert [getattr(layer, "p", None) for layer in net.layers if "Dropout" in layer.type] == [0.0]
    assert net.shapes() == SMALL.shapes()


def test_adam_step_bound_holds_for_any_gradients() -> None:
    """lr * adam_step_bound(t) bounds every element of torch's Adam step t, whatever the gradients."""
    rng = np.random.default_rng(0)
    for betas in [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]:
        grads = rng.standard_normal((10, 2000)) * np.exp(rng.uniform(-12, 2, (10, 2000)))  # wild magnitudes
        theta = torch.zeros(2000, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=1e-3, betas=betas, eps=1e-8)
        for t, g in enumerate(grads, start=1):
            before = theta.detach().clone()
            theta.grad = torch.as_tensor(g, dtype=torch.float32)
            opt.step()
            assert float((theta.detach() - before).abs().max()) <= 1e-3 * adam_step_bound(t, betas) * (1 + 1e-5)


def test_report_table_ok_and_worst() -> None:
    report = CrosscheckReport("title", [
        Row("loss", "", 1e-7, 1e-7, "rel", 1e-7, 1e-5),
        Row("grad", "0.weight", 1e-3, 1e-2, "rel", 1e-2, 1e-5),
        Row("after 2 steps", "1.running_mean", 1e-3, 1e-3, "abs", 1e-3, math.inf, ill_conditioned=True),
    ])
    assert not report.ok and report.worst == "grad 0.weight"
    table = report.table()
    assert table.splitlines()[0] == "title"
    assert "FAIL" in table and "0.weight" in table and "ill-conditioned" in table and "worst grad 0.weight" in table
    header, _, *rows = table.splitlines()[1:6]
    column = header.index("tensor")
    assert [row[column:].split()[0] for row in rows] == ["-", "0.weight", "1.running_mean"]  # aligned


def test_crosscheck_module_imports_no_framework() -> None:
    code = "import sys, netspec.crosscheck; assert not {'torch', 'jax'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
