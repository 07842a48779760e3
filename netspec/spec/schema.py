"""The JSON Schemas of spec files, for editors to validate and complete them.

A spec file may carry `"$schema": "<path or URL of the schema>"` as its first key: VS Code and
PyCharm then validate it as it is typed. The key is the editor's, not the experiment's: loading drops
it (`netspec.io.without_schema_key`), so it never changes a run's id. The repository keeps the schemas in
specs/schema/ (a test checks they equal what this module writes, so they cannot go stale).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from netspec.spec.blocks import MAX_BLOCKS, NAME_PATTERN, REF_PATTERN, RESERVED
from netspec.spec.expand import FRACTION_PATTERN
from netspec.spec.experiment import Experiment
from netspec.io import SCHEMA_KEY, write_bytes_atomic
from netspec.spec.search_file import SearchSpec
from netspec.spec.sweep_file import SweepSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = DRAFT
    schema["title"] = title
    # The editor's pointer to this schema is allowed at the top level of a file (extra fields are not).
    schema["properties"] = {SCHEMA_KEY: {"type": "string", "description": "The JSON Schema editors validate this file with."},
                            **schema["properties"]}
    return schema


def experiment_schema() -> dict[str, Any]:
    return _short_form(_schema(Experiment, "netspec experiment"))


def _short_form(schema: dict[str, Any]) -> dict[str, Any]:
    """The experiment schema with the short form's fields (netspec.spec.blocks, bases, expand): a `base`,
    network `params` and `blocks`, block uses among the layers, "$name" references in layer fields and
    "p/q" fractions as knot epochs. What the file says is checked again, strictly, when it is expanded."""
    defs = schema["$defs"]
    ref = {"type": "string", "pattern": f"^{REF_PATTERN}$", "description": 'A parameter: "$name", "2*$name", "$name/2".'}
    defs["ParamRef"] = ref
    for name, layer in defs.items():
        if "type" in layer.get("properties", {}) and name in schema_layer_types(defs):
            for field, prop in layer["properties"].items():
                if field not in ("type", "id", "inputs"):
                    words = {k: prop.pop(k) for k in ("description", "title", "default") if k in prop}
                    layer["properties"][field] = {**words, "anyOf": [prop, {"$ref": "#/$defs/ParamRef"}]}
    network = defs["Network"]
    # input_shape may be left to the data (Experiment fills it in where the data states it; else one line)
    network["required"] = [name for name in network.get("required", []) if name != "input_shape"]
    layer_items = network["properties"]["layers"]["items"]
    use = {"type": "object", "required": ["use"], "description": "A use of a block: its name and its arguments.",
           "properties": {"use": {"type": "string", "pattern": f"^{NAME_PATTERN}$"}, "id": {"type": "string"},
                          "inputs": {"type": "array", "minItems": 1, "maxItems": 1}},
           "additionalProperties": {"type": ["number", "string", "boolean", "array", "null"]}}
    defs["BlockUse"] = use
    item = {"anyOf": [layer_items, {"$ref": "#/$defs/BlockUse"}]}
    network["properties"]["layers"]["items"] = item
    network["properties"]["params"] = {
        "type": "object", "maxProperties": MAX_BLOCKS, "description": "Named numbers that layers and block uses name as \"$name\".",
        "propertyNames": {"pattern": f"^{NAME_PATTERN}$"}, "additionalProperties": {"type": "number"}}
    network["properties"]["blocks"] = {
        "type": "object", "maxProperties": MAX_BLOCKS, "description": "Named sub-graphs, expanded where a layer says \"use\".",
        "propertyNames": {"pattern": f"^{NAME_PATTERN}$"},
        "additionalProperties": {"type": "object", "additionalProperties": False, "required": ["layers"], "properties": {
            "description": {"type": "string"},
            "params": {"type": "array", "items": {"type": "string", "pattern": f"^{NAME_PATTERN}$",
                                                  "not": {"enum": list(RESERVED)}}, "uniqueItems": True},
            "layers": {"type": "array", "minItems": 1, "items": item}}}}
    fraction = {"type": "string", "pattern": f"^{FRACTION_PATTERN}$", "description": 'A fraction of train.epochs: "5/24".'}
    knot = defs["PiecewiseLinearSchedule"]["properties"]["knots"]["items"]["prefixItems"]
    knot[0] = {"anyOf": [knot[0], fraction]}
    for schedule, field in (("CosineSchedule", "warmup_epochs"), ("StepSchedule", "step_epochs")):
        prop = defs[schedule]["properties"][field]
        words = {k: prop.pop(k) for k in ("description", "title", "default") if k in prop}
        defs[schedule]["properties"][field] = {**words, "anyOf": [prop, fraction]}
    schema["properties"]["base"] = {"type": "string", "description": "An experiment file this one starts from "
                                    "(relative to this file); this file's fields override it."}
    return _override_form(schema)


OVERRIDE_SUFFIX = "Override"
"""The $defs of a section as a file with a base may write it: the same fields, none required."""


def _override_form(schema: dict[str, Any]) -> dict[str, Any]:
    """A file with a `base` writes only what it changes: its sections merge key by key into the base's
    (netspec.spec.bases), so every object reached through objects may be partial (network without
    input_shape or layers, a schedule without its type). Lists replace, so what they hold (layers, knots)
    stays whole. The sections' properties point to the partial "...Override" $defs; a file without a base
    is held to the full $defs too (`else`), so it still needs a network with input_shape and layers."""
    defs, properties = schema["$defs"], schema["properties"]
    full = {}
    for section in SECTIONS:
        full[section] = {"$ref": properties[section]["$ref"]}
        properties[section] = {**properties[section], **_partial(full[section], defs)}
    schema.pop("required", None)
    schema["if"] = {"required": ["base"]}
    schema["else"] = {"required": ["network"], "properties": full}
    return schema


SECTIONS = ("network", "data", "train")
"""An experiment's sections: objects a file with a base may write in part."""


