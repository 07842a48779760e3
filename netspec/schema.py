"""The JSON Schema of spec files, for editors to validate and complete them."""
from __future__ import annotations

from typing import Any

from .experiment import Experiment


def experiment_schema() -> dict[str, Any]:
    schema = Experiment.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "netspec experiment"
    return schema
