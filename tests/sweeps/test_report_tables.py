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
from netspec.runs import run_folder
from netspec.runs.stats import paired_difference
from netspec.sweeps.sweep import run_sweep, write_report
from netspec.spec.sweep_file import load_sweep
from netspec.training.history import EpochRecord
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


def seconds(value: float) -> str:
    """Seconds as the report prints them (2 decimals)."""
    return f"{value:.2f}"


def signed(value: float) -> str:
    """A difference as the report prints it: with its sign, whatever it is."""
    return f"{value:+.4f}"


def history(seed: int, epochs: int = 3) -> list[EpochRecord]:
    """Figures drawn at random (seeded per run), so no two runs and no two figures agree to 4 decimals.
    The last epoch's validation accuracy is drawn below the others', so the best epoch is an earlier one
    and "validation accuracy" and "best validation accuracy" differ."""
    rng = np.random.default_rng(seed)
    draw = lambda lo=0.05, hi=2.5: float(rng.uniform(lo, hi))
    return [EpochRecord(epoch=e, train_loss=draw(), train_acc=draw(0.05, 1.0), val_loss=draw(),  # accuracies in [0, 1]: read back validated
                        val_acc=draw(0.05, 0.45) if e == epochs else draw(0.5, 1.0), lr=1e-3,
                        seconds=draw(), images_per_s=1.0, test_loss=draw(), test_acc=draw(0.05, 1.0)) for e in range(1, epochs + 1)]


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
        expected.append([label, cell(t["test_acc"]), cell(j["test_acc"]), signed(j["test_acc"] - t["test_acc"]),
                         cell(t["best_val_acc"]), cell(j["best_val_acc"]),
                         seconds(t["median_epoch_seconds"]), seconds(j["median_epoch_seconds"])])
    assert table.rows == expected


def test_run_tables_put_torch_and_jax_side_by_side(report: Report) -> None:
    for i, run_id in enumerate(report.run_ids):
        table = next(t for t in report.tables if t.heading == f"### `base` ({run_id})")
        assert table.header == ["result", "torch", "jax", "jax - torch"]
        t, j = report.sweep["torch"][i], report.sweep["jax"][i]
        expected = [[label, cell(t[key]), cell(j[key]), signed(j[key] - t[key])] for key, label in FIGURES.items()]
        expected.append(["median epoch seconds", seconds(t["median_epoch_seconds"]), seconds(j["median_epoch_seconds"]), "-"])
        assert table.rows == expected


def test_a_run_on_one_backend_has_one_column(report: Report) -> None:
    table = next(t for t in report.tables if t.heading.startswith("### `solo` ("))
    assert table.header == ["result", "torch"]
    assert table.rows == [[label, cell(report.solo[key])] for key, label in FIGURES.items()] + \
        [["median epoch seconds", seconds(report.solo["median_epoch_seconds"])]]


def test_single_seed_differences_from_the_base_point(report: Report) -> None:
    # the base spec has lr 0.01: the base point is 'lr=0.01'; one seed: a plain difference, no interval
    for backend in BACKENDS:
        table = next(t for t in report.tables if t.caption.startswith(f"{backend}: difference from `lr=0.01`"))
        base, other = report.sweep[backend]
        assert table.header == ["point", "pairs", "final test accuracy", "best validation accuracy"]
        assert table.rows == [["lr=0.001", "1", signed(other["test_acc"] - base["test_acc"]),
                               signed(other["best_val_acc"] - base["best_val_acc"])]]


def test_the_summary_comes_first_with_each_points_test_accuracy_and_difference(report: Report) -> None:
    brief = report.tables[0]
    assert brief.heading == "### Sweep `rates` in brief"
    assert brief.header == ["point", "torch: final test accuracy", "torch: - base", "jax: final test accuracy", "jax: - base"]
    (t0, t1), (j0, j1) = report.sweep["torch"], report.sweep["jax"]
    assert brief.rows == [["lr=0.01 (base)", cell(t0["test_acc"]), "-", cell(j0["test_acc"]), "-"],
                          ["lr=0.001", cell(t1["test_acc"]), signed(t1["test_acc"] - t0["test_acc"]),
                           cell(j1["test_acc"]), signed(j1["test_acc"] - j0["test_acc"])]]
    best = {b: max(zip(LABELS, report.sweep[b]), key=lambda pair: pair[1]["best_val_acc"]) for b in BACKENDS}
    assert brief.caption == "Best point by mean best validation accuracy: " + "; ".join(
        f"{b} {label} (final test accuracy {cell(m['test_acc'])})" for b, (label, m) in best.items()) + "."
    experiments = report.tables[1]
    assert (experiments.heading, experiments.header) == ("### Experiments in brief", ["experiment", "torch", "jax"])
    assert sorted(experiments.rows) == sorted(
        [[f"`base` (train.{label})", cell(t["test_acc"]), cell(j["test_acc"])] for label, t, j in zip(LABELS, *report.sweep.values())]
        + [[f"`solo` ({run_folder.run_id(tiny_experiment('solo', epochs=3))})", cell(report.solo["test_acc"]), "-"]])


def test_every_table_is_accounted_for(report: Report) -> None:
    # the summary's sweep and experiments tables; two sweep tables, two differences-from-base tables, the
    # torch vs jax table, a table per run section (two points, one solo run); no appendix with one seed per run
    assert len(report.tables) == 10


# ---- several seeds ------------------------------------------------------------------------------

SEEDS = 3


