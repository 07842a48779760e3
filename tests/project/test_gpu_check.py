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
    assert list(stages) == ["environment", "tests", "bench", "profile", "train"]
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
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.txt", "log.txt", "profile.txt", "summary.json", "tests.txt"]
    assert "aten::convolution" in (out / "profile.txt").read_text()


def test_run_estimates_come_from_the_matching_benchmark_row() -> None:
    """The training stage plans epochs from the benchmark: the backend's compiled netspec row; for the plain
    reference, the eager torch.nn row (else the eager netspec one); guesses where none was measured."""
    def row(backend: str, impl: str, mode: str, seconds: float, compile_s: float) -> dict:
        return {"net": "cnn", "backend": backend, "impl": impl, "precision": "tf32", "mode": mode, "s_per_epoch": seconds,
                "steps": 200, "batch_size": 100, "compile_s": compile_s}
    bench = {"rows": [row("torch", "netspec", "compiled", 0.2, 20.0), row("torch", "netspec", "eager", 0.5, 1.0),
                      row("jax", "netspec", "compiled", 0.3, 4.0), row("jax", "builtin", "compiled", 0.1, 1.0)]}
    assert gpu_check.run_estimate(bench, "torch", "tf32", 40_000) == pytest.approx((1.15 * 0.4 + 0.15, 29.0))
    assert gpu_check.run_estimate(bench, "jax", "tf32", 40_000) == pytest.approx((1.15 * 0.6 + 0.15, 9.8))
    assert gpu_check.run_estimate(bench, gpu_check.PLAIN, "tf32", 40_000) == pytest.approx((1.15 * 1.0 + 0.15, 6.2))
    bench["rows"].append(row("torch", "builtin", "eager", 0.4, 1.0))
    assert gpu_check.run_estimate(bench, gpu_check.PLAIN, "tf32", 40_000)[0] == pytest.approx(1.15 * 0.8 + 0.15)
    assert gpu_check.run_estimate(None, "torch", "bf16", 40_000) == (2.5, 45.0)
