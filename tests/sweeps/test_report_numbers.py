"""Every number the report and the tables print, read back and compared with the metrics.json it came
from, column by column and seed by seed. tests/sweeps/test_report_tables.py checks most
tables; here: every column of the per-seed appendix (by the run id each row names), differences paired by
seed when arms finished different seeds (list order would pair seed 0 with seed 1), each backend's figure
links naming that backend's own run folder, and the table a finished run prints (metrics_table).

The reference for labels and formats is the test's own (FIGURES, cell, signed from test_report_tables),
never the report's SUMMARY_FIELDS.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from netspec.runs import run_folder
from netspec.runs.stats import paired_difference
from netspec.runs.tables import metrics_table
from netspec.spec.sweep_file import load_sweep
from netspec.sweeps.sweep import run_sweep, write_report
from tests.helpers import tiny_experiment, write_json, write_spec
from tests.scripted import Script, ScriptedBackend
from tests.sweeps.test_report_tables import (BACKENDS, FIGURES, LABELS, SEEDS, SeededReport, cell, finish_run, parse_tables,
                                      seeded, signed)

__all__ = ["seeded"]  # the fixture, shared with tests/sweeps/test_report_tables.py


def point_ids(runs: Path) -> dict[str, tuple[str, int]]:
    """run id -> (point label, seed), from the sweep file (not from the report)."""
    _, points = load_sweep(runs.parent / "rates.json")
    return {run_folder.run_id(p.experiment): (p.label, p.seed) for p in points}


def test_every_appendix_column_is_its_runs_metric(seeded: SeededReport) -> None:
    appendix = next(t for t in seeded.tables if t.caption == "## Appendix: per-seed values")
    assert appendix.header[4:] == ["final test accuracy", "best validation accuracy", "validation accuracy"]
    ids = point_ids(seeded.runs)
    seen = set()
    for row in appendix.rows:
        backend, seed, run_id = row[1], int(row[2]), row[3]
        label, point_seed = ids[run_id]
        assert seed == point_seed, f"row {row}: seed {seed} but run {run_id} is seed {point_seed}"
        m = seeded.metrics[(backend, label, seed)]
        assert row[4:] == [cell(m["test_acc"]), cell(m["best_val_acc"]), cell(m["val_acc"])], row
        seen.add((backend, label, seed))
    assert seen == set(seeded.metrics)


FIGURE_LINK = re.compile(r"!\[`?base`? (\w+) (acc|loss)\]\(([^)]+)\)")


def test_each_backends_figure_links_name_its_own_run(seeded: SeededReport) -> None:
    """'torch: ![..](torch's run/acc.png)', 'jax: ![..](jax's run/acc.png)': the lowest seed of each."""
    _, points = load_sweep(seeded.runs.parent / "rates.json")
    links = FIGURE_LINK.findall(seeded.markdown)
    assert {(b, k) for b, k, _ in links} == {(b, k) for b in BACKENDS for k in ("acc", "loss")}
    for backend, kind, target in links:
        path = (seeded.runs / unquote(target)).resolve()
        assert path.name == f"{kind}.png"
        metrics = json.loads((path.parent / run_folder.METRICS).read_text())
        assert metrics["backend"] == backend, f"{backend}'s {kind} figure links {target}, a {metrics['backend']} run"
        lowest = [p for p in points if p.seed == 0]
        assert path.parent in {run_folder.run_dir(seeded.runs, p.experiment, backend).resolve() for p in lowest}


@pytest.fixture(scope="module")
def gaps(tmp_path_factory: pytest.TempPathFactory) -> SeededReport:
    """The seeded two-point sweep where arms finished different seeds: jax lacks seed 0 of lr=0.01, torch
    lacks seed 2 of lr=0.001 (their folders removed after the sweep), so seed order and list order part."""
    root = tmp_path_factory.mktemp("gaps")
    runs = root / "runs"
    base = write_spec(root, tiny_experiment("base", epochs=3))
    sweep_path = write_json(root / "rates.json", {"name": "rates", "base": base.name, "seeds": SEEDS,
                                                 "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}]})
    _, points = load_sweep(sweep_path)
    metrics = {(b, p.label, p.seed): finish_run(runs, p.experiment, b, seed=500 + 100 * k + 10 * i + p.seed)
               for k, b in enumerate(BACKENDS) for i, p in enumerate(points)}
    idle = Script(step_losses=[], step_accs=[], val=[], test=[])
    run_sweep(sweep_path, [ScriptedBackend(idle, name=b) for b in BACKENDS], runs, log=lambda line: None)
    for backend, label, seed in [("jax", "lr=0.01", 0), ("torch", "lr=0.001", 2)]:
        point = next(p for p in points if p.label == label and p.seed == seed)
        shutil.rmtree(run_folder.run_dir(runs, point.experiment, backend))
        del metrics[(backend, label, seed)]
    markdown = write_report(runs).read_text()
    return SeededReport(parse_tables(markdown), metrics, runs, markdown)


def by_seed(report: SeededReport, backend: str, label: str, key: str, seeds) -> list[float]:
    return [report.metrics[(backend, label, s)][key] for s in seeds]


def test_differences_from_base_pair_by_seed(gaps: SeededReport) -> None:
    common = {"torch": [0, 1], "jax": [1, 2]}
    for backend in BACKENDS:
        table = next(t for t in gaps.tables if t.caption.startswith(f"{backend}: difference from `lr=0.01`"))
        seeds = common[backend]
        expected = [paired_difference(by_seed(gaps, backend, "lr=0.001", k, seeds), by_seed(gaps, backend, "lr=0.01", k, seeds)).text()
                    for k in ("test_acc", "best_val_acc")]
        assert table.rows == [["lr=0.001", str(len(seeds)), *expected]], backend


def test_backend_differences_pair_by_seed(gaps: SeededReport) -> None:
    first_id = run_folder.run_id(load_sweep(gaps.runs.parent / "rates.json")[1][0].experiment)
    group = next(t for t in gaps.tables if t.heading == f"### `base` ({first_id})")
    assert group.header == ["result", "torch", "jax", "jax - torch"]
    for row, key in zip(group.rows, FIGURES):
        expected = paired_difference(by_seed(gaps, "jax", "lr=0.01", key, [1, 2]), by_seed(gaps, "torch", "lr=0.01", key, [1, 2]))
        assert row[-1] == expected.text(), key


def test_the_table_a_run_prints_has_each_figure_in_its_row() -> None:
    metrics = {key: 0.1 + 0.01 * i for i, key in enumerate(FIGURES)}
    table = parse_tables(metrics_table({"tiny [torch]": metrics, "tiny [jax]": {k: v + 0.5 for k, v in metrics.items()}}))[0]
    assert table.header == ["result", "tiny [torch]", "tiny [jax]"]
    assert table.rows == [[label, cell(metrics[key]), cell(metrics[key] + 0.5)] for key, label in FIGURES.items()]


def test_signed_difference_format_is_the_reports() -> None:
    assert signed(0.25) == "+0.2500" and signed(-0.25) == "-0.2500"  # the helper the tables are read with
    assert LABELS == ["lr=0.01", "lr=0.001"]