def _partial(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`node` (a property's schema) with the objects it is (through $refs and unions) made partial: no
    `required`, a union an `anyOf` (a partial member matches more than one: {"weight_decay": 0.01} is a
    field of every optimizer). Not into `items`: a list replaces its base's whole."""
    node = dict(node)
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if "properties" in defs[name]:
            partial = name + OVERRIDE_SUFFIX
            if partial not in defs:
                defs[partial] = {}  # placed first: a def reached again through itself ends here
                defs[partial] = _partial(defs[name], defs)
            node["$ref"] = f"#/$defs/{partial}"
    node.pop("required", None)
    node.pop("discriminator", None)  # its mapping names the full $defs
    union = node.pop("oneOf", None) or node.pop("anyOf", None)
    if union is not None:
        node["anyOf"] = [_partial(member, defs) for member in union]
    if "properties" in node:
        node["properties"] = {k: _partial(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _partial(node["additionalProperties"], defs)
    return node


def schema_layer_types(defs: dict[str, Any]) -> set[str]:
    """The $defs that are layer types: those the network's layers may be."""
    items = defs["Network"]["properties"]["layers"]["items"]
    return {r["$ref"].rsplit("/", 1)[1] for r in items.get("oneOf", [])}


def sweep_schema() -> dict[str, Any]:
    return _schema(SweepSpec, "netspec sweep")


def search_schema() -> dict[str, Any]:
    return _schema(SearchSpec, "netspec search")


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {"experiment": experiment_schema, "sweep": sweep_schema,
                                                     "search": search_schema}


def write_schemas(folder: Path) -> list[Path]:
    """<folder>/<kind>.schema.json for each kind of spec file (experiment, sweep, search)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SCHEMAS.items():
        path = folder / f"{name}.schema.json"
        write_bytes_atomic(path, (json.dumps(make(), indent=2) + "\n").encode())
        paths.append(path)
    return paths
