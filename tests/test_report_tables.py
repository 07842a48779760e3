"""Every cell of report.md's tables equals its run's metrics.json, for torch and jax side by side.

A runs folder is made with finished runs of known, pairwise distinct figures (a two-point sweep on
both backends, and one plain run on torch alone): histories written with run_folder.write_history
and metrics with run_folder.write_metrics, the sweep manifest by run_sweep itself (every point is
already finished, so it trains nothing). Then the report is written and its markdown tables are
parsed, and each cell is compared with the figure of the run it belongs to, formatted as the report
formats numbers (4 decimals). A cell taken from the wrong run, backend, figure or sign cannot pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import netspec as ns
from netspec import run_folder
from netspec.sweep import load_sweep, run_sweep, write_report
from netspec.trainer import EpochRecord
from tests.helpers import tiny_experiment, write_json, write_spec
from tests.scripted import Script, ScriptedBackend

BACKENDS = ("torch", "jax")
FIGURES = {  # metrics.json key -> row label of the report's tables, in the lab report's order
    "train_loss": "training loss", "train_acc": "training accuracy", "val_loss": "validation loss",
    "val_acc": "validation accuracy", "best_val_acc": "best validation accuracy", "test_loss": "final test loss",
    "test_acc": "final test accuracy",
}
LABELS = ["lr=0.01", "lr=0.001"]


def cell(value: float) -> str:
    """A number as the report prints it."""
    return f"{value:.4f}"


def history(seed: int, epochs: int = 3) -> list[EpochRecord]:
    """Figures drawn at random (seeded per run), so no two runs and no two figures agree to 4 decimals.
    The last epoch's validation accuracy is drawn below the others', so the best epoch is an earlier one
    and "validation accuracy" and "best validation accuracy" differ."""
    rng = np.random.default_rng(seed)
    draw = lambda lo=0.05, hi=2.5: float(rng.uniform(lo, hi))
    return [EpochRecord(epoch=e, train_loss=draw(), train_acc=draw(), val_loss=draw(),
                        val_acc=draw(0.05, 0.45) if e == epochs else draw(0.5, 1.0), lr=1e-3,
                        seconds=draw(), images_per_s=1.0, test_loss=draw(), test_acc=draw()) for e in range(1, epochs + 1)]


def finish_run(root: Path, experiment: ns.Experiment, backend: str, seed: int) -> dict[str, Any]:
    """A finished run folder (spec, history, metrics) as a training run leaves it; returns its metrics."""
    directory = run_folder.run_dir(root, experiment, backend)
    directory.mkdir(parents=True)
    experiment.save(directory / run_folder.SPEC)
    records = history(seed)
    run_folder.write_history(directory, records)
    return run_folder.write_metrics(directory, records, {"backend": backend, "name": experiment.name})


@dataclass(frozen=True)
class Table:
    heading: str
    """The last '###' heading above the table."""
    caption: str
    """The last line of text above the table (a heading, '**torch** ...', 'torch vs jax:')."""
    header: list[str]
    rows: list[list[str]]


def parse_tables(markdown: str) -> list[Table]:
    """Every markdown table of a document, with the heading and the line of text above it."""
    tables: list[Table] = []
    heading = caption = ""
    block: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if block:
            tables.append(Table(heading, caption, block[0], block[2:]))  # block[1] is the --- rule
            block = []
        if line.startswith("### "):
            heading = line
        if line.strip() and not line.startswith("!["):
            caption = line
    return tables


@dataclass(frozen=True)
class Report:
    tables: list[Table]
    sweep: dict[str, list[dict[str, Any]]]
    """Metrics of the sweep's points per backend, in point order."""
    run_ids: list[str]
    """Run id of each sweep point."""
    solo: dict[str, Any]
    """Metrics of the plain run, torch only."""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    base = write_spec(root, tiny_experiment("base", epochs=3))
    sweep_path = write_json(root / "rates.json", {"name": "rates", "base": base.name,
                                                 "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}]})
    _, points = load_sweep(sweep_path)
    assert [p.label for p in points] == LABELS
    sweep = {b: [finish_run(runs, p.experiment, b, seed=10 * i + k) for i, p in enumerate(points)]
             for k, b in enumerate(BACKENDS)}
    solo = finish_run(runs, tiny_experiment("solo", epochs=3), "torch", seed=99)
    # Every point is finished: run_sweep only writes the manifest (its backends are never compiled).
    idle = Script(step_losses=[], step_accs=[], val=[], test=[])
    run_sweep(sweep_path, [ScriptedBackend(idle, name=b) for b in BACKENDS], runs, log=lambda line: None)
    markdown = write_report(runs).read_text()
    return Report(parse_tables(markdown), sweep, [run_folder.run_id(p.experiment) for p in points], solo)


def test_the_fixtures_figures_are_pairwise_distinct(report: Report) -> None:
    metrics = [*report.sweep["torch"], *report.sweep["jax"], report.solo]
    shown = [cell(m[k]) for m in metrics for k in [*FIGURES, "median_epoch_seconds"]]
    assert len(set(shown)) == len(shown)


def test_sweep_tables_hold_each_points_figures_per_backend(report: Report) -> None:
    for backend in BACKENDS:
        table = next(t for t in report.tables if t.caption == f"**{backend}** (2/2 points finished)")
        assert table.heading == "### Sweep `rates`" and table.header == ["result", *LABELS]
        first, second = report.sweep[backend]
        assert table.rows == [[label, cell(first[key]), cell(second[key])] for key, label in FIGURES.items()]


def test_sweep_torch_vs_jax_table(report: Report) -> None:
    table = next(t for t in report.tables if t.caption == "torch vs jax:")
    assert table.header == ["point", "test acc torch", "test acc jax", "jax - torch", "best val torch", "best val jax",
                            "epoch s torch", "epoch s jax"]
    expected = []
    for label, t, j in zip(LABELS, report.sweep["torch"], report.sweep["jax"]):
        expected.append([label, cell(t["test_acc"]), cell(j["test_acc"]), cell(j["test_acc"] - t["test_acc"]),
                         cell(t["best_val_acc"]), cell(j["best_val_acc"]),
                         cell(t["median_epoch_seconds"]), cell(j["median_epoch_seconds"])])
    assert table.rows == expected


def test_run_tables_put_torch_and_jax_side_by_side(report: Report) -> None:
    for i, run_id in enumerate(report.run_ids):
        table = next(t for t in report.tables if t.heading == f"### `base` ({run_id})")
        assert table.header == ["result", "torch", "jax", "jax - torch"]
        t, j = report.sweep["torch"][i], report.sweep["jax"][i]
        expected = [[label, cell(t[key]), cell(j[key]), cell(j[key] - t[key])] for key, label in FIGURES.items()]
        expected.append(["median epoch seconds", cell(t["median_epoch_seconds"]), cell(j["median_epoch_seconds"]), "-"])
        assert table.rows == expected


def test_a_run_on_one_backend_has_one_column(report: Report) -> None:
    table = next(t for t in report.tables if t.heading.startswith("### `solo` ("))
    assert table.header == ["result", "torch"]
    assert table.rows == [[label, cell(report.solo[key])] for key, label in FIGURES.items()] + \
        [["median epoch seconds", cell(report.solo["median_epoch_seconds"])]]


def test_every_table_is_accounted_for(report: Report) -> None:
    # two sweep tables, the torch vs jax table, a table per run section (two points, one solo run)
    assert len(report.tables) == 6
