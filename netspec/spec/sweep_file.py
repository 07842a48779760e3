"""The sweep file, the spec language's part for many runs: a base experiment (or variants), axes of
values, seeds; and its expansion into points, each an Experiment. Running the points is netspec.sweeps.sweep's.

Points keep their base experiment's name, so they land in runs/<base name>/<backend>/<run-id>/ with
a content-hashed id: a point equal to another sweep's point, or to the plain spec, is trained once
and found again. Seed s of a point adds s to both `train.seed` (weights, dropout masks) and
`train.shuffle_seed` (batch order), so seed 0 is the point itself, and seeds are paired: seed s is
the same offset in every arm and on every backend.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from netspec.errors import SpecError
from netspec.spec.bases import BASE_KEY, file_kind, own_kind, read_base, read_with_bases
from netspec.spec.experiment import Experiment, flat_json
from netspec.spec.fields import MAX_SEED, SafeName
from netspec.spec.overrides import list_position
from netspec.io import read_json, validate

SWEEPS_DIR = "sweeps"


class Axis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """What varies, in words ('dropout rate'); the comparison table's header."""
    paths: list[str] = Field(min_length=1)
    """Dotted paths into the experiment that all take the axis' value (e.g. both dropout layers)."""
    values: list[Any] = Field(min_length=1)
    """The values, one table column each."""


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    version: Literal[1] = 1
    name: SafeName
    """Name of the sweep (its manifest and report section): a safe file name, as an experiment's."""
    description: str = ""
    base: Optional[str] = None
    """Experiment spec the axes edit, relative to the sweep file (unless variants are given)."""
    variants: dict[str, str] = {}
    """Label -> experiment spec file (relative to the sweep file): ablations that are different specs."""
    axes: list[Axis] = []
    """Fields to vary."""
    mode: Literal["grid", "one_at_a_time"] = "grid"
    """'grid': every combination; 'one_at_a_time': each axis alone around the base values."""
    seeds: Union[PositiveInt, Annotated[list[NonNegativeInt], Field(min_length=1)], None] = None
    """Repeat every point with these seeds: N means seeds 0..N-1, or an explicit list (not empty: a sweep
    of no runs is a mistake); default [0]. Seed s adds s to train.seed (weights, dropout masks) and
    train.shuffle_seed (batch order)."""

    @model_validator(mode="after")
    def _distinct_axes(self) -> "SweepSpec":
        # An axis name is a column of the report and a key of each point's settings: two axes of one name
        # would give different runs one label, and the report would merge them.
        names = [axis.name for axis in self.axes] + (["variant"] if self.variants else [])
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"axis name {twice[0]!r} is used twice" + (" ('variant' names the variants)" if
                             twice[0] == "variant" and self.variants else "") + "; give every axis its own name")
        return self


@dataclass(frozen=True)
class SweepPoint:
    label: str
    """'dropout rate=0.3' or 'no BN': the arm's name in tables and legends (the same for all its seeds)."""
    experiment: Experiment
    seed: int = 0
    """Seed offset (0: the arm as written)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Axis name (and 'variant') -> value: the point's x in the result-vs-setting figure."""
    is_base: bool = False
    """The arm whose settings equal the base spec (or, failing that, the first arm): differences are taken from it."""


MAX_SWEEP_POINTS = 10_000
"""Most points (variants x axis settings x seeds) one sweep may have: counted before any is built, so a
grid of millions of points is one line, not minutes of validation and a manifest of gigabytes."""


def check_point_count(spec: SweepSpec, variants: int, seeds: Union[int, Sequence[int], None], path: Path) -> None:
    """Refuse a sweep of more than MAX_SWEEP_POINTS points, from its axis lengths alone."""
    lengths = [len(axis.values) for axis in spec.axes]
    settings = math.prod(lengths) if spec.mode == "grid" else max(sum(lengths), 1)
    repeats = seeds if isinstance(seeds, int) else len(set(seeds)) if seeds is not None else 1
    count = variants * settings * max(repeats, 1)
    if count > MAX_SWEEP_POINTS:
        raise SpecError(f"{path}: the sweep has {count:,} points ({variants} variant(s) x {settings:,} settings x "
                        f"{repeats:,} seed(s)), more than {MAX_SWEEP_POINTS:,}; use fewer values, mode \"one_at_a_time\" "
                        "or several sweeps")


def seed_list(seeds: Union[int, Sequence[int], None]) -> list[int]:
    """--seeds 3 / "seeds": 3 -> [0, 1, 2]; an explicit list as given; None -> [0] (one run, as before seeds)."""
    if seeds is None:
        return [0]
    count = seeds if isinstance(seeds, int) else len(seeds)
    if count < 1:
        raise SpecError(f"seeds: {seeds} must be at least 1 (the number of seeds, 0..N-1) or a list of seeds")
    if count > MAX_SWEEP_POINTS:  # the sweeps' limit: one run per seed is a point too
        raise SpecError(f"seeds: {count:,} seeds, more than the {MAX_SWEEP_POINTS:,} runs one launch may have; use fewer")
    return list(range(seeds)) if isinstance(seeds, int) else list(dict.fromkeys(seeds))


