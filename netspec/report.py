"""report.md over a runs folder: per-sweep comparison tables and overlay figures, per-run tables of
the seven figures with their curves, and the backends side by side wherever more than one ran."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from . import run_folder
from .backend import backend_names
from .plots import plot_curves
from .tables import fmt, markdown_table, metrics_table
from .trainer import SUMMARY_FIELDS

FIGURES = "figures"


@dataclass(frozen=True)
class Run:
    name: str
    backend: str
    run_id: str
    directory: Path
    metrics: dict[str, Any]

    def history(self) -> list[dict[str, Any]]:
        return json.loads((self.directory / run_folder.HISTORY_JSON).read_text())


def collect_runs(root: Path) -> dict[tuple[str, str, str], Run]:
    """Every finished run under root/<name>/<backend>/<run-id>/, by (name, backend, run id)."""
    runs = {}
    for path in sorted(root.glob(f"*/*/*/{run_folder.METRICS}")):
        directory = path.parent
        name, backend, rid = directory.relative_to(root).parts
        runs[(name, backend, rid)] = Run(name, backend, rid, directory, json.loads(path.read_text()))
    return runs


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def in_registry_order(names: Iterable[str]) -> list[str]:
    """Backend names as the registry orders them (the reference backend first); unknown ones last."""
    known = backend_names()
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def _backend_columns(by_backend: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metrics per backend, plus an 'other - reference' column of differences for every backend after
    the first (e.g. 'jax - torch')."""
    columns = dict(by_backend)
    reference, *others = in_registry_order(by_backend)
    for other in others:
        a, b = by_backend[other], by_backend[reference]
        columns[f"{other} - {reference}"] = {k: _diff(a.get(k), b.get(k)) for k in SUMMARY_FIELDS}
    return columns


def _diff(a: Any, b: Any) -> Optional[float]:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _sweep_section(manifest: dict[str, Any], runs: dict[tuple[str, str, str], Run], out: Path) -> list[str]:
    name, points = manifest["name"], manifest["points"]
    lines = [f"### Sweep `{name}`", ""]
    if manifest.get("description"):
        lines += [manifest["description"], ""]
    found = {b: [runs.get((p["name"], b, p["run_id"])) for p in points] for b in manifest["backends"]}
    labels = [p["label"] for p in points]
    for backend, point_runs in found.items():
        done = sum(r is not None for r in point_runs)
        lines += [f"**{backend}** ({done}/{len(points)} points finished)", ""]
        columns = {label: (r.metrics if r else {}) for label, r in zip(labels, point_runs)}
        lines += [metrics_table(columns), ""]
    lines += _overlay_figures(name, labels, found, out)
    ordered = in_registry_order(found)
    for reference, other in ((ordered[0], b) for b in ordered[1:]):
        rows = []
        for i, label in enumerate(labels):
            t, j = (found[b][i].metrics if found[b][i] else {} for b in (reference, other))
            rows.append([label, t.get("test_acc"), j.get("test_acc"), _diff(j.get("test_acc"), t.get("test_acc")),
                         t.get("best_val_acc"), j.get("best_val_acc"), t.get("median_epoch_seconds"), j.get("median_epoch_seconds")])
        lines += [f"{reference} vs {other}:", "", markdown_table(
            ["point", f"test acc {reference}", f"test acc {other}", f"{other} - {reference}", f"best val {reference}",
             f"best val {other}", f"epoch s {reference}", f"epoch s {other}"], rows), ""]
    return lines


def _overlay_figures(name: str, labels: list[str], found: dict[str, list[Optional[Run]]], out: Path) -> list[str]:
    """Validation accuracy and loss of every point on one plot per backend, same scale across the sweep."""
    histories = {b: {label: r.history() for label, r in zip(labels, rs) if r} for b, rs in found.items()}
    values = {key: [row[key] for h in histories.values() for rows in h.values() for row in rows] for key in ("val_acc", "val_loss")}
    lines = []
    for backend, by_label in histories.items():
        if not by_label:
            continue
        images = []
        for key, ylabel in (("val_acc", "validation accuracy"), ("val_loss", "validation loss")):
            lo, hi = min(values[key]), max(values[key])
            pad = 0.05 * (hi - lo or 1.0)
            series = {label: ([r["epoch"] for r in rows], [r[key] for r in rows]) for label, rows in by_label.items()}
            path = out.parent / FIGURES / f"{name}_{backend}_{key}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            plot_curves(series, ylabel, f"{name} ({backend}): {ylabel}", path, ylim=(lo - pad, hi + pad))
            images.append(f"![{name} {backend} {ylabel}]({_link(path, out.parent)})")
        lines += [" ".join(images), ""]
    return lines


def _run_section(name: str, run_id: str, by_backend: dict[str, Run], used_in: list[str], out: Path) -> list[str]:
    first = next(iter(by_backend.values()))
    spec = json.loads((first.directory / run_folder.SPEC).read_text())
    lines = [f"### `{name}` ({run_id})", ""]
    if spec.get("description"):
        lines += [spec["description"], ""]
    if used_in:
        lines += ["In sweeps: " + "; ".join(used_in), ""]
    t = spec["train"]
    lines += [f"batch {t['batch_size']}, lr {t['lr']}, {first.metrics.get('epochs')} epochs, data {spec['data']['source']}"
              + (f" ({spec['data']['dir']})" if spec["data"].get("dir") else ""), ""]
    columns = _backend_columns({b: r.metrics for b, r in by_backend.items()})
    table = metrics_table(columns)
    epoch_row = ["median epoch seconds", *(by_backend[b].metrics.get("median_epoch_seconds") if b in by_backend else None
                                           for b in columns)]
    lines += [table, "| " + " | ".join(fmt(v) for v in epoch_row) + " |", ""]
    for backend, run in by_backend.items():
        images = [f"![{name} {backend} {k}]({_link(run.directory / f'{k}.png', out.parent)})" for k in ("acc", "loss")]
        lines += [f"{backend}: " + " ".join(images), ""]
    return lines


def build_report(root: Path, out: Path) -> Path:
    """Write `out` (markdown) and its figures next to it."""
    from .errors import SpecError

    if not root.is_dir():
        raise SpecError(f"{root}: no such runs folder; train something first (python runner.py specs/mlp.json)")
    runs = collect_runs(root)
    manifests = [json.loads(p.read_text()) for p in sorted((root / "sweeps").glob("*.json"))]
    lines = ["# netspec report", "", f"{len(runs)} finished runs under `{root}`, {len(manifests)} sweeps.", ""]
    if manifests:
        lines += ["## Sweeps", ""]
        for manifest in manifests:
            lines += _sweep_section(manifest, runs, out)
    lines += ["## Runs", ""]
    used_in: dict[tuple[str, str], list[str]] = {}
    for manifest in manifests:
        for point in manifest["points"]:
            used_in.setdefault((point["name"], point["run_id"]), []).append(f"`{manifest['name']}` {point['label']}")
    grouped: dict[tuple[str, str], dict[str, Run]] = {}
    for (name, backend, rid), run in runs.items():
        grouped.setdefault((name, rid), {})[backend] = run
    for (name, rid), by_backend in grouped.items():
        ordered = {b: by_backend[b] for b in in_registry_order(by_backend)}
        lines += _run_section(name, rid, ordered, used_in.get((name, rid), []), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
