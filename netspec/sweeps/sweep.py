"""Sweeps: a base experiment and the values to vary, run point by point on one or more backends.

A sweep file:

    {"name": "mlp_dropout", "base": "../mlp.json",
     "axes": [{"name": "dropout rate", "paths": ["network.layers.3.p"], "values": [0.0, 0.1, 0.3, 0.5, 0.7]}],
     "variants": {"channel": "../cnn.json", "element-wise": "../cnn_dropout.json"},   # optional
     "seeds": 3,                                                                       # optional: seeds 0, 1, 2
     "mode": "grid"}                                                                   # or "one_at_a_time"

Points keep their base experiment's name, so they land in runs/<base name>/<backend>/<run-id>/ with
a content-hashed id: a point equal to another sweep's point, or to the plain spec, is trained once
and found again. Seed s of a point adds s to both `train.seed` (weights, dropout masks) and
`train.shuffle_seed` (batch order), so seed 0 is the point itself, the same folder as before seeds
existed, and seeds are paired: seed s is the same offset in every arm and on every backend.

A manifest in runs/sweeps/<name>.json records every invocation of the sweep and every point it
asked for (deduplicated by run id), for the report: running a sweep again with other settings adds
to its record. How points are run (one after the other, or as Ray tasks) is netspec.sweeps.launchers'.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from netspec.runs import run_folder
from netspec.protocol.backend import Backend
from netspec.errors import SpecError
from netspec.spec.experiment import Experiment
from netspec.io import parse_json_file, safe_output_dir
from netspec.sweeps.launchers import Job, Launcher, LocalLauncher, jobs_table
from netspec.runs.records import Manifest, check
from netspec.sweeps.report import build_report
from netspec.spec.sweep_file import SWEEPS_DIR, SweepPoint, SweepSpec, load_sweep, manifest_path, seed_list, with_seed


def run_sweep(path: str | Path, backends: list[Backend], out_root: str | Path = "runs", overrides: list[str] | None = None,
              device: Optional[str] = None, force: bool = False, log: Callable[[str], None] = print,
              progress: bool | None = None, seeds: Union[int, Sequence[int], None] = None,
              launcher: Optional["Launcher"] = None, tensorboard: bool = False) -> dict[str, Any]:
    """Run every point on every backend with `launcher` (default: one after the other, in this process);
    finished points are reused, so a killed sweep resumes and a grown one trains only its new points."""
    spec, points = load_sweep(path, overrides, seeds)
    manifest = record_invocation(out_root, spec, points, backends, overrides or [])
    # Seed by seed (every arm's seed 0 first): a sweep stopped early can already compare its arms.
    order = {s: i for i, s in enumerate(seed_list(seeds if seeds is not None else spec.seeds))}
    by_seed = sorted(points, key=lambda p: order[p.seed])
    jobs = [Job(p.experiment, b, f"{spec.name}: {p.label}" + (f" seed {p.seed}" if p.seed else ""))
            for p, b in itertools.product(by_seed, backends)]
    (launcher or LocalLauncher()).run(jobs, out_root, device=device, force=force, log=log, progress=progress,
                                      tensorboard=tensorboard)
    log(f"sweep {spec.name}:\n{jobs_table(jobs, out_root)}\nwrite the report with: netspec report {out_root}")
    return manifest


def record_invocation(out_root: str | Path, spec: SweepSpec, points: list[SweepPoint], backends: list[Backend],
                      overrides: list[str]) -> dict[str, Any]:
    """Add this invocation and its points to the sweep's manifest (written before training, so a report
    can show a sweep still running). Points already recorded (same run id) are kept as they were."""
    target = manifest_path(out_root, spec.name)
    old = _old_manifest(target)
    invocation = {"overrides": overrides, "seeds": sorted({p.seed for p in points}), "backends": [b.name for b in backends]}
    entries = [{"label": p.label, "name": p.experiment.name, "run_id": run_folder.run_id(p.experiment), "seed": p.seed,
                "settings": p.settings, "base": p.is_base, "overrides": overrides} for p in points]
    manifest = {
        "name": spec.name, "description": spec.description, "axes": [a.name for a in spec.axes],
        "variants": list(spec.variants),
        "backends": list(dict.fromkeys([*old.get("backends", []), *invocation["backends"]])),
        "invocations": _merged(old.get("invocations", []), [invocation], key=json.dumps),
        "points": _merged(old.get("points", []), entries, key=lambda e: (e["name"], e["run_id"])),
    }
    safe_output_dir(out_root, SWEEPS_DIR)
    run_folder.write_json_atomic(target, manifest)
    return manifest


def _old_manifest(target: Path) -> dict[str, Any]:
    """The manifest a sweep adds to: {} when there is none; a file there that is not a manifest netspec wrote
    (a sweep spec, when --out is a specs folder) is refused, never overwritten."""
    if not target.exists() and not target.is_symlink():
        return {}
    try:
        old = parse_json_file(target)
        check(Manifest, old, "")
    except ValueError as err:  # UnreadableJSON too
        raise SpecError(f"{target}: not a sweep manifest netspec wrote ({str(err).removeprefix(': ')[:200]}); the sweep "
                        "would overwrite it: choose another --out, or move the file away") from None
    return old


def _merged(old: list[Any], new: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    """old, then the items of new whose key old lacks (first one wins)."""
    seen = {key(item) for item in old}
    added = []
    for item in new:
        if key(item) not in seen:
            seen.add(key(item))
            added.append(item)
    return [*old, *added]


def experiment_jobs(experiment: Experiment, backends: list[Backend], seeds: Union[int, Sequence[int], None]) -> list["Job"]:
    """One job per seed and backend for a plain experiment (`netspec train SPEC --seeds N`)."""
    return [Job(with_seed(experiment, s), b, experiment.name + (f" seed {s}" if s else ""))
            for s in seed_list(seeds) for b in backends]


def write_report(runs_root: str | Path, out: str | Path | None = None) -> Path:
    return build_report(Path(runs_root), Path(out) if out else Path(runs_root) / "report.md")
