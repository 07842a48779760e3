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

    spec = load(Path(__file__).parent.parent / "specs" / "resnet9.json")
    check_crosscheck_size(getattr(spec, "network", spec), batch_size=8)
    assert math.isfinite(MAX_CROSSCHECK_BYTES)
