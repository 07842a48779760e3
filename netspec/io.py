"""Reading and writing spec files, with one-line errors that name the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import SpecError, format_validation_error

M = TypeVar("M", bound=BaseModel)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing file or malformed JSON becomes one SpecError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"{path}: cannot read the file ({err.strerror}); check the path") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}; fix the syntax") from None


def validate(model: type[M], data: Any, source: str | Path = "<spec>") -> M:
    """Validate `data` as `model`; errors become one SpecError line naming `source`."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err)}") from None


def write_json(model: BaseModel, path: str | Path) -> None:
    """Write a spec as indented JSON. Defaults are kept: dropping them would drop the `type` tags."""
    Path(path).write_text(model.model_dump_json(indent=2) + "\n")
