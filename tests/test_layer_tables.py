"""A layer type is defined once (its family module in netspec/spec/layers/) and then needs exactly one entry in each per-type
table: each backend's builders, the ONNX exporter's rules and the random-layer generators; and its class
states its numpy meaning (LayerSpec.reference). This test fails while any table misses a type (or
holds one that is not in the union), naming the table and the type."""
from __future__ import annotations

import importlib

import pytest

import netspec as ns
from netspec.deploy import export
from netspec.check import random_networks as testing
from netspec.protocol.backend import installed_backends, load_backend
from netspec.errors import SetupError
from netspec.spec.layers import LAYER_TYPES, Layer, LayerSpec


def per_type_tables() -> dict[str, set[type]]:
    tables = {
        "netspec/deploy/export.py _BUILDERS": set(export._BUILDERS),
        "netspec/check/random_networks.py RANDOM_LAYERS": set(testing.RANDOM_LAYERS),
        "LayerSpec.reference (the class in netspec/spec/layers/)": {t for t in LAYER_TYPES if t.reference is not LayerSpec.reference},
    }
    for name in installed_backends():
        package = type(load_backend(name)).__module__.rsplit(".", 1)[0]
        tables[f"{package.replace('.', '/')}/builders.py BUILDERS"] = set(importlib.import_module(f"{package}.builders").BUILDERS)
    return tables


def test_layer_types_are_the_union_of_the_spec_language() -> None:
    """LAYER_TYPES is derived from the Layer union, so what a spec file may name is exactly that list."""
    from pydantic import TypeAdapter

    names = set(TypeAdapter(Layer).json_schema()["discriminator"]["mapping"])
    assert names == {t.model_fields["type"].default for t in LAYER_TYPES}
    assert all(issubclass(t, LayerSpec) for t in LAYER_TYPES)


@pytest.mark.parametrize("table", list(per_type_tables()))
def test_every_per_type_table_covers_every_layer_type(table: str) -> None:
    have = per_type_tables()[table]
    missing = [t.__name__ for t in LAYER_TYPES if t not in have]
    extra = [t.__name__ for t in have if t not in LAYER_TYPES]
    assert not missing and not extra, f"{table}: missing {missing}, not in the Layer union {extra}"


@pytest.mark.parametrize("backend", installed_backends())
def test_a_missing_builder_is_one_line_naming_the_type_and_the_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    impl = load_backend(backend)
    builders = importlib.import_module(f"{type(impl).__module__.rsplit('.', 1)[0]}.builders").BUILDERS
    monkeypatch.delitem(builders, ns.ReLU)
    network = ns.Network(input_shape=(3,), layers=[ns.Linear(out_features=2), ns.ReLU()])
    with pytest.raises(SetupError) as err:
        impl.compile(network, device="cpu")
    assert str(err.value).startswith(f"layer 1 (ReLU): the {backend} backend has no builder for ReLU")
    assert "\n" not in str(err.value)
