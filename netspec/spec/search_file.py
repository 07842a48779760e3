"""The search file, the spec language's part for a hyperparameter search: a base experiment, a space of
spec fields (by dotted path, a layer named by its id or index), the objective, the number of trials,
the seeds per trial and a pruner. Running it (an Optuna study) is netspec.sweeps.search's.

    {"name": "mlp_lr_dropout", "base": "../mlp.json",
     "space": [{"name": "lr", "paths": ["train.lr"], "type": "loguniform", "low": 1e-4, "high": 1e-2},
               {"name": "dropout", "paths": ["network.layers.3.p"], "type": "uniform", "low": 0.0, "high": 0.7}],
     "objective": {"metric": "val_acc", "at": "best"},
     "trials": 12, "seeds": 2, "pruner": {"type": "median"}}

A trial's point is the base experiment with the trial's values at the paths: an ordinary experiment,
so its runs land in OUT/<base name>/<backend>/<run-id>/ like a sweep's points, and a point equal to one
trained before (by a sweep, a plain run or another trial) is found again, never trained twice. Seeds are
paired as a sweep's are (netspec.spec.sweep_file.with_seed): seed s is the same offset in every trial.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from netspec.errors import SpecError, did_you_mean
from netspec.io import read_json, validate
from netspec.spec.experiment import Experiment, flat_json
from netspec.spec.fields import SafeName
from netspec.spec.overrides import list_position
from netspec.spec.bases import merge, own_kind, read_base, read_with_bases
from netspec.spec.sweep_file import seed_list, with_seed

MAX_TRIALS = 1_000
"""Most trials one search may ask for: a study of a million trials is a typo, not a plan (TPE's cost
also grows with the trials it has seen)."""
SEARCHES_DIR = "searches"


class Param(BaseModel):
    """One dimension of the space."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: SafeName
    """The parameter's name in the study, the report and the figures ('lr')."""
    paths: list[str] = Field(min_length=1)
    """Dotted paths into the experiment that all take the value (e.g. both dropout layers, by id or index)."""
    type: Literal["uniform", "loguniform", "int", "categorical"]
    """uniform / loguniform: a float in [low, high]; int: an integer in [low, high]; categorical: one of choices."""
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = Field(None, gt=0)
    """uniform or int only: the grid of values from low (int default 1)."""
    choices: Optional[list[Union[float, int, str, bool, None]]] = None

    @model_validator(mode="after")
    def _range(self) -> "Param":
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError(f"parameter {self.name!r}: a categorical parameter takes a non-empty \"choices\" "
                                 "list and no low/high")
            if len({json.dumps(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"parameter {self.name!r}: a value is listed twice in choices")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"parameter {self.name!r}: a {self.type} parameter takes \"low\" and \"high\" (no choices)")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"parameter {self.name!r}: low and high must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"parameter {self.name!r}: the range [{self.low:g}, {self.high:g}] is empty or inverted; "
                             "low must be below high")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"parameter {self.name!r}: a log range must lie above 0, got low {self.low:g}; use a "
                             "positive low (e.g. 1e-5) or type \"uniform\"")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"parameter {self.name!r}: an int range takes whole numbers, got [{self.low:g}, {self.high:g}]")
        if self.step is not None and self.type == "loguniform":
            raise ValueError(f"parameter {self.name!r}: a loguniform parameter takes no step (Optuna cannot do both)")
        return self


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    metric: Literal["val_acc", "val_loss"] = "val_acc"
    """The validation figure the study optimizes (maximized for accuracy, minimized for loss)."""
    at: Literal["best", "last"] = "best"
    """Its value at the run's best epoch (the highest accuracy / lowest loss so far) or at its last epoch."""

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.metric == "val_acc" else "minimize"

    def value(self, history: list[Any]) -> float:
        """The objective of a run whose epochs so far are `history` (records with val_acc / val_loss): what
        the run would score if it stopped there, so the pruner compares like with like at every epoch."""
        series = [float(getattr(r, self.metric)) for r in history]
        if self.at == "last":
            return series[-1]
        return max(series) if self.direction == "maximize" else min(series)


