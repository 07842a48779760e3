"""A base for experiments: `"base": "resnet9.json"` in an experiment file names the experiment it starts
from (relative to the file), and the file's own fields override the base's: objects merge key by key,
anything else (a list, a number, an object whose "type" differs) replaces. A chain of bases is bounded
and cycle-checked; every error is one line naming the file and the field.

Also which kind of spec file a file is (file_kind): a file with only a base, a name and a description
says nothing either way, and is then the kind of its base (an experiment: nothing else can be a base)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from netspec.errors import SpecError
from netspec.io import SCHEMA_KEY, UnreadableJSON, parse_json_file

MAX_BASE_CHAIN = 8
"""Most bases above one file (a recipe on a network on a family spec needs 2)."""
BASE_KEY = "base"

Kind = Literal["experiment", "sweep", "search"]
EXPERIMENT_SECTIONS = frozenset({"network", "data", "train"})
"""Keys only an experiment file has (Experiment's fields that SweepSpec and SearchSpec lack)."""
SEARCH_KEYS = frozenset({"space", "objective", "trials", "pruner", "sampler_seed"})
"""Keys only a search file has (SearchSpec's fields that SweepSpec and Experiment lack; a test keeps them so)."""
SWEEP_KEYS = frozenset({"axes", "variants", "mode", "seeds"})
"""Keys only a sweep file has beside an experiment ("seeds" a search has too; SEARCH_KEYS decide first)."""


def own_kind(data: Any) -> Optional[Kind]:
    """The kind a spec file's own keys make it, or None where they say nothing either way (only a base,
    a name, a description: {"base": "cnn.json", "name": "cnn_again"})."""
    if not isinstance(data, dict):
        return None
    keys = set(data)
    if keys & EXPERIMENT_SECTIONS:
        return "experiment"
    if keys & SEARCH_KEYS:
        return "search"
    if keys & SWEEP_KEYS:
        return "sweep"
    return None


def file_kind(path: str | Path, data: Any) -> Kind:
    """The kind of the spec file at `path` (its JSON `data`): by its own keys; a file that says nothing
    either way is the kind of its base, an experiment (its chain of bases is read, each base checked to
    be an experiment, so a bad chain is its one line here). A file with neither keys nor base is an
    experiment too: loading it says what it lacks."""
    kind = own_kind(data)
    if kind is not None:
        return kind
    for _ in _bases(Path(path), data):
        pass  # every base an experiment (or one line)
    return "experiment"


def merge(base: Any, override: Any) -> Any:
    """`override` laid over `base`: objects merge key by key (a changed "type" replaces the whole object:
    an SGD optimizer keeps none of Adam's fields); lists and values replace."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    if "type" in override and override.get("type") != base.get("type"):
        return override
    return {**base, **{k: merge(base[k], v) if k in base else v for k, v in override.items()}}


def read_base(owner: Path, field: str, relative: str, kind: Kind = "experiment") -> Any:
    """The JSON of the experiment that the `kind` file `owner` names in `field` (base, variants.<label>),
    relative to `owner`. A file that cannot be read is one line naming `owner` and the field first: the
    path the user should fix is written there, and a bare 'bad/x.json: cannot read the file' would not say where."""
    base_path = owner.parent / relative
    try:
        return parse_json_file(base_path)
    except UnreadableJSON as err:
        raise SpecError(f"{owner}: {field} {relative!r} (resolved to {base_path.resolve()}, relative to the {kind} "
                        f"file): {err}; {err.advice}") from None


def _bases(path: Path, data: Any) -> Iterator[dict[str, Any]]:
    """The JSON of each base above the experiment file at `path` (its JSON `data`), nearest first. One line
    for a base that is no path, cannot be read, is no experiment, closes a cycle or passes MAX_BASE_CHAIN
    (checked before the base is read: a chain too long is said before anything in it)."""
    top, chain = path, [path.resolve()]
    while isinstance(data, dict) and BASE_KEY in data:
        relative = data[BASE_KEY]
        if not isinstance(relative, str) or not relative:
            raise SpecError(f"{path}: base must be a path to an experiment file (relative to this file), "
                            f"got {relative!r}")
        base_path = (path.parent / relative).resolve()
        names = " -> ".join(p.name for p in [*chain, base_path])
        if base_path in chain:
            raise SpecError(f"{path}: base {relative!r} makes a cycle of bases ({names}); remove one 'base'")
        if len(chain) > MAX_BASE_CHAIN:
            raise SpecError(f"{top}: more than {MAX_BASE_CHAIN} bases in a chain ({names}); flatten some "
                            "(copy a base's fields into the file that names it)")
        data = read_base(path, BASE_KEY, relative)
        if not isinstance(data, dict):
            raise SpecError(f"{path}: base {relative!r} is not an experiment spec (not a JSON object)")
        kind = own_kind(data)
        if kind not in (None, "experiment"):
            raise SpecError(f"{path}: base {relative!r} is a {kind} file, not an experiment; name an experiment "
                            f"file (a {kind}'s own \"base\" is one)")
        yield data
        path = path.parent / relative
        chain.append(base_path)


def read_with_bases(path: str | Path, data: Any) -> Any:
    """An experiment file's JSON (`data`, read from `path`) with its chain of bases merged under it; the
    `base` key itself is gone. A file without one is returned unchanged."""
    for base in _bases(Path(path), data):
        own = {k: v for k, v in data.items() if k not in (BASE_KEY, SCHEMA_KEY)}
        data = merge({k: v for k, v in base.items() if k != SCHEMA_KEY}, own)
        if BASE_KEY in base:  # the base's own base resolves relative to the base's file
            data[BASE_KEY] = base[BASE_KEY]
    return data
