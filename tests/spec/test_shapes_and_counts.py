"""Shape inference and parameter counts against absolute values: literal numbers worked out by hand,
and PyTorch's own Conv2d / MaxPool2d as the oracle over a grid of kernels, strides and paddings.

Other tests compare a backend with the spec's own inference, which cannot see a wrong rule that both
share; these cannot be satisfied by a consistent mistake.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Optional

import pytest
import torch

import netspec as ns
from netspec.errors import ShapeError
from netspec.spec.layers import LayerSpec, Shape
from netspec.spec.sweep_file import load_sweep

SPECS = Path(__file__).resolve().parents[2] / "specs"


def counts(layer: LayerSpec, shape: Shape) -> tuple[int, int]:
    """(trainable, buffer) element counts a layer owns for an input shape."""
    infos = layer.params(shape).values()
    return (sum(math.prod(i.shape) for i in infos if i.trainable), sum(math.prod(i.shape) for i in infos if not i.trainable))


def network_counts(network: ns.Network) -> tuple[int, int]:
    infos = network.param_infos().values()
    return network.num_params(), sum(math.prod(i.shape) for i in infos if not i.trainable)


# --- parameter counts, by hand ---------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape, expected", [
    (ns.Linear(out_features=10), (20,), (20 * 10 + 10, 0)),
    (ns.Linear(out_features=10, bias=False), (20,), (200, 0)),
    (ns.Conv2d(out_channels=8, kernel_size=3), (3, 32, 32), (8 * 3 * 3 * 3 + 8, 0)),  # 224
    (ns.Conv2d(out_channels=6, kernel_size=(3, 5), bias=False), (4, 9, 9), (6 * 4 * 3 * 5, 0)),  # 360
    (ns.Conv2d(out_channels=2, kernel_size=(1, 2), stride=2, padding=1), (5, 6, 6), (2 * 5 * 1 * 2 + 2, 0)),  # 22
    # BatchNorm: weight and bias trained; running mean and var, and num_batches_tracked (one int) kept.
    (ns.BatchNorm(), (16,), (2 * 16, 2 * 16 + 1)),
    (ns.BatchNorm(), (8, 5, 5), (2 * 8, 2 * 8 + 1)),
    (ns.ReLU(), (8, 5, 5), (0, 0)),
    (ns.Dropout(p=0.5), (100,), (0, 0)),
    (ns.Dropout2d(p=0.5), (8, 5, 5), (0, 0)),
    (ns.MaxPool2d(kernel_size=2), (8, 6, 6), (0, 0)),
    (ns.Flatten(), (8, 6, 6), (0, 0)),
], ids=lambda v: getattr(v, "type", None) or "")
def test_parameter_count_of_each_layer_type(layer: LayerSpec, shape: Shape, expected: tuple[int, int]) -> None:
    assert counts(layer, shape) == expected


def test_owned_tensors_have_pytorchs_shapes() -> None:
    assert {k: v.shape for k, v in ns.Conv2d(out_channels=6, kernel_size=(3, 5)).params((4, 9, 9)).items()} == \
        {"weight": (6, 4, 3, 5), "bias": (6,)}
    assert {k: v.shape for k, v in ns.Linear(out_features=10).params((20,)).items()} == {"weight": (10, 20), "bias": (10,)}
    assert {k: (v.shape, v.trainable) for k, v in ns.BatchNorm().params((8, 5, 5)).items()} == {
        "weight": ((8,), True), "bias": ((8,), True), "running_mean": ((8,), False), "running_var": ((8,), False),
        "num_batches_tracked": ((), False)}


# The report's networks. MLP: Linear 3072->1024 (3072*1024 + 1024 = 3,146,752), BN 1024 (2,048 trained;
# 1024 + 1024 + 1 = 2,049 kept), Linear 1024->10 (10,250). CNN: conv 3->256 5x5 (256*3*25 + 256 =
# 19,456), BN (512; 513), conv 256->256 5x5 (256*256*25 + 256 = 1,638,656), BN (512; 513), Linear
# 6400->10 (64,010). With 128 channels: 9,728 + 256 + 409,728 + 256 + 32,010 (128*5*5*10 + 10).
@pytest.mark.parametrize("spec, trainable, buffers", [
    ("mlp", 3_146_752 + 2_048 + 10_250, 2_049),
    ("mlp_no_bn", 3_146_752 + 10_250, 0),
    ("mlp_no_dropout", 3_146_752 + 2_048 + 10_250, 2_049),
    ("cnn", 19_456 + 512 + 1_638_656 + 512 + 64_010, 2 * 513),
    ("cnn_no_bn", 19_456 + 1_638_656 + 64_010, 0),
    ("cnn_no_dropout", 19_456 + 512 + 1_638_656 + 512 + 64_010, 2 * 513),
    ("cnn_dropout", 19_456 + 512 + 1_638_656 + 512 + 64_010, 2 * 513),
])
def test_parameter_counts_of_the_reports_networks(spec: str, trainable: int, buffers: int) -> None:
    assert network_counts(ns.Experiment.load(SPECS / f"{spec}.json").network) == (trainable, buffers)


def test_parameter_count_of_the_128_channel_cnn() -> None:
    _, points = load_sweep(SPECS / "sweeps" / "cnn_channels.json")
    assert [network_counts(p.experiment.network) for p in points] == [
        (9_728 + 256 + 409_728 + 256 + 32_010, 2 * 257), (1_723_146, 1_026)]


def test_summary_counts_trainable_parameters_per_layer_and_in_total() -> None:
    summary = ns.Experiment.load(SPECS / "mlp.json").network.summary().splitlines()
    rows = summary[3:8]  # header, rule, input, then one row per layer
    assert [row.split()[-1] for row in rows] == ["3,146,752", "2,048", "0", "0", "10,250"]
    assert summary[-1] == "trainable parameters: 3,159,050   buffers (running statistics): 2,049"


# --- output shapes, by hand --------------------------------------------------------------------------

@pytest.mark.parametrize("layer, shape, expected", [
    (ns.Conv2d(out_channels=8, kernel_size=5), (3, 32, 32), (8, 28, 28)),
    (ns.Conv2d(out_channels=8, kernel_size=3, padding=1), (3, 32, 32), (8, 32, 32)),
    (ns.Conv2d(out_channels=4, kernel_size=(3, 5), stride=2, padding=(1, 0)), (3, 9, 11), (4, 5, 4)),  # (9+2-3)//2+1, (11-5)//2+1
    (ns.Conv2d(out_channels=4, kernel_size=3, stride=(2, 1)), (1, 8, 9), (4, 3, 7)),
    (ns.Conv2d(out_channels=2, kernel_size=2, stride=3), (1, 7, 7), (2, 2, 2)),  # floor(5/3) + 1, not ceil
    (ns.MaxPool2d(kernel_size=2), (256, 28, 28), (256, 14, 14)),
    (ns.MaxPool2d(kernel_size=2), (6, 7, 7), (6, 3, 3)),  # floor: the last row and column are dropped
    (ns.MaxPool2d(kernel_size=3, stride=2, padding=1), (4, 8, 8), (4, 4, 4)),
    (ns.MaxPool2d(kernel_size=(2, 3)), (1, 8, 9), (1, 4, 3)),  # stride defaults to the kernel, per axis
    (ns.MaxPool2d(kernel_size=3, stride=1), (2, 5, 6), (2, 3, 4)),
    (ns.Flatten(), (256, 5, 5), (6400,)),
    (ns.Linear(out_features=10), (6400,), (10,)),
    (ns.BatchNorm(), (8, 5, 5), (8, 5, 5)),
    (ns.Dropout2d(), (8, 5, 5), (8, 5, 5)),
], ids=lambda v: getattr(v, "type", None) or "")
def test_output_shape(layer: LayerSpec, shape: Shape, expected: Shape) -> None:
    assert layer.output_shape(shape) == expected


def test_the_reports_cnn_shapes() -> None:
    net = ns.Experiment.load(SPECS / "cnn.json").network
    assert net.shapes() == [(3, 32, 32), (256, 28, 28), (256, 28, 28), (256, 28, 28), (256, 28, 28), (256, 14, 14),
                            (256, 10, 10), (256, 10, 10), (256, 10, 10), (256, 10, 10), (256, 5, 5), (6400,), (10,)]


@pytest.mark.parametrize("layer, shape", [
    (ns.Conv2d(out_channels=1, kernel_size=5), (3, 4, 4)),  # kernel larger than the input
    (ns.Conv2d(out_channels=1, kernel_size=(1, 6), padding=(0, 0)), (3, 8, 5)),  # too wide only
    (ns.MaxPool2d(kernel_size=2, padding=2), (3, 8, 8)),  # padding more than half the kernel
    (ns.MaxPool2d(kernel_size=(4, 2), padding=(2, 2)), (3, 8, 8)),  # half the kernel is fine in H, not in W
])
def test_impossible_windows_are_shape_errors(layer: LayerSpec, shape: Shape) -> None:
    with pytest.raises(ShapeError):
        layer.output_shape(shape)


# --- output shapes against PyTorch's own layers ------------------------------------------------------

INPUTS = [(2, 2), (7, 7), (8, 9), (5, 11), (32, 32)]
KERNELS = [1, 2, 3, (2, 3), (3, 1), 5]
STRIDES = [1, 2, (2, 1), 3]
PADDINGS = [0, 1, (1, 0), 2]
CHANNELS = 2


def torch_shape(module: torch.nn.Module, hw: tuple[int, int]) -> Optional[Shape]:
    """Output shape of a PyTorch layer on a zeros batch of one, or None where PyTorch refuses."""
    try:
        with torch.no_grad():
            return tuple(module(torch.zeros(1, CHANNELS, *hw)).shape[1:])
    except (RuntimeError, ValueError):
        return None


def spec_shape(layer: LayerSpec, hw: tuple[int, int]) -> Optional[Shape]:
    try:
        return layer.output_shape((CHANNELS, *hw))
    except ShapeError:
        return None


def mismatches(pairs: list[tuple[str, LayerSpec, torch.nn.Module]]) -> tuple[list[str], int]:
    """Every (case, input) where netspec and PyTorch disagree (a shape, or one refusing); and how many
    cases PyTorch refused, to show the grid reaches the edges."""
    bad, refused = [], 0
    for label, layer, module in pairs:
        for hw in INPUTS:
            ours, theirs = spec_shape(layer, hw), torch_shape(module, hw)
            refused += theirs is None
            if ours != theirs:
                bad.append(f"{label} on {hw}: netspec {ours}, torch {theirs}")
    return bad, refused


@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_conv_shapes_match_pytorch(kernel: int | tuple[int, int]) -> None:
    pairs = [(f"Conv2d(k={kernel}, s={s}, p={p})", ns.Conv2d(out_channels=3, kernel_size=kernel, stride=s, padding=p),
              torch.nn.Conv2d(CHANNELS, 3, kernel, stride=s, padding=p))
             for s, p in itertools.product(STRIDES, PADDINGS)]
    bad, refused = mismatches(pairs)
    assert bad == []
    assert (refused > 0) == (kernel not in (1, 2))  # a wider kernel does not fit 2x2 unpadded


@pytest.mark.parametrize("kernel", KERNELS, ids=str)
def test_pool_shapes_match_pytorch(kernel: int | tuple[int, int]) -> None:
    pairs = [(f"MaxPool2d(k={kernel}, s={s}, p={p})", ns.MaxPool2d(kernel_size=kernel, stride=s, padding=p),
              torch.nn.MaxPool2d(kernel, stride=s, padding=p))
             for s, p in itertools.product([None, *STRIDES], PADDINGS)]
    bad, refused = mismatches(pairs)
    assert bad == []
    assert refused > 0  # every kernel meets a padding of more than half of it, or a 2x2 input
