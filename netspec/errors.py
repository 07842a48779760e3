"""The errors a user sees as one line (exit code 2), and the one-line message of a pydantic error.

Every user-facing error is a `NetspecError`: the command line prints `str(err)` and exits 2, never a
traceback. Its kinds say whose move it is: the spec (`SpecError`), the data on disk (`DataError`),
or the machine's set-up, such as a missing package or GPU (`SetupError`).
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import re
from typing import Any, Iterable, Optional

from pydantic import BaseModel, ValidationError


class NetspecError(Exception):
    """A problem the user can fix. `str(err)` is one line meant for a user: what, where, what to do."""


class SpecError(NetspecError, ValueError):
    """A spec (network, experiment or sweep) or a command-line override is invalid. `details`: pydantic's
    own error list when the line came from a validation error (for a program to inspect), else []."""

    def __init__(self, message: str, details: Optional[list[dict[str, Any]]] = None) -> None:
        super().__init__(message)
        self.details = details or []


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


def _where(loc: tuple[Any, ...], tags: frozenset[int] = frozenset()) -> str:
    """A location in the user's words: 'network: layer 3 (Conv2d): kernel_size', 'train: optimizer (sgd)'.

    A discriminated union puts the `type` tag into the location (`layers.3.Conv2d.kernel_size`); the
    tag (at the positions `tags`; without them, a capitalized layer type) is folded into the name before
    it so the message reads like the spec file.
    """
    parts: list[str] = []
    i = 0
    while i < len(loc):
        key, step = loc[i], 1
        if key == "layers" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            key, step = f"layer {loc[i + 1]}", 2
        tag_at = i + step
        if tag_at < len(loc) and (tag_at in tags or (not tags and step == 2 and str(loc[tag_at])[:1].isupper())):
            parts.append(f"{key} ({loc[tag_at]})")
            step += 1
        else:
            parts.append(str(key))
        i += step
    return ": ".join(parts)


# Strict numbers (netspec.spec.layers.Real, Count): what a value of the wrong JSON type should have been.
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


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a misspelled `word`, else ''."""
    if not isinstance(word, str):
        return ""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def _schema_node(schema: dict[str, Any], node: Any, key: Any) -> Any:
    """One step down a JSON Schema along a pydantic error location: a property, an array item, or the
    branch of a discriminated union named by its tag (None where the location leaves the schema)."""
    defs = schema.get("$defs", {})
    for branch in _branches(defs, node):
        if isinstance(key, int):
            items = branch.get("prefixItems")
            found = items[key] if items and key < len(items) else branch.get("items")
        elif key in branch.get("properties", {}):
            found = branch["properties"][key]
        else:
            ref = branch.get("discriminator", {}).get("mapping", {}).get(key)
            found = {"$ref": ref} if ref else None
        if found is not None:
            return found
    return None


def _branches(defs: dict[str, Any], node: Any) -> list[dict[str, Any]]:
    """A schema node with its `$ref` followed and its anyOf/oneOf alternatives listed (the node first)."""
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    return [node] + [b for alt in node.get("anyOf", []) + node.get("oneOf", []) for b in _branches(defs, alt)]


def _walk(model: Optional[type[BaseModel]], loc: tuple[Any, ...]) -> tuple[list[str], frozenset[int], list[str]]:
    """Along `loc` in `model`'s JSON Schema: the fields allowed at its end, the positions in it that are
    discriminated-union tags, and the tags the node at its end may take (a union's `type` choices).
    ([], {}, []) when unknown."""
    if model is None:
        return [], frozenset(), []
    try:
        schema = model.model_json_schema()
    except Exception:  # a model without a JSON Schema: no suggestions, the message stands without them
        return [], frozenset(), []
    defs = schema.get("$defs", {})
    node: Any = schema
    tags = set()
    for i, key in enumerate(loc):
        if isinstance(key, str) and key in _tags(defs, node):
            tags.add(i)
        node = _schema_node(schema, node, key)
    return [name for b in _branches(defs, node) for name in b.get("properties", {})], frozenset(tags), _tags(defs, node)


def _tags(defs: dict[str, Any], node: Any) -> list[str]:
    """The tags of a discriminated union at a schema node, in the union's order ([] for any other node)."""
    return [tag for b in _branches(defs, node) for tag in b.get("discriminator", {}).get("mapping", {})]


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _priority(error: dict[str, Any]) -> int:
    # A misspelled field also shows up as a missing one; the misspelling is the cause, say it first.
    return 0 if error["type"] in ("extra_forbidden", "union_tag_invalid", "json_invalid") else 1


