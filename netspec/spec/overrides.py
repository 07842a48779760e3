"""`--set key=value` overrides: a value parsed from the command line, set at a dotted path of a spec's
JSON ('network.layers.3.p', or a layer by its id: 'network.layers.layer1.p'), before validation."""
from __future__ import annotations

import json
import re
from typing import Any

from netspec.errors import SpecError, did_you_mean
from netspec.io import MalformedJSON, UnreadableJSON, parse_json_text


MAX_SET_DEPTH = 32
"""Deepest nesting of lists and objects in one `--set` value (a value is a number, a string or a short list)."""


def _bracket_depth(text: str) -> int:
    """The deepest nesting of [ and { in `text`, outside double-quoted strings; a scan, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def parse_value(text: str, key: str = "") -> Any:
    """A value from the command line: JSON when it parses (numbers, true, null, lists), else a string.
    Nested more than MAX_SET_DEPTH deep: one SpecError line, checked before the parser recurses."""
    if _bracket_depth(text) > MAX_SET_DEPTH:
        raise SpecError(f"--set {key or 'value'}={text[:20]}...: nested more than {MAX_SET_DEPTH} levels deep; "
                        "give a number, a string or a short list")
    try:
        return parse_json_text(text, MAX_SET_DEPTH)
    except MalformedJSON:
        return text
    except UnreadableJSON as err:
        raise SpecError(f"--set {key or 'value'}={text[:40]}: {err}; {err.advice}") from None


_INDEX = re.compile(r"-?[0-9]+")
MAX_IDS_LISTED = 6
"""How many layer ids the message for an unknown one lists before '...'."""


def _item_ids(node: list[Any]) -> dict[str, int]:
    """The ids the items of a JSON list carry (layers: `"id": "layer1"`), each to its first index."""
    ids: dict[str, int] = {}
    for index, item in enumerate(node):
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            ids.setdefault(item["id"], index)
    return ids


def list_position(node: list[Any], key: str) -> int | None:
    """The index a dotted path's `key` names in a JSON list: an index (negative counts from the end)
    or the `id` of one of its items (a layer's id: 'network.layers.layer1.p' is the layer whose id is
    'layer1'); None where it names neither. An index wins over an id spelled like one."""
    if _INDEX.fullmatch(key):
        return int(key) if -len(node) <= int(key) < len(node) else None
    return _item_ids(node).get(key)


def _no_such_item(node: list[Any], key: str, parent: str, where: str, dotted: str, source: str) -> str:
    """The one line for a path's key that names no item of a list: layers are named by index or id."""
    if parent != "layers" or not node or _INDEX.fullmatch(key):
        return f"{source}: --set {dotted}: '{where}' needs an index below {len(node)}"
    ids = list(_item_ids(node))
    if not ids:
        return (f"{source}: --set {dotted}: no layer has id {key!r}; use a layer's index (0-{len(node) - 1}) "
                f"(none of these layers has an id)")
    listed = ", ".join(ids[:MAX_IDS_LISTED]) + (", ..." if len(ids) > MAX_IDS_LISTED else "")
    return (f"{source}: --set {dotted}: no layer has id {key!r}{did_you_mean(key, ids)}; use a layer's index "
            f"(0-{len(node) - 1}) or one of its ids: {listed}")


def set_path(data: Any, dotted: str, value: Any, source: str = "<spec>") -> Any:
    """Return a copy of `data` (JSON-like) with `dotted` ('network.layers.3.p') set to `value`. A list's
    item is named by its index or, for items with an `id` (layers), by that id ('network.layers.layer1.p'):
    resolved here, before validation, so the experiment is the one the equivalent index gives."""
    keys = dotted.split(".")
    root = json.loads(json.dumps(data))
    node = root
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            position = list_position(node, key)
            if position is None:
                raise SpecError(_no_such_item(node, key, keys[depth - 1] if depth else "", where, dotted, source))
            key = position
        elif isinstance(node, dict):
            if key not in node and not last:
                node[key] = {}
        else:
            raise SpecError(f"{source}: --set {dotted}: '{'.'.join(keys[:depth])}' is a value, not a section")
        if last:
            node[key] = value
        else:
            node = node[key]
    return root


def apply_overrides(data: Any, overrides: list[str], source: str = "<spec>") -> Any:
    """Apply 'key=value' strings in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{source}: --set {item!r} must look like key=value, e.g. train.lr=0.01")
        data = set_path(data, key.strip(), parse_value(text, key.strip()), source)
    return data
