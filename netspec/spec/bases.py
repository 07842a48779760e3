"""A base for experiments: `"base": "resnet9.json"` in an experiment file names the experiment it starts
from (relative to the file), and the file's own fields override the base's: objects merge key by key,
anything else (a list, a number, an object whose "type" differs) replaces. A chain of bases is bounded
and cycle-checked; every error is one line naming the file and the field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from netspec.errors import SpecError
from netspec.io import SCHEMA_KEY, UnreadableJSON, parse_json_file

MAX_BASE_CHAIN = 8
"""Most bases above one file (a recipe on a network on a family spec needs 2)."""
BASE_KEY = "base"


def merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: objects merge key by key (a changed "type" replaces the whole object:
    an SGD optimizer keeps none of Adam's fields); lists and values replace."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    if "type" in override and override.get("type") != base.get("type"):
        return override
    return {**base, **{k: merge(base[k], v) if k in base else v for k, v in override.items()}}


def read_with_bases(path: str | Path, data: Any) -> Any:
    """An experiment file's JSON (`data`, read from `path`) with its chain of bases merged under it; the
    `base` key itself is gone. A file without one is returned unchanged."""
    path = Path(path)
    chain = [path.resolve()]
    while isinstance(data, dict) and BASE_KEY in data:
        relative = data[BASE_KEY]
        if not isinstance(relative, str) or not relative:
            raise SpecError(f"{path}: base must be a path to an experiment file (relative to this file), "
                            f"got {relative!r}")
        base_path = path.parent / relative
        if base_path.resolve() in chain:
            names = " -> ".join(p.name for p in [*chain, base_path.resolve()])
            raise SpecError(f"{path}: base {relative!r} makes a cycle of bases ({names}); remove one 'base'")
        if len(chain) > MAX_BASE_CHAIN:
            raise SpecError(f"{path}: base {relative!r}: more than {MAX_BASE_CHAIN} bases in a chain; flatten some")
        try:
            base = parse_json_file(base_path)
        except UnreadableJSON as err:
            raise SpecError(f"{path}: base {relative!r} (resolved to {base_path.resolve()}, relative to this file): "
                            f"{err}; {err.advice}") from None
        if not isinstance(base, dict):
            raise SpecError(f"{path}: base {relative!r} is not an experiment spec (not a JSON object)")
        own = {k: v for k, v in data.items() if k not in (BASE_KEY, SCHEMA_KEY)}
        data = merge({k: v for k, v in base.items() if k != SCHEMA_KEY}, own)
        if BASE_KEY in base:  # the base's own base resolves relative to the base's file
            data[BASE_KEY] = base[BASE_KEY]
        path = base_path
        chain.append(base_path.resolve())
    return data
