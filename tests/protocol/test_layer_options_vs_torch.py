"""Every field of every layer type at a non-default value, through each backend in float64, against
torch.nn itself: the reference is PyTorch's module, not netspec's own numpy meaning.

The cases are generated from the layer classes (netspec.spec.layers.LAYER_TYPES and their
model_fields): a field added to a layer type without a row in OPTION_VALUES (non-default values and the
input shape they are tried on) or in NO_TORCH_COUNTERPART (why torch.nn has none) fails
test_every_field_is_covered, so a new field cannot go untested. Even and odd kernels, 'same' padding
with an even kernel (PyTorch's extra zero at the bottom and right), rectangular strides and
count_include_pad=false are among the values.

Tolerance: both sides compute in float64 on float32-representable inputs and weights; only the order of
summation differs, so rtol=atol=1e-10 (a misplaced pad or a divisor off by one is O(0.1)).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import netspec as ns
from netspec.protocol.backend import installed_backends, load_backend
from netspec.spec.layers import LAYER_TYPES, LayerSpec, pair

torch = pytest.importorskip("torch", reason="torch.nn is the reference")
nn = torch.nn

GRAPH_FIELDS = {"id", "inputs", "type"}
"""Fields every layer has; their meaning is the graph's (tests/spec/test_graph_outside_reference.py)."""

IMAGE, FLAT = (3, 9, 8), (5,)
"""Odd height, even width: an even kernel's 'same' split and a window's floor rule both show."""

