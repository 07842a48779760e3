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

from netspec.spec.experiment import Experiment
from netspec.io import SCHEMA_KEY, write_bytes_atomic
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
    return _schema(Experiment, "netspec experiment")


def sweep_schema() -> dict[str, Any]:
    return _schema(SweepSpec, "netspec sweep")


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {"experiment": experiment_schema, "sweep": sweep_schema}


def write_schemas(folder: Path) -> list[Path]:
    """<folder>/experiment.schema.json and <folder>/sweep.schema.json."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SCHEMAS.items():
        path = folder / f"{name}.schema.json"
        write_bytes_atomic(path, (json.dumps(make(), indent=2) + "\n").encode())
        paths.append(path)
    return paths