class Pruner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["median", "successive_halving", "none"] = "median"
    """median: stop a trial whose objective so far is worse than the median of earlier trials at that epoch;
    successive_halving: keep the best 1/reduction_factor at each rung (epochs min_epochs * factor^k)."""
    startup_trials: NonNegativeInt = 2
    """median: trials that always finish before any is pruned."""
    warmup_epochs: NonNegativeInt = 1
    """median: epochs of each trial never pruned after."""
    min_epochs: PositiveInt = 1
    """successive_halving: the first rung."""
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    version: Literal[1] = 1
    name: SafeName
    """Name of the search: its folder OUT/searches/<name>/ (study.db, best point, report section)."""
    description: str = ""
    base: str
    """Experiment spec the space edits, relative to the search file."""
    space: list[Param] = Field(min_length=1)
    objective: Objective = Objective()
    trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 10
    """Finished trials (complete or pruned) the study should hold; a rerun trains only the missing ones."""
    seeds: Union[PositiveInt, Annotated[list[NonNegativeInt], Field(min_length=1)]] = 1
    """Seeds of every trial (paired: the same for all): N means 0..N-1; the objective is their mean."""
    pruner: Pruner = Pruner()
    sampler_seed: NonNegativeInt = 0
    """Seed of the TPE sampler."""

    @model_validator(mode="after")
    def _distinct(self) -> "SearchSpec":
        names = [p.name for p in self.space]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"parameter name {twice[0]!r} is used twice; give every parameter its own name")
        return self

    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)


class Search:
    """A loaded search file: the spec, its base experiment as the base file says it (its bases merged, the
    short form: blocks, parameters, fractions unexpanded) and the --set overrides, and the points."""

    def __init__(self, spec: SearchSpec, base_data: Any, path: Path, overrides: Sequence[str] = ()) -> None:
        self.spec, self.base_data, self.path, self.overrides = spec, base_data, path, list(overrides)
        self.base = self._experiment([], f"{path}: base")

    def _experiment(self, edits: list[str], source: str) -> Experiment:
        # As a sweep's points: the overrides, then the trial's values, on the short form, then expanded,
        # so a path may name a network parameter (network.params.width) as well as a flat layer.
        return validate(Experiment, flat_json(self.base_data, None, [*self.overrides, *edits], source), source)

    def point(self, values: dict[str, Any]) -> Experiment:
        """The experiment of a trial's values (seed 0)."""
        edits = [f"{p}={json.dumps(values[param.name])}" for param in self.spec.space for p in param.paths]
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        return self._experiment(edits, f"{self.path} ({label})")

    def seeded(self, values: dict[str, Any]) -> list[Experiment]:
        """The trial's experiments, one per seed (paired across trials)."""
        point = self.point(values)
        return [with_seed(point, s) for s in self.spec.seed_list()]


def load_search(path: str | Path, overrides: Optional[list[str]] = None) -> Search:
    """Read and check a search file: every path of the space must name a field of the base experiment
    (did-you-mean otherwise), before any study is opened."""
    path = Path(path)
    spec = validate(SearchSpec, read_json(path), path)
    base_data = read_with_bases(path.parent / spec.base, read_base(path, "base", spec.base, "search"))
    search = Search(spec, base_data, path, overrides or [])
    resolved = search.base.model_dump(mode="json")
    # The fields a path may name: the resolved experiment's (defaults filled in) and those its file writes
    # in the short form (network.params.width); the layers are the flat ones (network.layers.<id>.p).
    fields = merge(resolved, base_data)
    if isinstance(fields.get("network"), dict):
        fields["network"]["layers"] = resolved["network"]["layers"]
    for param in spec.space:
        for dotted in param.paths:
            _check_path(fields, dotted, f"{path}: space {param.name!r}")
    return search


def _check_path(data: Any, dotted: str, where: str) -> None:
    """`dotted` names an existing field of the resolved experiment `data`, else one line with a suggestion."""
    node = data
    keys = dotted.split(".")
    for depth, key in enumerate(keys):
        at = ".".join(keys[:depth + 1])
        if isinstance(node, list):
            position = list_position(node, key)
            if position is None:
                raise SpecError(f"{where}: path {dotted!r}: {at!r} names no item of a list of {len(node)} (an index "
                                "0..N-1 or a layer's id)")
            node = node[position]
        elif isinstance(node, dict):
            if key not in node:
                raise SpecError(f"{where}: path {dotted!r}: no field {key!r} there{did_you_mean(key, list(node))}")
            node = node[key]
        else:
            raise SpecError(f"{where}: path {dotted!r}: {'.'.join(keys[:depth])!r} is a value, not a section")
    if isinstance(node, (dict, list)):
        raise SpecError(f"{where}: path {dotted!r} is a section, not a value; name one of its fields")


def is_search_file(data: Any) -> bool:
    """A search file has a key only a search has (space, trials, objective, ...) and no experiment section."""
    return own_kind(data) == "search"


def search_dir(out_root: str | Path, name: str) -> Path:
    return Path(out_root) / SEARCHES_DIR / name