OPTION_VALUES: dict[tuple[str, str], list[tuple[dict[str, Any], tuple[int, ...]]]] = {
    # (type, field): [(the layer's fields, input shape)], each with the named field away from its default
    ("Linear", "out_features"): [({"out_features": 3}, FLAT)],
    ("Linear", "bias"): [({"out_features": 4, "bias": False}, FLAT)],
    ("Conv2d", "out_channels"): [({"out_channels": 2, "kernel_size": 3}, IMAGE)],
    ("Conv2d", "kernel_size"): [({"out_channels": 2, "kernel_size": 2}, IMAGE),
                                ({"out_channels": 2, "kernel_size": (3, 2)}, IMAGE)],
    ("Conv2d", "stride"): [({"out_channels": 2, "kernel_size": 3, "stride": 2}, IMAGE),
                           ({"out_channels": 2, "kernel_size": 2, "stride": (1, 3)}, IMAGE)],
    ("Conv2d", "padding"): [({"out_channels": 2, "kernel_size": 3, "padding": (1, 2)}, IMAGE),
                            ({"out_channels": 2, "kernel_size": 3, "padding": "same"}, IMAGE),
                            ({"out_channels": 2, "kernel_size": 2, "padding": "same"}, IMAGE),
                            ({"out_channels": 2, "kernel_size": (4, 3), "padding": "same"}, IMAGE)],
    ("Conv2d", "bias"): [({"out_channels": 2, "kernel_size": 3, "bias": False}, IMAGE)],
    ("BatchNorm", "momentum"): [({"momentum": 0.7}, IMAGE), ({"momentum": 1.0}, FLAT)],
    ("BatchNorm", "eps"): [({"eps": 0.5}, IMAGE), ({"eps": 0.25}, FLAT)],
    ("BatchNorm", "affine"): [({"affine": False}, IMAGE), ({"affine": False}, FLAT)],
    ("BatchNorm", "train_weight"): [({"train_weight": False}, IMAGE)],
    ("MaxPool2d", "kernel_size"): [({"kernel_size": 3}, IMAGE), ({"kernel_size": (2, 3)}, IMAGE)],
    ("MaxPool2d", "stride"): [({"kernel_size": 3, "stride": 1}, IMAGE), ({"kernel_size": 2, "stride": (1, 2)}, IMAGE)],
    ("MaxPool2d", "padding"): [({"kernel_size": 3, "padding": 1}, IMAGE), ({"kernel_size": (2, 3), "stride": 1, "padding": (1, 1)}, IMAGE)],
    ("AvgPool2d", "kernel_size"): [({"kernel_size": 3}, IMAGE), ({"kernel_size": (2, 3)}, IMAGE)],
    ("AvgPool2d", "stride"): [({"kernel_size": 3, "stride": 1}, IMAGE), ({"kernel_size": 2, "stride": (1, 2)}, IMAGE)],
    ("AvgPool2d", "padding"): [({"kernel_size": 3, "stride": 2, "padding": 1}, IMAGE),
                               ({"kernel_size": (2, 3), "stride": 1, "padding": (1, 1)}, IMAGE)],
    ("AvgPool2d", "count_include_pad"): [({"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, IMAGE),
                                         ({"kernel_size": (2, 3), "stride": 1, "padding": (1, 1), "count_include_pad": False}, IMAGE)],
    ("GlobalPool", "mode"): [({"mode": "max"}, IMAGE)],
    ("Scale", "factor"): [({"factor": -0.375}, IMAGE)],
    ("GELU", "approximate"): [({"approximate": "tanh"}, FLAT)],
    ("CELU", "alpha"): [({"alpha": 0.3}, FLAT)],
    ("LeakyReLU", "negative_slope"): [({"negative_slope": 0.2}, IMAGE), ({"negative_slope": -1.5}, FLAT)],
    # thresholds inside the inputs' range (standard normal), so both sides of beta * x > threshold are hit
    ("Softplus", "beta"): [({"beta": 3.0, "threshold": 1.0}, IMAGE), ({"beta": 0.5}, FLAT)],
    ("Softplus", "threshold"): [({"threshold": 0.5}, IMAGE), ({"threshold": -1.0}, FLAT)],
}

NO_TORCH_COUNTERPART: dict[tuple[str, str], str] = {
    ("Dropout", "p"): "torch.nn.Dropout draws its own masks; netspec's are one counter-hash stream for both backends "
                      "(tests/protocol/test_dropout_stream.py); here only the 1/(1-p) scaling of kept values is checked",
    ("Dropout2d", "p"): "as Dropout: the masks are netspec's own stream; the scaling and per-channel masks are checked",
}

BASE_LAYERS: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    # layer types without fields of their own: checked once at their (only) setting
    "ReLU": ({}, IMAGE), "Flatten": ({}, IMAGE), "Identity": ({}, IMAGE), "Tanh": ({}, FLAT), "Sigmoid": ({}, IMAGE),
    "SiLU": ({}, FLAT),
}
MERGES = {"Add", "Concat"}
"""Merge layers have no field beyond inputs: tests/spec/test_graph_outside_reference.py checks them against torch."""


def torch_module(layer: LayerSpec, shape: tuple[int, ...], w: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """PyTorch's own module for `layer`, its tensors copied in from the netspec weights `w`."""
    kind = layer.type
    if kind == "Linear":
        m = nn.Linear(shape[0], layer.out_features, bias=layer.bias)
    elif kind == "Conv2d":
        m = nn.Conv2d(shape[0], layer.out_channels, pair(layer.kernel_size), stride=pair(layer.stride),
                      padding=layer.padding if layer.padding == "same" else pair(layer.padding), bias=layer.bias)
    elif kind == "BatchNorm":
        m = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], eps=layer.eps, momentum=layer.momentum,
                                                                   affine=layer.affine)
    elif kind == "MaxPool2d":
        m = nn.MaxPool2d(pair(layer.kernel_size), stride=None if layer.stride is None else pair(layer.stride),
                         padding=pair(layer.padding))
    elif kind == "AvgPool2d":
        m = nn.AvgPool2d(pair(layer.kernel_size), stride=None if layer.stride is None else pair(layer.stride),
                         padding=pair(layer.padding), count_include_pad=layer.count_include_pad)
    elif kind == "GlobalPool":
        m = nn.Sequential(nn.AdaptiveAvgPool2d(1) if layer.mode == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten())
    elif kind == "Scale":
        return lambda x: torch.mul(x, layer.factor)  # no torch.nn module multiplies by a constant
    elif kind == "GELU":
        m = nn.GELU(approximate=layer.approximate)
    elif kind == "CELU":
        m = nn.CELU(alpha=layer.alpha)
    elif kind == "LeakyReLU":
        m = nn.LeakyReLU(negative_slope=layer.negative_slope)
    elif kind == "Softplus":
        m = nn.Softplus(beta=layer.beta, threshold=layer.threshold)
    else:
        m = {"ReLU": nn.ReLU, "Flatten": nn.Flatten, "Identity": nn.Identity, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid,
             "SiLU": nn.SiLU}[kind]()
    m = m.double()
    state = m.state_dict()
    missing = set(state) - set(w)
    assert not missing, f"{layer!r}: torch has tensors {missing} netspec lacks"
    m.load_state_dict({k: w[k] for k in state})
    return m


def cases() -> list[tuple[str, dict[str, Any], tuple[int, ...]]]:
    out = [(f"{t}.{f}", fields, shape) for (t, f), rows in OPTION_VALUES.items() for fields, shape in rows]
    out += [(t, fields, shape) for t, (fields, shape) in BASE_LAYERS.items()]
    return [(name, {"type": name.split(".")[0], **fields}, shape) for name, fields, shape in out]