@dataclass(frozen=True)
class SeededReport:
    tables: list[Table]
    metrics: dict[tuple[str, str, int], dict[str, Any]]
    """(backend, point label, seed) -> metrics."""
    runs: Path
    markdown: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> SeededReport:
    """The two-point sweep with three seeds per point, on both backends, all finished."""
    root = tmp_path_factory.mktemp("seeded")
    runs = root / "runs"
    base = write_spec(root, tiny_experiment("base", epochs=3))
    sweep_path = write_json(root / "rates.json", {"name": "rates", "base": base.name, "seeds": SEEDS,
                                                 "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}]})
    _, points = load_sweep(sweep_path)
    metrics = {(b, p.label, p.seed): finish_run(runs, p.experiment, b, seed=100 * k + 10 * i + p.seed)
               for k, b in enumerate(BACKENDS) for i, p in enumerate(points)}
    idle = Script(step_losses=[], step_accs=[], val=[], test=[])
    run_sweep(sweep_path, [ScriptedBackend(idle, name=b) for b in BACKENDS], runs, log=lambda line: None)
    markdown = write_report(runs).read_text()
    return SeededReport(parse_tables(markdown), metrics, runs, markdown)


def over_seeds(report: SeededReport, backend: str, label: str, key: str) -> list[float]:
    return [report.metrics[(backend, label, s)][key] for s in range(SEEDS)]


def test_cells_over_seeds_are_mean_std_n(seeded: SeededReport) -> None:
    for backend in BACKENDS:
        table = next(t for t in seeded.tables if t.caption == f"**{backend}** (6/6 points finished)")
        for row, (key, label) in zip(table.rows, FIGURES.items()):
            expected = []
            for point in LABELS:
                x = np.array(over_seeds(seeded, backend, point, key))
                expected.append(f"{x.mean():.4f} ± {x.std(ddof=1):.4f} (3)")
            assert row == [label, *expected]


def test_paired_differences_with_intervals(seeded: SeededReport) -> None:
    for backend in BACKENDS:
        table = next(t for t in seeded.tables if t.caption.startswith(f"{backend}: difference from `lr=0.01`"))
        expected = [paired_difference(over_seeds(seeded, backend, "lr=0.001", k), over_seeds(seeded, backend, "lr=0.01", k)).text()
                    for k in ("test_acc", "best_val_acc")]
        assert table.rows == [["lr=0.001", "3", *expected]]
        assert all("[" in cell_ for cell_ in expected)
    # the backends: jax - torch per figure, paired by seed, in each experiment's table (seed 0's id heads it)
    first_id = run_folder.run_id(load_sweep(seeded.runs.parent / "rates.json")[1][0].experiment)
    group = next(t for t in seeded.tables if t.heading == f"### `base` ({first_id})")
    assert group.header == ["result", "torch", "jax", "jax - torch"]
    for row, key in zip(group.rows, FIGURES):
        assert row[-1] == paired_difference(over_seeds(seeded, "jax", "lr=0.01", key), over_seeds(seeded, "torch", "lr=0.01", key)).text()


def test_per_seed_appendix_and_setting_figure(seeded: SeededReport) -> None:
    appendix = next(t for t in seeded.tables if t.caption == "## Appendix: per-seed values")
    assert len(appendix.rows) == 2 * 2 * SEEDS
    shown = {(row[1], int(row[2]), row[4]) for row in appendix.rows}
    assert shown == {(b, s, cell(m["test_acc"])) for (b, _, s), m in seeded.metrics.items()}
    assert (seeded.runs / "figures" / "rates_vs_setting.png").stat().st_size > 1000
    assert "Base: `lr=0.01`" in seeded.markdown and "seeds 0-2 per point" in seeded.markdown


def test_runs_csv_rows_equal_the_runs_metrics(seeded: SeededReport) -> None:
    import csv

    with (seeded.runs / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(seeded.metrics)
    by_label = {}
    for row in rows:
        label = row["label"].split("` ")[1]  # '`rates` lr=0.01'
        by_label[(row["backend"], label, int(row["seed"]))] = row
        assert row["status"] == "finished" and row["spec"] == "base" and row["epochs"] == "3"
        assert row["recipe"] == "adam, lab"  # the lab's recipe: Adam and its lr rule
    for key, metrics in seeded.metrics.items():
        row = by_label[key]
        assert {k: float(row[k]) for k in [*FIGURES, "median_epoch_seconds"]} == \
            {k: metrics[k] for k in [*FIGURES, "median_epoch_seconds"]}


def test_an_experiments_header_names_its_recipe() -> None:
    """Runs of one network trained two ways must not read alike in report.md: the header line of an
    experiment names its optimizer, schedule and augmentation (Page's recipe here, written out by hand)."""
    from netspec.sweeps.report_runs import settings_text

    spec = {"train": {"epochs": 24, "batch_size": 512, "lr": 0.4,
                      "optimizer": {"type": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                      "schedule": {"type": "piecewise_linear"}, "label_smoothing": 0.2,
                      "augment": {"crop_padding": 4, "pad_mode": "reflect", "flip": True, "cutout": 8}},
            "data": {"source": "synthetic", "train_size": 100, "val_size": 0, "test_size": 50}}
    text = settings_text(spec)
    assert text.startswith("24 epochs, batch 512, lr 0.4; recipe sgd m0.9 nesterov wd0.0005, piecewise_linear, "
                           "label smoothing 0.2, crop4 reflect + flip + cutout8; data synthetic"), text
