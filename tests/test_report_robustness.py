"""One bad folder never breaks the report, and a diverged run is never shown as a result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import netspec as ns
from netspec import run_folder
from netspec.report import collect_runs, finished
from netspec.sweep import write_report
from tests.helpers import tiny_experiment
from tests.test_report_tables import finish_run


def experiment(name: str) -> ns.Experiment:
    return tiny_experiment().model_copy(update={"name": name})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    finish_run(root, experiment("good"), "torch", seed=1)
    finish_run(root, experiment("damaged"), "torch", seed=2)
    (run_folder.run_dir(root, experiment("damaged"), "torch") / run_folder.METRICS).write_text('{"train_loss": 0.5')
    diverged = run_folder.RunFolder.of(root, experiment("diverging"), "torch")
    diverged.path.mkdir(parents=True)
    diverged.write_spec(experiment("diverging"))
    diverged.write_diverged(3, "training loss nan in epoch 3", {"backend": "torch", "name": "diverging"})
    good = run_folder.run_dir(root, experiment("good"), "torch")
    attempt = good.with_name(good.name + ".attempt-0123abcd")  # a --force attempt that was killed
    attempt.mkdir()
    (attempt / run_folder.METRICS).write_text((good / run_folder.METRICS).read_text())
    (root / "sweeps").mkdir()
    (root / "sweeps" / "broken.json").write_text("{")
    (root / "sweeps" / "escape.json").write_text(json.dumps({"name": "../../outside", "points": []}))
    return root


def test_damaged_runs_attempts_and_manifests_are_left_out_with_one_line_each(
        runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = collect_runs(runs)
    assert sorted(name for name, _, _ in done) == ["diverging", "good"]
    assert sorted(name for name, _, _ in finished(done)) == ["good"]
    capsys.readouterr()
    path = write_report(runs)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3 and all(line.startswith("warning: ") for line in warnings)  # 1 run, 2 manifests
    assert "metrics.json is damaged" in warnings[0] and "is not a safe file name" in warnings[2]
    report = path.read_text()
    assert "### `good`" in report and "### `damaged`" not in report and ".attempt-" not in report
    assert not (runs.parent / "outside").exists() and not list(runs.parent.glob("*.png"))


def test_a_diverged_run_is_listed_as_diverged_and_never_as_a_result(runs: Path) -> None:
    report = write_report(runs).read_text()
    results, _, diverged = report.partition("## Diverged runs")
    assert "diverging" not in results
    assert "| diverging | torch |" in diverged and "| 3 | training loss nan in epoch 3 |" in diverged
    rows = (runs / "runs.csv").read_text().splitlines()
    assert any(row.startswith("diverging,torch,") and row.endswith(",diverged") for row in rows)


def test_nothing_to_report_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ns.SpecError, match="no finished runs or sweeps to report"):
        write_report(tmp_path / "empty")