def _message(error: dict[str, Any], model: Optional[type[BaseModel]]) -> tuple[tuple[Any, ...], str]:
    """One pydantic error as (location, message in the user's words)."""
    loc = _clean_loc(error["loc"])
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _walk(model, loc[:-1])[0]
        msg = f"unknown field '{loc[-1]}'" + (did_you_mean(loc[-1], allowed) or "; remove it" + (
            f" (allowed here: {', '.join(allowed)})" if allowed else ""))
        loc = loc[:-1]
    elif kind == "union_tag_invalid":
        tags = _quoted(str(ctx.get("expected_tags", "")))
        noun = "layer type" if "layers" in loc else f"{loc[-1] if loc else 'spec'} type"
        msg = f"unknown {noun} {ctx.get('tag')!r}{did_you_mean(ctx.get('tag'), tags)}; use one of {', '.join(tags)}"
    elif kind == "union_tag_not_found" and "layers" in loc:
        msg = "a layer without a 'type'; add one, e.g. \"type\": \"Linear\""
    elif kind == "union_tag_not_found":  # a recipe section (train.optimizer) whose fields `--set` wrote alone
        section, choices = ".".join(map(str, loc)), _walk(model, loc)[2]
        given = sorted(error["input"]) if isinstance(error.get("input"), dict) else []
        # The choices whose fields include every one given: the likely meaning (warmup_epochs: cosine).
        fits = [tag for tag in choices if set(given) <= set(_walk(model, (*loc, tag))[0])]
        example = (fits or choices or ["..."])[0]
        takes = f" ({', '.join(fits)} take{'s' * (len(fits) == 1)} {', '.join(given)})" if fits and given else ""
        msg = (f"{section} has no 'type' to say which {loc[-1] if loc else 'kind'} its fields belong to; choose one of "
               f"{', '.join(choices)}{takes}: add --set {section}.type={example}, or write \"type\": \"{example}\" "
               "in the section")
        loc = ()
    elif kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        choices = _quoted(expected)
        given = error.get("input")
        given = repr(given) if isinstance(given, str) else _as_json(given)
        what = f"{given} is not a choice"
        if len(loc) > 1 and loc[-1] == "type":  # optimizer: type: 'sgd' reads as an unknown optimizer
            what, loc = f"unknown {loc[-2]} {given}", loc[:-1]
        # numbers (channels: Literal[1, 3]) come unquoted in pydantic's "1 or 3": show them as they are
        shown = ", ".join(map(repr, choices)) if choices else expected
        msg = f"{what}{did_you_mean(error.get('input'), choices)}; netspec has {shown}"
    elif kind == "missing":
        msg = f"missing required field '{loc[-1]}'; add it"
        loc = loc[:-1]
    elif kind == "too_short" and loc and loc[-1] == "layers":
        msg = "the network has no layers; add at least one"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
        msg = f"{msg.lower().replace('input should be', 'must be')}, got {_as_json(error.get('input'))}"
    elif kind in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[kind]}, got {_as_json(error.get('input'))}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return loc, msg


def format_validation_error(err: ValidationError, model: Optional[type[BaseModel]] = None) -> str:
    """Every error of a pydantic ValidationError on one line, each in the user's words; `model` (the
    class validated) lets a misspelled field name the field that was meant."""
    errors = sorted(err.errors(include_url=False), key=_priority)
    seen: dict[tuple[Any, ...], str] = {}  # a union reports one error per branch: keep the first per place
    for error in errors:
        loc, msg = _message(error, model)
        full = _clean_loc(error["loc"])
        where = _where(loc, _walk(model, full)[1])
        if full not in seen and not _explained(error, seen):
            seen[full] = f"{where}: {msg}" if where else msg
    lines = list(seen.values())
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems: " + " ".join(f"[{i}] {line}" for i, line in enumerate(lines, 1))


def _explained(error: dict[str, Any], seen: dict[tuple[Any, ...], str]) -> bool:
    """A missing field whose misspelling is already reported beside it ('out_featurs' for 'out_features')."""
    if error["type"] != "missing":
        return False
    loc = _clean_loc(error["loc"])
    return any(f"(did you mean '{loc[-1]}'?)" in line for other, line in seen.items() if other[:-1] == loc[:-1])


def missing_package(what: str, package: str, extra: str) -> SetupError:
    """The one line for an optional package that is not installed: what needs it, and the pip extra
    that brings it (`--tensorboard needs tensorboardX, which is not installed; run: pip install
    'netspec[tensorboard]'`)."""
    return SetupError(f"{what} needs {package}, which is not installed; run: pip install 'netspec[{extra}]'")


def require(module: str, extra: str, what: str, package: Optional[str] = None) -> None:
    """missing_package's SetupError unless `module` is installed. A command calls it before it prints or
    creates anything, so a missing optional package never leaves a half-started run behind. find_spec
    looks the module up without importing it (ray takes seconds); it is also None for a module set to
    None in sys.modules (how Python, and the tests, mark a module as unimportable). `package`: the words
    for it in the message (default: the module's name)."""
    if importlib.util.find_spec(module) is None:
        raise missing_package(what, package or module, extra)
