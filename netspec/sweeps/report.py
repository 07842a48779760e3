"""report.md over a runs folder: per-sweep comparison tables with statistics over seeds, paired
differences from the base arm and between backends (95% bootstrap intervals, netspec.runs.stats),
result-vs-setting and overlay figures, per-experiment tables of the seven figures with their curves,
a per-seed appendix, and runs.csv (one row per run folder) next to report.md.

Runs are grouped by experiment: the seeds of one experiment (netspec.spec.sweep_file.with_seed) share a
replicate key and make one column of `mean ± std (n)` cells; seeds are paired across arms and
backends by their train.seed.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from netspec.errors import SetupError, SpecError
from netspec.io import refuse_link, safe_output_dir, write_bytes_atomic
from netspec.runs import run_folder
from netspec.runs.stats import MIN_PAIRS_TO_MARK
from netspec.runs.tables import md_code, plural
from netspec.spec.experiment import recipe_text
from netspec.sweeps.report_runs import FIGURES, RUNS_CSV, Run, _warn, collect_runs, finished, read_manifests
from netspec.sweeps.report_sections import (_appendix, _diverged_section, _experiments_brief, _group_section,
                                            _sweep_brief, _sweep_section, _used_in, group_runs)
from netspec.sweeps.search_report import search_sections
from netspec.runs.records import SUMMARY_FIELDS

# ---- runs.csv ----------------------------------------------------------------------------------

CSV_FIELDS = ["spec", "backend", "run_id", "label", "overrides", "seed", *SUMMARY_FIELDS, "median_epoch_seconds",
              "epochs", "status", "recipe"]


def write_runs_csv(root: Path, path: Path, manifests: list[dict[str, Any]]) -> Path:
    """One row per run folder under root (finished or not), for pandas or a spreadsheet."""
    used_in = _used_in(manifests, markdown=False)  # the overrides have their own column
    overrides = {(p["name"], p["run_id"]): " ".join(p.get("overrides", [])) for m in manifests for p in m["points"]}
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for directory in sorted(p.parent for p in root.glob(f"*/*/*/{run_folder.SPEC}")):
        name, backend, rid = directory.relative_to(root).parts
        writer.writerow(_csv_row(Run(name, backend, rid, directory, run_folder.finished_metrics(directory) or {}),
                                 "; ".join(used_in.get((name, rid), [])), overrides.get((name, rid), "")))
    write_bytes_atomic(path, text.getvalue().encode())
    return path


def _unfinished(run: Run) -> str:
    try:
        return f"unfinished ({len(run.history())} epochs)"
    except run_folder.DamagedError:
        return "unfinished (history.json damaged)"


def _csv_row(run: Run, label: str, overrides: str) -> dict[str, Any]:
    history = run.directory / run_folder.HISTORY_JSON
    if run.metrics:
        status = run.metrics.get("status", run_folder.FINISHED)
    else:
        status = _unfinished(run) if history.is_file() else "started, no epoch finished"
    return {"spec": run.name, "backend": run.backend, "run_id": run.run_id, "label": label, "overrides": overrides,
            "seed": run.replicate[1], **{k: run.metrics.get(k) for k in (*SUMMARY_FIELDS, "median_epoch_seconds")},
            "epochs": run.spec.get("train", {}).get("epochs"), "status": status,
            "recipe": recipe_text(run.spec.get("train") or {})}


# ---- the report ----------------------------------------------------------------------------------

def _check_out(out: Path) -> None:
    """Refuse, before anything is written, an output the report could not finish: a file where the
    folder goes, a folder at runs.csv's name, a figures folder that is a file or a link, no write access."""
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise SetupError(f"{parent}: a file where the report's folder goes; choose another -o")
    if (parent / RUNS_CSV).is_dir():
        raise SetupError(f"{parent / RUNS_CSV}: a folder where the report writes runs.csv; move it away or choose another -o")
    figures = parent / FIGURES
    refuse_link(figures)  # the words safe_output_dir uses for every planted link
    if figures.exists() and not figures.is_dir():
        raise SetupError(f"{figures}: not a plain folder where the report writes its figures; remove it or choose another -o")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(f"cannot write in {parent}: permission denied; choose another -o")


def build_report(root: Path, out: Path) -> Path:
    """Write `out` (markdown), its figures and runs.csv next to it."""
    if not root.is_dir():
        raise SpecError(f"{root}: no such runs folder; train something first (netspec train specs/mlp.json)")
    if out.is_dir():  # before anything is written: figures and runs.csv go beside report.md
        raise SpecError(f"{out}: a folder; -o names the report's file, e.g. {out / 'report.md'}")
    done = collect_runs(root)
    runs = finished(done)
    manifests = read_manifests(root)
    if not manifests and not any(root.glob(f"*/*/*/{run_folder.METRICS}")):  # damaged runs still get a report
        raise SpecError(f"{root}: no finished runs or sweeps to report; train something first (netspec train specs/mlp.json)")
    _check_out(out)  # every refusal before the first figure is written
    used_in = _used_in(manifests)
    groups = group_runs(runs)
    lines = ["# netspec report", "", f"{plural(len(runs), 'finished run')} under {md_code(root)}, {plural(len(manifests), 'sweep')}. Cells over "
             "several seeds are `mean ± std (n)`; differences are paired by seed with a 95% bootstrap interval, "
             "marked * only when the interval excludes zero and rests on "
             f"{MIN_PAIRS_TO_MARK} or more seeds (fewer: all seeds sharing a sign is enough to exclude zero). "
             "Every run: `runs.csv`.", ""]
    lines += ["## Summary", ""]
    for manifest in manifests:
        lines += _sweep_brief(manifest, runs, out)
    lines += _experiments_brief(groups)
    if manifests:
        lines += ["## Sweeps", ""]
        for manifest in manifests:
            lines += _sweep_section(manifest, runs, out)
    lines += search_sections(root, out, _warn)  # searches (netspec.sweeps.search_report)
    lines += ["## Runs", ""]
    for group in groups:
        labels = dict.fromkeys(u for r in group.all_runs() for u in used_in.get((group.name, r.run_id), []))
        lines += _group_section(group, list(labels), out)
    lines += _appendix(groups)
    lines += _diverged_section(done)
    safe_output_dir(out.parent)
    write_bytes_atomic(out, "\n".join(lines).encode())
    write_runs_csv(root, out.parent / RUNS_CSV, manifests)
    return out
