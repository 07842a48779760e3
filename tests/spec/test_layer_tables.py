"""A layer type is defined once (its family module in netspec/spec/layers/) and then needs exactly one entry in each per-type
table: each backend's builders, the ONNX exporter's rules, the random-layer generators, the tests' torch.nn
references and `ns.__all__`; its class states its numpy meaning (LayerSpec.reference), and the docs' layer
table is written from the classes (tools/layer_table.py). This test fails while any table misses a type (or
holds one that is not in the union), naming the table and the type."""
from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

import netspec as ns
from netspec.deploy import export
from netspec.check import random_networks as testing
from netspec.protocol.backend import installed_backends, load_backend
from netspec.errors import SetupError
from netspec.spec.layers import LAYER_TYPES, Layer, LayerSpec
from tools import layer_table


def per_type_tables() -> dict[str, set[type]]:
    tables = {
        "netspec/deploy/export.py _BUILDERS": set(export._BUILDERS),
        # a generator that random networks never call tests nothing: single-input types are drawn as often as
        # their class's `drawn` says (activations from their family's base), merges by the blocks (Add, Concat)
        "the class's `drawn` (what random networks put it on; netspec/spec/layers/)": {
            *testing._IMAGE_KINDS, *testing._FLAT_KINDS, *(t for t in LAYER_TYPES if t.merges)},
        "LayerSpec.reference (the class in netspec/spec/layers/)": {t for t in LAYER_TYPES if t.reference is not LayerSpec.reference},
        "netspec/__init__.py __all__ (and its import from netspec.spec.layers)": {
            value for value in map(lambda name: getattr(ns, name), ns.__all__)
            if isinstance(value, type) and issubclass(value, LayerSpec)},
    }
    if importlib.util.find_spec("torch"):  # the tests' torch.nn constructions need torch itself
        tables["tests/references.py TORCH_NN"] = set(importlib.import_module("tests.references").TORCH_NN)
    for name in installed_backends():
        package = type(load_backend(name)).__module__.rsplit(".", 1)[0]
        tables[f"{package.replace('netspec_backends', 'backends').replace('.', '/')}/builders.py BUILDERS"] = set(importlib.import_module(f"{package}.builders").BUILDERS)
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


@pytest.mark.parametrize("kind", LAYER_TYPES, ids=lambda t: t.__name__)
def test_random_networks_vary_every_field_of_every_layer_type(kind: type[LayerSpec]) -> None:
    """A type without a generator of its own (random_networks.GENERATORS) names every field in its class's
    random_values, each value a valid configuration; so no field is tested at its default only."""
    fields = set(kind.model_fields) - {"type", "id", "inputs"}
    if kind in testing.GENERATORS:
        assert not kind.random_values, f"{kind.__name__}: a generator of its own, and random_values that it ignores"
        return
    assert set(kind.random_values) == fields, (f"{kind.__name__}.random_values (netspec/spec/layers/): names "
                                               f"{sorted(kind.random_values)}, its fields are {sorted(fields)}")
    first = {name: values[0] for name, values in kind.random_values.items()}
    for name, values in kind.random_values.items():  # each value valid (a pydantic error otherwise), and more than one
        assert len(set(values)) >= 2 and all(kind(**{**first, name: v}) for v in values), f"{kind.__name__}.random_values[{name!r}]"
    drawn = {testing.RANDOM_LAYERS[kind](np.random.default_rng(seed), (3, 5, 5)) for seed in range(64)}
    assert all(len({getattr(layer, name) for layer in drawn}) > 1 for name in fields)


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


def test_the_docs_layer_table_is_the_one_written_from_the_classes() -> None:
    """docs/spec-format.md documents every layer type and every field (default, description): a new type
    or field, or a changed docstring, fails here until the page is rewritten."""
    page = layer_table.PAGE.read_text()
    assert layer_table.page_table(page) == layer_table.render(), (
        "docs/spec-format.md: its layer table is not the one the layer classes give; "
        "run `python tools/layer_table.py --write`")
    for kind in LAYER_TYPES:  # independent of render(): each type and each of its fields is on the page
        row = next(line for line in page.splitlines() if line.startswith(f"| `{kind.__name__}` |"))
        assert all(f"`{name}`" in row for name in kind.model_fields if name not in LayerSpec.model_fields and name != "type")
