"""The cross-backend check: passing on every spec and on random networks, its report, its float64
plumbing (scoped to the check: the rest of the process stays float32)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import netspec as ns  # noqa: E402
from netspec_backends.jax import layers as jax_layers  # noqa: E402
from netspec_backends.jax.builders import BUILDERS  # noqa: E402
from netspec.check.crosscheck import CrosscheckReport, Row, run_crosscheck  # noqa: E402
from netspec.check.random_networks import without_dropout  # noqa: E402
from netspec.protocol.backend import load_backend  # noqa: E402
from netspec.spec.experiment import load  # noqa: E402
from netspec.check.random_networks import random_network  # noqa: E402

PAIR = (load_backend("torch"), load_backend("jax"))
"""The reference backend and the one checked against it."""

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.json"))
NARROW = 8
"""Channels of the report's 256-channel CNNs in the default suite: the same layers at a width the
CPU checks in a second (float64 convolutions at 256 channels cost XLA ~30 s per check on 2 cores).
--runslow checks them at full width."""
RANDOM_DEFAULT = 3
"""Random networks checked by default; --runslow checks RANDOM_TOTAL. Each costs XLA compiles of its
programs in two precisions (~2 s on 2 cores), which is what bounds the count."""
RANDOM_TOTAL = 300

SMALL = ns.Network(input_shape=(2, 8, 8), layers=[
    ns.Conv2d(out_channels=3, kernel_size=3, padding=1), ns.BatchNorm(), ns.ReLU(), ns.MaxPool2d(kernel_size=2),
    ns.Flatten(), ns.Linear(out_features=5), ns.BatchNorm(), ns.ReLU(), ns.Dropout(p=0.5), ns.Linear(out_features=4),
])


def is_wide(network: ns.Network) -> bool:
    return any(getattr(layer, "out_channels", 0) > NARROW for layer in network.layers)


def narrowed(network: ns.Network) -> ns.Network:
    """The network with every Conv2d at NARROW output channels (shapes inferred again)."""
    layers = [layer.model_copy(update={"out_channels": NARROW}) if isinstance(layer, ns.Conv2d) else layer
              for layer in network.layers]
    return ns.Network(input_shape=network.input_shape, layers=layers)


def spec_check(path: Path, full_width: bool = False, **kwargs: object) -> CrosscheckReport:
    """The cross-check of a spec file with its own optimizer settings; a CNN narrowed unless full_width."""
    experiment = load(path)
    network = experiment.network
    if is_wide(network) and not full_width:
        network = narrowed(network)
    return run_crosscheck(network, *PAIR, batch_size=2 if is_wide(network) else 8, train_config=experiment.train, **kwargs)


DEFAULT_SPECS = ("mlp", "cnn")
"""Specs checked by default (the others share their layers; --runslow checks every spec)."""


@pytest.mark.parametrize("path", [p if p.stem in DEFAULT_SPECS else pytest.param(p, marks=pytest.mark.slow) for p in SPECS],
                         ids=lambda p: p.stem)
def test_crosscheck_passes_on_every_spec(path: Path) -> None:
    report = spec_check(path)
    assert report.ok, report.table()
    assert {row.tier for row in report.rows} == {"float64", "float32"}


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in SPECS if is_wide(load(p).network)], ids=lambda p: p.stem)
def test_crosscheck_passes_on_full_width_cnns(path: Path) -> None:
    report = spec_check(path, full_width=True)
    assert report.ok, report.table()


@pytest.mark.parametrize("index", [i if i < RANDOM_DEFAULT else pytest.param(i, marks=pytest.mark.slow)
                                   for i in range(RANDOM_TOTAL)])
def test_crosscheck_passes_on_random_networks(index: int) -> None:
    rng = np.random.default_rng(10_000 + index)
    network = random_network(rng)
    report = run_crosscheck(network, *PAIR, seed=index, batch_size=int(rng.integers(3, 9)))
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


def test_report_covers_the_training_path() -> None:
    report = run_crosscheck(SMALL, *PAIR, steps=4)
    names = {row.name for row in report.rows}
    for tier in ("float64", "float32"):
        assert {f"{tier} eval logits", f"{tier} grad 0.weight", f"{tier} running stat 1.running_var",
                f"{tier} evaluate acc", f"{tier} after 4 steps 9.bias", f"{tier} after 4 steps evaluate loss"} <= names
    after_f32 = [row for row in report.rows if row.tier == "float32" and row.quantity.startswith("after")]
    assert after_f32 and not any(row.asserted for row in after_f32)  # float32 trajectories: reported only
    assert all(row.asserted for row in report.rows if row.tier == "float64")


def test_runner_crosscheck_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                      tmp_path: Path) -> None:
    runner = pytest.importorskip("runner")
    spec = tmp_path / "small.json"
    ns.Experiment(name="small", network=SMALL).save(spec)
    assert runner.main([str(spec), "--crosscheck"]) == 0
    out = capsys.readouterr().out
    assert "eval logits" in out and "after 10 steps" in out and "9.bias" in out
    monkeypatch.setitem(BUILDERS, ns.BatchNorm, lambda s, site: jax_layers.BatchNorm(0.9, s.eps, name=site.name))
    assert runner.main([str(spec), "--crosscheck"]) == 1
    assert "worst tensor float64 " in capsys.readouterr().err  # names the worst tensor


# ---- float64 plumbing ----

def test_float64_models_keep_float64_and_the_process_stays_float32() -> None:
    weights = ns.init_weights(SMALL, 0)
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8))
    for name in ("torch", "jax"):
        model = load_backend(name).compile(SMALL, weights, precision="float64")
        assert model.forward(x).dtype == np.float64
        assert {w.dtype for n, w in model.get_weights().items() if "num_batches" not in n} == {np.dtype(np.float64)}
        assert model.get_weights()["1.num_batches_tracked"].dtype == np.int64
        fine = {n: w + 1e-12 if w.dtype == np.float64 else w for n, w in model.get_weights().items()}
        model.set_weights(fine)  # float64 weights survive a round trip (no float32 cast on the way)
        assert np.array_equal(model.get_weights()["0.weight"], fine["0.weight"])
    run_crosscheck(SMALL, *PAIR, steps=2, tiers=("float64",))
    assert not jax.config.jax_enable_x64 and jax.numpy.ones(1).dtype == np.float32
    model = load_backend("jax").compile(SMALL, weights)  # compiled after a check: float32 again
    assert model.forward(x).dtype == np.float32 and model.get_weights()["0.weight"].dtype == np.float32


# ---- the pieces ----

def test_without_dropout() -> None:
    net = without_dropout(SMALL)
    assert [getattr(layer, "p", None) for layer in net.layers if "Dropout" in layer.type] == [0.0]
    assert net.shapes() == SMALL.shapes()


def test_report_table_ok_and_worst() -> None:
    report = CrosscheckReport("title", [
        Row("float64", "loss", "", 1e-16, 1e-16, 1e-9),
        Row("float64", "grad", "0.weight", 1e-3, 1e-2, 1e-9),
        Row("float32", "after 2 steps", "1.running_mean", 1e-1, 1.0, math.inf),
    ])
    assert not report.ok and report.worst == "float64 grad 0.weight"  # a reported row is never the worst
    table = report.table()
    assert table.splitlines()[0] == "title"
    assert "FAIL" in table and "reported" in table and "worst float64 grad 0.weight" in table
    header, _, *rows = table.splitlines()[1:6]
    column = header.index("tensor")
    assert [row[column:].split()[0] for row in rows] == ["-", "0.weight", "1.running_mean"]  # aligned
    assert CrosscheckReport("t", [Row("float32", "after", "x", 1.0, 1.0, math.inf), *report.rows[:1]]).ok


def test_crosscheck_module_imports_no_framework() -> None:
    code = "import sys, netspec.check.crosscheck, netspec.check.random_networks; assert not {'torch', 'jax'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
