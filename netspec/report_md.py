"""report.md over a runs folder: per-sweep comparison tables and overlay figures, per-run tables of
the seven figures with their curves, and torch vs jax side by side wherever both backends ran."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import outputs
from .report import fmt, markdown_table, metrics_table, plot_curves
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
        return json.loads((self.directory / outputs.HISTORY_JSON).read_text())


def collect_runs(root: Path) -> dict[tuple[str, str, str], Run]:
    """Every finished run under root/<name>/<backend>/<run-id>/, by (name, backend, run id)."""
    runs = {}
    for path in sorted(root.glob(f"*/*/*/{outputs.METRICS}")):
        directory = path.parent
        name, backend, rid = directory.relative_to(root).parts
        runs[(name, backend, rid)] = Run(name, backend, rid, directory, json.loads(path.read_text()))
    return runs


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _backend_columns(by_backend: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metrics per backend, plus a 'jax - torch' column of differences when both are there."""
    columns = dict(by_backend)
    if "torch" in by_backend and "jax" in by_backend:
        t, j = by_backend["torch"], by_backend["jax"]
        columns["jax - torch"] = {k: _diff(j.get(k), t.get(k)) for k in SUMMARY_FIELDS}
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
    if {"torch", "jax"} <= set(found):
        rows = []
        for i, label in enumerate(labels):
            t, j = (found[b][i].metrics if found[b][i] else {} for b in ("torch", "jax"))
            rows.append([label, t.get("test_acc"), j.get("test_acc"), _diff(j.get("test_acc"), t.get("test_acc")),
                         t.get("best_val_acc"), j.get("best_val_acc"), t.get("median_epoch_seconds"), j.get("median_epoch_seconds")])
        lines += ["torch vs jax:", "", markdown_table(
            ["point", "test acc torch", "test acc jax", "jax - torch", "best val torch", "best val jax",
             "epoch s torch", "epoch s jax"], rows), ""]
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
    spec = json.loads((first.directory / outputs.SPEC).read_text())
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
        ordered = dict(sorted(by_backend.items(), key=lambda kv: kv[0] != "torch"))
        lines += _run_section(name, rid, ordered, used_in.get((name, rid), []), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
