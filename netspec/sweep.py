"""Sweeps: a base experiment and the values to vary, run point by point on one or more backends.

A sweep file:

    {"name": "mlp_dropout", "base": "../mlp.json",
     "axes": [{"name": "dropout rate", "paths": ["network.layers.3.p"], "values": [0.0, 0.1, 0.3, 0.5, 0.7]}],
     "variants": {"channel": "../cnn.json", "element-wise": "../cnn_dropout.json"},   # optional
     "mode": "grid"}                                                                   # or "one_at_a_time"

Points keep their base experiment's name, so they land in runs/<base name>/<backend>/<run-id>/ with
a content-hashed id: a point equal to another sweep's point, or to the plain spec, is trained once
and found again. A manifest in runs/sweeps/<name>.json lists the points, for the report.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from . import run_folder
from .backend import Backend
from .errors import SpecError
from .experiment import Experiment, SafeName, apply_overrides
from .io import read_json, validate

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


@dataclass(frozen=True)
class SweepPoint:
    label: str
    """'dropout rate=0.3' or 'no BN': the point's name in tables and legends."""
    experiment: Experiment


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepSpec, list[SweepPoint]]:
    """Read a sweep file and expand it into its points (overrides apply to every point first)."""
    path = Path(path)
    raw = read_json(path)
    spec = validate(SweepSpec, raw, path)
    if not spec.variants and not spec.base:
        raise SpecError(f"{path}: a sweep needs a 'base' experiment or 'variants'; add \"base\": \"../mlp.json\"")
    bases = spec.variants or {"": spec.base}
    points: list[SweepPoint] = []
    for variant, relative in bases.items():
        base_path = path.parent / relative
        base = read_json(base_path)
        base = apply_overrides(base, overrides or [], source=str(base_path))
        for settings in _settings(spec):
            edits = [f"{p}={json.dumps(v)}" for axis, v in settings for p in axis.paths]
            words = [f"{axis.name}={v}" for axis, v in settings]
            label = ", ".join(([variant] if variant else []) + words) or "base"
            data = apply_overrides(base, edits, source=f"{path} ({label})")
            points.append(SweepPoint(label, validate(Experiment, data, f"{path} ({label})")))
    return spec, points


def _settings(spec: SweepSpec) -> list[list[tuple[Axis, Any]]]:
    if spec.mode == "grid":
        return [list(zip(spec.axes, values)) for values in itertools.product(*(a.values for a in spec.axes))]
    return [[(axis, v)] for axis in spec.axes for v in axis.values] or [[]]


def is_sweep_file(data: Any) -> bool:
    """A sweep file has a base, axes or variants, and no network of its own."""
    return isinstance(data, dict) and "network" not in data and bool({"base", "axes", "variants"} & set(data))


def manifest_path(out_root: str | Path, name: str) -> Path:
    return Path(out_root) / SWEEPS_DIR / f"{name}.json"


def run_sweep(path: str | Path, backends: list[Backend], out_root: str | Path = "runs", overrides: list[str] | None = None,
              device: Optional[str] = None, force: bool = False, log: Callable[[str], None] = print,
              progress: bool | None = None) -> dict[str, Any]:
    """Run every point on every backend; finished points are reused, so a killed sweep resumes."""
    from .data import load_dataset
    from .training_run import run_experiment

    spec, points = load_sweep(path, overrides)
    manifest = {
        "name": spec.name, "description": spec.description, "axes": [a.name for a in spec.axes],
        "variants": list(spec.variants), "backends": [b.name for b in backends],
        "points": [{"label": p.label, "name": p.experiment.name, "run_id": run_folder.run_id(p.experiment)} for p in points],
    }
    target = manifest_path(out_root, spec.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    run_folder.write_json_atomic(target, manifest)  # first, so a report can show a sweep still running
    datasets: dict[str, Any] = {}
    total = len(points) * len(backends)
    for i, (point, backend) in enumerate(itertools.product(points, backends), start=1):
        log(f"[{i}/{total}] {spec.name}: {point.label} [{backend.name}]")
        if run_folder.finished_metrics(run_folder.run_dir(out_root, point.experiment, backend.name)) is None or force:
            key = point.experiment.data.model_dump_json()
            if key not in datasets:
                datasets[key] = load_dataset(point.experiment.data)
            dataset = datasets[key]
        else:
            dataset = None  # reused: no need to load data
        run_experiment(point.experiment, backend, out_root, device=device, force=force, dataset=dataset,
                       log=log, progress=progress)
    log(f"sweep {spec.name} done; write the report with: python runner.py report {out_root}")
    return manifest


def write_report(runs_root: str | Path, out: str | Path | None = None) -> Path:
    from .report import build_report

    return build_report(Path(runs_root), Path(out) if out else Path(runs_root) / "report.md")
