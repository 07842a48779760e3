"""benchmarks/gpu_check --tiny end to end on a CPU (so the prepared GPU check never rots): every stage
runs, the tables and summary are written, the benchmark prints its table and writes its JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from benchmarks import gpu_check  # noqa: E402


def test_gpu_check_tiny_runs_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "check"
    assert gpu_check.main(["--out", str(out), "--tiny", "--budget-s", "120"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == ["environment", "tests", "bench", "train"]
    assert all(stage["ok"] for stage in stages.values()), {k: v.get("error") for k, v in stages.items()}
    assert stages["tests"]["result"]["returncode"] in (0, 5)  # 5: every GPU test skipped (no GPU here)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["rows"] and all(row["s_per_epoch"] for row in bench["rows"])
    printed = capsys.readouterr().out
    assert "s/epoch" in printed and "vs built-in" in printed and (out / "bench.txt").read_text().startswith("device:")
    runs = stages["train"]["result"]["runs"]
    assert {run["backend"] for run in runs} >= {"torch", gpu_check.PLAIN}
    netspec_runs = [run for run in runs if run["backend"] != gpu_check.PLAIN]
    assert all(run["metrics"]["status"] == "finished" and run["metrics"]["precision"] == "tf32" for run in netspec_runs)
    plain = next(run for run in runs if run["backend"] == gpu_check.PLAIN)  # the reference on the same data
    assert plain["metrics"]["precision"] == "tf32" and plain["epochs_done"] == plain["epochs_planned"] == len(plain["history"])
    assert 0.0 <= plain["metrics"]["test_acc"] <= 1.0
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.txt", "log.txt", "summary.json", "tests.txt"]
