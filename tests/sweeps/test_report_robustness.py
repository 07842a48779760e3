"""One bad folder never breaks the report, and a diverged run is never shown as a result."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

import netspec as ns
from netspec.runs import run_folder
from netspec.sweeps.report_runs import collect_runs, finished
from netspec.sweeps.sweep import write_report
from tests.helpers import tiny_experiment
from tests.sweeps.test_report_tables import finish_run


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
    with (runs / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert any(row["spec"] == "diverging" and row["backend"] == "torch" and row["status"] == "diverged" for row in rows)


def test_nothing_to_report_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ns.SpecError, match="no finished runs or sweeps to report"):
        write_report(tmp_path / "empty")


# ---- user strings in markdown ---------------------------------------------------

HOSTILE_LABELS = ["a | b", "<img src=x onerror=alert(1)>", "x\n## heading", "`code` [link](http://x) & ![i](y)"]


def _cells(line: str) -> list[str]:
    """A table row's cells as GitHub's markdown splits them: at every pipe not escaped by a backslash."""
    return re.split(r"(?<!\\)\|", line.strip().strip("|").replace("\\\\", "\0"))


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("hostile") / "runs"
    points = []
    for i, label in enumerate(HOSTILE_LABELS):
        arm = experiment("hostile").model_copy(update={"train": experiment("hostile").train.model_copy(update={"lr": 0.01 + i})})
        finish_run(root, arm, "torch", seed=i)
        points.append({"label": label, "name": "hostile", "run_id": run_folder.run_id(arm), "seed": 0,
                       "settings": {"lr": 0.01 + i}, "base": i == 0, "overrides": ["train.lr=1\n# overridden"]})
    (root / "sweeps").mkdir()
    (root / "sweeps" / "hostile.json").write_text(json.dumps({
        "name": "hostile", "description": "fine\n## injected heading\n<script>alert(1)</script>", "axes": ["lr"],
        "variants": [], "backends": ["torch"], "invocations": [], "points": points}))
    return write_report(root).read_text()


def test_a_pipe_in_a_label_keeps_every_table_row_to_its_columns(hostile_report: str) -> None:
    table: list[str] = []
    for line in [*hostile_report.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            widths = {len(_cells(row)) for row in table}
            assert widths == {len(_cells(table[0]))}, table
            table = []
    assert "a \\| b" in hostile_report


def test_html_and_links_in_user_strings_are_shown_not_run(hostile_report: str) -> None:
    assert "<img" not in hostile_report and "<script" not in hostile_report
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile_report and "&lt;script&gt;" in hostile_report
    assert "](http://x)" not in hostile_report.replace("\\](http://x)", "")  # the label's link is text


def test_a_newline_in_a_user_string_never_starts_a_heading(hostile_report: str) -> None:
    headings = [line for line in hostile_report.splitlines() if line.lstrip().startswith("#")]
    assert all(h.startswith(("# netspec report", "## Summary", "### Experiments in brief", "## Sweeps", "## Runs",
                             "### Sweep `hostile`", "### `hostile`", "## Appendix", "## Diverged")) for h in headings), headings
    assert "fine ## injected heading" in hostile_report and "x ## heading" in hostile_report


def test_a_user_string_at_a_line_start_is_never_a_heading_or_list() -> None:
    from netspec.runs.tables import md_text

    assert [md_text(t, line_start=True) for t in ("# h", "- x", "1. x", "> q", "ok")] == ["\\# h", "\\- x", "1\\. x",
                                                                                         "&gt; q", "ok"]
    assert md_text("--set a=1") == "--set a=1"  # mid-line: nothing to escape
