"""report.md's "Experiments in brief" names the experiments that share a name by what differs between
them, prints seconds to 2 decimals, and titles the sweep's per-epoch overlay figures
with the seed they show.

Runs are finished by writing their folders (run_folder.write_history, write_metrics) from made-up
histories, as tests/sweeps/test_report_tables.py does: nothing is trained.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import netspec as ns
from netspec.runs import run_folder
from netspec.sweeps.sweep import write_report
from netspec.training.history import EpochRecord
from tests.helpers import tiny_experiment

HASH = re.compile(r"\b[0-9a-f]{10}\b")


def with_lr(name: str, lr: float, **train: object) -> ns.Experiment:
    experiment = tiny_experiment(name, epochs=2)
    return experiment.model_copy(update={"train": experiment.train.model_copy(update={"lr": lr, **train})})


def finish_run(root: Path, experiment: ns.Experiment, backend: str = "torch", seconds: float = 1.23456789) -> None:
    directory = run_folder.run_dir(root, experiment, backend)
    directory.mkdir(parents=True)
    experiment.save(directory / run_folder.SPEC)
    records = [EpochRecord(epoch=e, train_loss=1.0 / e, train_acc=0.5, val_loss=1.0 / e, val_acc=0.5 + 0.1 * e, lr=1e-3,
                           seconds=seconds * e, images_per_s=1.0, test_loss=1.0, test_acc=0.4 + 0.1 * e) for e in (1, 2)]
    run_folder.write_history(directory, records)
    run_folder.write_metrics(directory, records, {"backend": backend, "name": experiment.name})


def section(markdown: str, heading: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start:end]


def brief_rows(markdown: str) -> list[list[str]]:
    """The brief table's body rows, cells stripped (header and rule dropped)."""
    table = [line for line in section(markdown, "### Experiments in brief") if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]


@pytest.fixture(scope="module")
def markdown(tmp_path_factory: pytest.TempPathFactory) -> str:
    runs = tmp_path_factory.mktemp("labels") / "runs"
    finish_run(runs, with_lr("myres", 0.01))
    finish_run(runs, with_lr("myres", 0.001))
    finish_run(runs, tiny_experiment("solo", epochs=2))
    return write_report(runs).read_text()


def test_rows_of_one_name_are_labelled_by_the_field_that_differs(markdown: str) -> None:
    labels = sorted(row[0] for row in brief_rows(markdown) if row[0].startswith("`myres`"))
    assert labels == ["`myres` (train.lr=0.001)", "`myres` (train.lr=0.01)"]
    assert not any(HASH.search(row[0]) for row in brief_rows(markdown) if row[0].startswith("`myres`"))


def test_a_name_only_one_experiment_has_keeps_its_run_id(markdown: str) -> None:
    solo = [row[0] for row in brief_rows(markdown) if row[0].startswith("`solo`")]
    assert len(solo) == 1 and HASH.search(solo[0])


def test_seconds_have_at_most_two_decimals(markdown: str) -> None:
    rows = [line for line in markdown.splitlines() if line.startswith("| median epoch seconds")]
    assert rows
    for line in rows:
        for cell in line.strip("|").split("|")[1:]:
            assert not re.search(r"\d\.\d{3,}", cell), line
    assert "| median epoch seconds | 1.85 |" in rows  # the median of 1.2346 s and 2.4691 s


def test_more_than_two_differences_are_counted_and_no_difference_falls_back_to_the_run_id(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    finish_run(runs, with_lr("many", 0.01))
    finish_run(runs, with_lr("many", 0.001, batch_size=25, epochs=3))
    finish_run(runs, with_lr("same", 0.01))
    finish_run(runs, with_lr("same", 0.01, shuffle_seed=7))  # another experiment (shuffle offset), no other field
    rows = [row[0] for row in brief_rows(write_report(runs).read_text())]
    assert sorted(r for r in rows if r.startswith("`many`")) == [
        "`many` (train.batch_size=25, train.epochs=3, +1 more)", "`many` (train.batch_size=50, train.epochs=2, +1 more)"]
    same = [r for r in rows if r.startswith("`same`")]
    assert len(same) == 2 and all(HASH.search(r) for r in same) and same[0] != same[1]


def test_sweep_overlay_figures_name_the_seed_they_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netspec.spec.sweep_file import load_sweep
    from netspec.sweeps import report_sections
    from netspec.sweeps.sweep import run_sweep
    from tests.helpers import write_json, write_spec
    from tests.scripted import Script, ScriptedBackend

    runs = tmp_path / "runs"
    base = write_spec(tmp_path, tiny_experiment("base", epochs=2))
    sweep_path = write_json(tmp_path / "rates.json", {"name": "rates", "base": base.name, "seeds": [0, 1],
                                                      "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}]})
    for point in load_sweep(sweep_path)[1]:
        finish_run(runs, point.experiment)
    idle = Script(step_losses=[], step_accs=[], val=[], test=[])
    run_sweep(sweep_path, [ScriptedBackend(idle, name="torch")], runs, log=lambda line: None)
    titles: list[str] = []
    monkeypatch.setattr(report_sections, "plot_curves", lambda series, ylabel, title, path, **kw: titles.append(title))
    write_report(runs)
    overlays = [t for t in titles if t.startswith("rates")]
    assert overlays and all("(torch, seed 0)" in t for t in overlays), titles