def test_every_field_is_covered() -> None:
    """Each (type, field) of the layer classes has non-default values or a stated reason; every type is tried."""
    fields = {(t.__name__, f) for t in LAYER_TYPES for f in t.model_fields if f not in GRAPH_FIELDS}
    covered = set(OPTION_VALUES) | set(NO_TORCH_COUNTERPART)
    assert fields == covered, (f"tests/protocol/test_layer_options_vs_torch.py OPTION_VALUES (or NO_TORCH_COUNTERPART) and torch_module: "
                               f"not covered: {sorted(fields - covered)}; no such field: {sorted(covered - fields)}")
    types = {t.__name__ for t in LAYER_TYPES}
    tried = {t for t, _ in OPTION_VALUES} | set(BASE_LAYERS) | MERGES | {t for t, _ in NO_TORCH_COUNTERPART}
    assert types == tried, f"layer types never tried: {sorted(types - tried)}"
    for (kind, field), rows in OPTION_VALUES.items():
        spec = next(t for t in LAYER_TYPES if t.__name__ == kind).model_fields[field]
        for fields, _ in rows:
            assert spec.is_required() or fields[field] != spec.default, f"{kind}.{field}: {fields} is its default"


@pytest.fixture(scope="module", params=installed_backends())
def backend(request: pytest.FixtureRequest):
    return load_backend(request.param)


def weights_for(network: ns.Network, seed: int) -> ns.Weights:
    """Random float32 values (exact in float64), a positive running_var, a BatchNorm scale away from 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, info in network.param_infos().items():
        value = rng.uniform(0.5, 1.5, info.shape) if name.endswith("running_var") else rng.standard_normal(info.shape)
        out[name] = np.array(3 if info.dtype == "int64" else value, dtype=info.dtype)
    return out


@pytest.mark.parametrize("name,fields,shape", cases(), ids=[c[0] + f"-{i}" for i, c in enumerate(cases())])
def test_layer_option_matches_torch_nn(backend, name: str, fields: dict[str, Any], shape: tuple[int, ...]) -> None:
    network = ns.Network(input_shape=shape, layers=[fields])
    layer = network.layers[0]
    w = weights_for(network, seed=len(name))
    x = np.random.default_rng(1).standard_normal((4, *shape)).astype(np.float32)
    model = backend.compile(network, w, seed=0, device="cpu", precision="float64")
    reference = torch_module(layer, shape, {k[2:]: torch.from_numpy(v.astype(np.float64) if v.dtype.kind == "f" else v)
                                            for k, v in w.items()})
    tx = torch.from_numpy(x.astype(np.float64))
    for train in (False, True):
        if isinstance(reference, nn.Module):
            reference.train(train)
        with torch.no_grad():
            expected = reference(tx).numpy()
        got = model.forward(x, train)
        assert got.shape == expected.shape, f"{name} {fields} train={train}: shape {got.shape}, torch {expected.shape}"
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"{name} {fields} train={train}")
    if isinstance(reference, nn.Module):  # after one training pass: running statistics as torch's
        after = model.get_weights()
        for key, value in reference.state_dict().items():
            np.testing.assert_allclose(after[f"0.{key}"], value.numpy(), rtol=1e-10, atol=1e-10, err_msg=f"{name} {key}")


@pytest.mark.parametrize("kind", ["Dropout", "Dropout2d"])
def test_dropout_p_scales_kept_values_as_torch(backend, kind: str) -> None:
    """torch.nn.Dropout's meaning with netspec's masks: kept values are x / (1 - p), dropped are 0; a
    Dropout2d mask is one per (sample, channel)."""
    p = 0.25
    network = ns.Network(input_shape=IMAGE, layers=[{"type": kind, "p": p}])
    model = backend.compile(network, {}, seed=5, device="cpu", precision="float64")
    x = np.random.default_rng(2).uniform(1.0, 2.0, (6, *IMAGE)).astype(np.float32)
    got = model.forward(x, train=True)
    kept = got != 0
    mask = torch.from_numpy(kept.astype(np.float64))
    expected = torch.from_numpy(x.astype(np.float64)) * mask / (1 - p)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)
    assert 0 < kept.mean() < 1
    if kind == "Dropout2d":
        assert (kept.all(axis=(2, 3)) | ~kept.any(axis=(2, 3))).all(), "a Dropout2d mask varies inside a channel"
