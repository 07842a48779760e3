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
    knot = defs["PiecewiseLinearSchedule"]["properties"]["knots"]["items"]["prefixItems"]
    knot[0] = {"anyOf": [knot[0], {"type": "string", "pattern": f"^{FRACTION_PATTERN}$",
                                   "description": 'A fraction of train.epochs: "5/24".'}]}
    schema["properties"]["base"] = {"type": "string", "description": "An experiment file this one starts from "
                                    "(relative to this file); this file's fields override it."}
    schema.pop("required", None)
    schema["anyOf"] = [{"required": ["network"]}, {"required": ["base"]}]
    return schema


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