def with_seed(experiment: Experiment, seed: int) -> Experiment:
    """Seed `seed` of an experiment: `seed` added to train.seed (weights and dropout masks) and to
    train.shuffle_seed (batch order). Seed 0 is the experiment itself: same run id, same folder."""
    if seed == 0:
        return experiment
    seeds = {"seed": experiment.train.seed + seed, "shuffle_seed": experiment.train.shuffle_seed + seed}
    past = [f"train.{k} {v:,}" for k, v in seeds.items() if v > MAX_SEED]
    if past:  # model_copy does not validate: numpy would refuse the seed with a traceback
        raise SpecError(f"seed {seed} makes {past[0]}, past the largest seed {MAX_SEED:,}; lower train.seed and "
                        "train.shuffle_seed, or use fewer seeds")
    return experiment.model_copy(update={"train": experiment.train.model_copy(update=seeds)})


def replicate_key(spec: dict[str, Any]) -> tuple[str, int]:
    """(key, seed) of a resolved experiment (spec.json as a dict): runs that are seeds of one another
    share the key. with_seed moves train.seed and train.shuffle_seed together, so their difference,
    and everything else, is what the seeds of one experiment have in common; the seed is train.seed."""
    data = {k: v for k, v in spec.items() if k not in ("name", "description", "$schema")}
    train = dict(data.get("train", {}))
    seed = int(train.pop("seed", 0))
    train["shuffle_offset"] = int(train.pop("shuffle_seed", 42)) - seed
    data["train"] = train
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10], seed


def load_sweep(path: str | Path, overrides: list[str] | None = None,
               seeds: Union[int, Sequence[int], None] = None) -> tuple[SweepSpec, list[SweepPoint]]:
    """Read a sweep file and expand it into its points, arm by arm and seed by seed (overrides apply to
    every point first; `seeds` replaces the file's `seeds`)."""
    path = Path(path)
    raw = read_json(path)
    spec = validate(SweepSpec, raw, path)
    if not spec.variants and not spec.base:
        raise SpecError(f"{path}: a sweep needs a 'base' experiment or 'variants'; add \"base\": \"../mlp.json\"")
    bases = spec.variants or {"": spec.base}
    check_point_count(spec, len(bases), seeds if seeds is not None else spec.seeds, path)
    arms: list[SweepPoint] = []
    for variant, relative in bases.items():
        base_path = path.parent / relative
        field = f"variants.{variant}" if variant else "base"
        base = read_with_bases(base_path, _read_base(path, field, relative))
        for settings in _settings(spec):
            edits = [f"{p}={json.dumps(v)}" for axis, v in settings for p in axis.paths]
            words = [f"{axis.name}={v}" for axis, v in settings]
            label = ", ".join(([variant] if variant else []) + words) or "base"
            flat = flat_json(base, None, [*(overrides or []), *edits], f"{path} ({label})")  # expanded after --set
            experiment = validate(Experiment, flat, f"{path} ({label})")
            values = ({"variant": variant} if variant else {}) | {axis.name: v for axis, v in settings}
            arms.append(SweepPoint(label, experiment, settings=values, is_base=_is_base(base, settings)))
    arms = _mark_base(arms, first_variant=next(iter(bases)))
    chosen = seed_list(seeds if seeds is not None else spec.seeds)
    return spec, [SweepPoint(a.label, with_seed(a.experiment, s), s, a.settings, a.is_base) for a in arms for s in chosen]


def _read_base(sweep_path: Path, field: str, relative: str) -> Any:
    """The experiment a sweep file's `field` (base, variants.<label>) names, relative to the sweep file."""
    return read_base(sweep_path, field, relative, "sweep")


def _is_base(base: Any, settings: list[tuple[Axis, Any]]) -> bool:
    """Whether every axis takes the value the base spec has at its paths."""
    return all(_value_at(base, p) == v for axis, v in settings for p in axis.paths)


def _mark_base(arms: list[SweepPoint], first_variant: str) -> list[SweepPoint]:
    """One base arm: the first whose settings equal the base spec's (in the first variant), else the first arm."""
    candidates = [a for a in arms if a.is_base and a.settings.get("variant", "") == first_variant]
    base = candidates[0] if candidates else arms[0]
    return [SweepPoint(a.label, a.experiment, a.seed, a.settings, a is base) for a in arms]


def _value_at(data: Any, dotted: str) -> Any:
    """The value at a dotted path of a JSON-like spec, or None where the path does not exist."""
    node = data
    for key in dotted.split("."):
        if isinstance(node, list) and list_position(node, key) is not None:
            node = node[list_position(node, key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node


def _settings(spec: SweepSpec) -> list[list[tuple[Axis, Any]]]:
    if spec.mode == "grid":
        return [list(zip(spec.axes, values)) for values in itertools.product(*(a.values for a in spec.axes))]
    return [[(axis, v)] for axis in spec.axes for v in axis.values] or [[]]


def is_sweep_file(data: Any, path: str | Path | None = None) -> bool:
    """Whether a spec file is a sweep: by its own keys (axes, variants, mode, seeds; netspec.spec.bases.own_kind),
    and a file with only a base (and name, description) by its base's kind, read from `path`: an experiment,
    so {"base": "cnn.json", "name": "cnn_again"} trains as one. Without `path` such a file counts as a
    sweep, the cautious answer for a folder check that cannot read its base."""
    if path is not None:
        return file_kind(path, data) == "sweep"
    kind = own_kind(data)
    return kind == "sweep" or (kind is None and isinstance(data, dict) and BASE_KEY in data)


def manifest_path(out_root: str | Path, name: str) -> Path:
    return Path(out_root) / SWEEPS_DIR / f"{name}.json"
