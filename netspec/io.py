"""Reading and writing spec files, with one-line errors that name the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import SpecError, format_validation_error

M = TypeVar("M", bound=BaseModel)


MAX_JSON_BYTES = 10 * 2**20
"""Largest spec file read; the report's specs are about 1 KB."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; a spec nests about 5 deep. Deeper input would
reach Python's recursion limit in the parser or the validation, a traceback instead of a line."""


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, oversized, non-UTF-8, malformed or too deeply nested file becomes
    one SpecError line."""
    path = Path(path)
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}; fix the syntax") from None
    except RecursionError:  # nested deeper than the parser goes
        raise _too_deep(path) from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise SpecError(f"{path}: unreadable JSON value ({err}); fix the value") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise _too_deep(path)
    return data


def _too_deep(path: Path) -> SpecError:
    return SpecError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep; a spec needs about 5: fix the file")


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, read only when it is at most MAX_JSON_BYTES (a spec is small; a huge
    file is a mistake, or an attempt to exhaust memory)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{path}: cannot read the file ({err.strerror}); check the path") from None
    if len(raw) > MAX_JSON_BYTES:
        raise SpecError(f"{path}: larger than {MAX_JSON_BYTES:,} bytes, far more than a spec; check the path")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a scalar is 0, [] is 1)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def validate(model: type[M], data: Any, source: str | Path = "<spec>") -> M:
    """Validate `data` as `model` (an editor's `$schema` key dropped); errors become one SpecError line
    naming `source`."""
    from .schema import without_schema_key

    try:
        return model.model_validate(without_schema_key(data))
    except ValidationError as err:
        raise SpecError(f"{source}: {format_validation_error(err, model)}") from None


def write_json(model: BaseModel, path: str | Path) -> None:
    """Write a spec as indented JSON. Defaults are kept: dropping them would drop the `type` tags."""
    Path(path).write_text(model.model_dump_json(indent=2) + "\n")
