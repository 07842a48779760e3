"""The cross-check at its edges: a network far too big is refused by a size bound before any
backend compiles (one line: the bound and the network's size)."""
from __future__ import annotations

import math

import pytest

import netspec as ns
from netspec.check.crosscheck import MAX_CROSSCHECK_BYTES, check_crosscheck_size
from netspec.errors import SpecError


def test_a_network_of_100000_channels_is_refused_before_compiling() -> None:
    network = ns.Network(input_shape=(3, 32, 32), layers=[ns.Conv2d(out_channels=100_000, kernel_size=3, padding=1),
                                                         ns.Flatten(), ns.Linear(out_features=10)])
    # Independent estimate: the conv's float32 output alone, batch 8, kept for backward (x2), float64 (x2),
    # two backends (x2): 100,000 * 32 * 32 * 4 bytes * 8 * 2 * 2 * 2 ~ 24 GiB, far beyond the bound.
    assert 100_000 * 32 * 32 * 4 * 8 * 8 > MAX_CROSSCHECK_BYTES
    with pytest.raises(SpecError) as err:
        check_crosscheck_size(network, batch_size=8)
    line = str(err.value)
    assert "\n" not in line and "bound of 4 GiB" in line and "is the largest" in line
    need = float(line.split("needs about ")[1].split(" GiB")[0].replace(",", ""))
    assert need > 24  # at least the activations counted above


def test_the_shipped_resnet9_is_within_the_bound() -> None:
    from pathlib import Path

    from netspec.spec.experiment import load

    spec = load(Path(__file__).resolve().parents[2] / "specs" / "resnet9.json")
    check_crosscheck_size(getattr(spec, "network", spec), batch_size=8)
    assert math.isfinite(MAX_CROSSCHECK_BYTES)


# ---- float32 overflow: a verdict with its table, not "a diverged or damaged run" ----

def _rows_of(a: list[float], b: list[float]) -> "object":
    from netspec.check.crosscheck import CrosscheckReport, _Tier

    report = CrosscheckReport("cross-check jax against torch: test")
    _Tier(report, "float32", 1e-4).rel("eval logits", "", a, b)
    return report.rows[0]


def test_the_same_inf_in_both_backends_compares_the_finite_rest() -> None:
    # By hand: the inf agrees; the finite rest differs by 1e-6 at scale 2 -> rel 5e-7, within 1e-4.
    row = _rows_of([math.inf, 2.0, -1.0], [math.inf, 2.0 - 1e-6, -1.0])
    assert row.nonfinite == 1 and row.ok
    assert row.rel == pytest.approx(1e-6 / 2, rel=1e-6)


def test_an_inf_in_one_backend_only_fails_its_row() -> None:
    row = _rows_of([math.inf, 2.0], [1e30, 2.0])
    assert row.nonfinite == 1 and math.isnan(row.rel) and not row.ok
    nan_row = _rows_of([math.nan, 2.0], [math.inf, 2.0])  # NaN against inf is a disagreement too
    assert not nan_row.ok


def test_crosscheck_of_an_overflowing_spec_gives_its_verdict(tmp_path) -> None:
    import json
    import subprocess
    import sys

    pytest.importorskip("jax", reason="the cross-check compares torch with jax")
    # 1e30 * 1e30 = 1e60: far beyond float32's 3.4e38, well within float64's range.
    spec = {"name": "overflow", "network": {"input_shape": [3, 8, 8], "layers": [
        {"type": "Flatten"}, {"type": "Linear", "out_features": 8}, {"type": "Scale", "factor": 1e30},
        {"type": "Scale", "factor": 1e30}, {"type": "Linear", "out_features": 4}]},
        "data": {"source": "synthetic", "train_size": 64, "val_size": 16, "test_size": 16},
        "train": {"lr": 0.01, "batch_size": 16, "epochs": 1}}
    path = tmp_path / "overflow.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "netspec", "crosscheck", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode in (0, 1), done.stderr
    assert "diverged or damaged" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert done.stdout.startswith("crosscheck ")  # the verdict line comes first
    assert "hold NaN or inf" in done.stdout and "non-finite values" in done.stdout
