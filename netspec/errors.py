"""The errors a user sees as one line (exit code 2), and the one-line message of a pydantic error.

Every user-facing error is a `NetspecError`: the command line prints `str(err)` and exits 2, never a
traceback. Its kinds say whose move it is: the spec (`SpecError`), the data on disk (`DataError`),
or the machine's set-up, such as a missing package or GPU (`SetupError`).
"""
from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError


class NetspecError(Exception):
    """A problem the user can fix. `str(err)` is one line meant for a user: what, where, what to do."""


class SpecError(NetspecError, ValueError):
    """A spec (network, experiment or sweep) or a command-line override is invalid."""


class DataError(NetspecError):
    """A dataset on disk is missing, damaged or not what its loader promises."""


class SetupError(NetspecError):
    """The machine lacks something the command needs: a package, a GPU, a registered backend."""


class DivergedError(NetspecError):
    """Training produced a non-finite loss: the run stopped at that epoch and is recorded as diverged.
    Not bad input but a result, so the command line exits 3 rather than 2."""

    exit_code = 3

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class ShapeError(ValueError):
    """Raised by a layer whose input shape it cannot take; the network adds which layer it is."""


# Location parts pydantic adds for the branches of a union (`int | tuple[int, int]`): not the user's words.
_UNION_BRANCH = re.compile(r"^(constrained-\w+|function-\w+\[.*\]|tuple\[.*\]|list\[.*\]|int|float|str|bool|none)$")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and _UNION_BRANCH.match(p)))


def _where(loc: tuple[Any, ...]) -> str:
    """A location in the user's words: 'network: layer 3 (Conv2d): kernel_size'.

    The discriminated union puts the `type` tag into the location (`layers.3.Conv2d.kernel_size`);
    it is folded into the layer's name so the message reads like the spec file.
    """
    parts: list[str] = []
    i = 0
    while i < len(loc):
        key = loc[i]
        if key == "layers" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            tag = loc[i + 2] if i + 2 < len(loc) and isinstance(loc[i + 2], str) and loc[i + 2][:1].isupper() else None
            parts.append(f"layer {loc[i + 1]}" + (f" ({tag})" if tag else ""))
            i += 3 if tag else 2
        else:
            parts.append(str(key))
            i += 1
    return ": ".join(parts)


# Strict numbers (netspec.layers.Real, Count): what a value of the wrong JSON type should have been.
_TYPE_WORDS = {
    "int_type": "an integer (no quotes, no decimal point, not true/false)",
    "float_type": "a number (no quotes, not true/false)",
    "bool_type": "true or false",
    "string_type": "a string in quotes",
}


def _as_json(value: Any) -> str:
    """A value as the user wrote it in JSON (true, NaN, "0.1"), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _priority(error: dict[str, Any]) -> int:
    # A misspelled field also shows up as a missing one; the misspelling is the cause, say it first.
    return 0 if error["type"] in ("extra_forbidden", "union_tag_invalid", "json_invalid") else 1


def format_validation_error(err: ValidationError) -> str:
    """The first error of a pydantic ValidationError as one readable line (plus a count of the rest)."""
    errors = sorted(err.errors(include_url=False), key=_priority)
    distinct = {_clean_loc(e["loc"]) for e in errors}  # a union reports one error per branch
    first = errors[0]
    loc = _clean_loc(first["loc"])
    kind, msg, ctx = first["type"], first["msg"], first.get("ctx", {})
    if kind == "extra_forbidden":
        msg = f"unknown field '{loc[-1]}' (misspelled?); remove it, or see `python runner.py schema` for the allowed fields"
        loc = loc[:-1]
    elif kind == "union_tag_invalid":
        msg = f"unknown layer type {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}"
    elif kind == "union_tag_not_found":
        msg = "a layer without a 'type'; add one, e.g. \"type\": \"Linear\""
    elif kind == "missing":
        msg = f"missing required field '{loc[-1]}'; add it"
        loc = loc[:-1]
    elif kind == "too_short" and loc and loc[-1] == "layers":
        msg = "the network has no layers; add at least one"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        msg = f"{msg.lower().replace('input should be', 'must be')}, got {_as_json(first.get('input'))}"
    elif kind in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[kind]}, got {_as_json(first.get('input'))}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = len(distinct) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more > 0 else ""
    where = _where(loc)
    return f"{where}: {msg}{tail}" if where else f"{msg}{tail}"
