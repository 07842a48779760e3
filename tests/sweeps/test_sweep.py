"""Sweeps (expansion, resumption) and the report (tables hold the runs' numbers, figures written)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import runner
from netspec.runs import run_folder
from netspec.spec.sweep_file import load_sweep, manifest_path
from tests.helpers import tiny_experiment, write_json, write_spec


def sweep_file(directory: Path, **fields) -> Path:
    return write_json(directory / f"{fields['name']}.json", {"version": 1, **fields})


def test_grid_one_at_a_time_and_variants_expand(tmp_path: Path) -> None:
    base = write_spec(tmp_path, tiny_experiment("base"))
    other = write_spec(tmp_path, tiny_experiment("other", batch_size=25))
    axes = [{"name": "rate", "paths": ["network.layers.3.p", "network.layers.9.p"], "values": [0.1, 0.2]},
            {"name": "lr", "paths": ["train.lr"], "values": [0.1, 0.01, 0.001]}]
    _, grid = load_sweep(sweep_file(tmp_path, name="g", base=base.name, axes=axes))
    assert len(grid) == 6 and grid[0].label == "rate=0.1, lr=0.1"
    assert grid[0].experiment.network.layers[3].p == grid[0].experiment.network.layers[9].p == 0.1
    _, single = load_sweep(sweep_file(tmp_path, name="o", base=base.name, axes=axes, mode="one_at_a_time"))
    assert [p.label for p in single] == ["rate=0.1", "rate=0.2", "lr=0.1", "lr=0.01", "lr=0.001"]
    assert single[2].experiment.network.layers[3].p == 0.0  # the other axis stays at the base value
    _, variants = load_sweep(sweep_file(tmp_path, name="v", variants={"a": base.name, "b": other.name}))
    assert [(p.label, p.experiment.name, p.experiment.train.batch_size) for p in variants] == [("a", "base", 50), ("b", "other", 25)]


def test_every_sweep_of_the_report_expands_to_valid_experiments() -> None:
    sweeps = sorted(Path("specs/sweeps").glob("*.json"))
    assert len(sweeps) >= 10
    for path in sweeps:
        _, points = load_sweep(path)
        assert len(points) >= 2, path
    _, rates = load_sweep("specs/sweeps/cnn_dropout_rate.json")
    assert [p.experiment.network.layers[8].p for p in rates] == [0.0, 0.1, 0.3, 0.5, 0.7]


@pytest.mark.parametrize("fields, expected", [
    ({"name": "x", "axes": []}, "needs a 'base' experiment or 'variants'"),
    ({"name": "x", "base": "base.json", "axes": [{"name": "r", "paths": ["network.layers.30.p"], "values": [0.1]}]},
     "needs an index below"),
    ({"name": "x", "base": "base.json", "axes": [{"name": "r", "paths": ["train.lr"], "values": [-1]}]}, "train: lr: must be greater than 0"),
    ({"name": "x", "base": "missing.json", "axes": [{"name": "r", "paths": ["train.lr"], "values": [1]}]}, "cannot read the file"),
    ({"name": "x", "base": "base.json", "axis": []}, "unknown field 'axis'"),
])
def test_bad_sweep_is_one_line(fields: dict, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_spec(tmp_path, tiny_experiment("base"))
    path = sweep_file(tmp_path, **fields)
    assert runner.main([str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-point, one-epoch sweep run once on torch, shared by the tests below."""
    root = tmp_path_factory.mktemp("sweep")
    base = write_spec(root, tiny_experiment("base", epochs=1))
    sweep = sweep_file(root, name="rates", base=base.name,
                       axes=[{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}])
    assert runner.main([str(sweep), "--backend", "torch", "--out", str(root / "runs"), "--device", "cpu"]) == 0
    return sweep, root / "runs"


def test_finished_points_are_reused_and_a_killed_sweep_resumes(finished_sweep: tuple[Path, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, runs = finished_sweep
    _, points = load_sweep(sweep)
    dirs = [run_folder.run_dir(runs, p.experiment, "torch") for p in points]
    assert all((d / "metrics.json").is_file() for d in dirs)
    trained: list[str] = []
    import netspec.runs.training_run as run_module
    real_fit = run_module.fit
    monkeypatch.setattr(run_module, "fit", lambda model, experiment, *a, **k: trained.append(experiment.train.lr) or real_fit(model, experiment, *a, **k))
    assert runner.main([str(sweep), "--out", str(runs), "--device", "cpu"]) == 0
    assert trained == []  # everything finished: nothing trains again
    stamp = (dirs[0] / "metrics.json").stat().st_mtime_ns
    (dirs[1] / "metrics.json").unlink()  # as if the sweep was killed during its second point
    assert runner.main([str(sweep), "--out", str(runs), "--device", "cpu"]) == 0
    assert trained == [0.001] and (dirs[1] / "metrics.json").is_file()
    assert (dirs[0] / "metrics.json").stat().st_mtime_ns == stamp


def test_report_tables_hold_the_runs_numbers_and_figures_exist(finished_sweep: tuple[Path, Path]) -> None:
    sweep, runs = finished_sweep
    assert runner.main(["report", str(runs)]) == 0
    report = (runs / "report.md").read_text()
    _, points = load_sweep(sweep)
    metrics = [json.loads((run_folder.run_dir(runs, p.experiment, "torch") / "metrics.json").read_text()) for p in points]
    assert "### Sweep `rates`" in report and "| result | lr=0.01 | lr=0.001 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| final test accuracy | ") and "lr=" not in line)
    assert row == f"| final test accuracy | {metrics[0]['test_acc']:.4f} | {metrics[1]['test_acc']:.4f} |"
    for backend_figure in ("rates_torch_val_acc.png", "rates_torch_val_loss.png"):
        assert (runs / "figures" / backend_figure).stat().st_size > 1000
        assert f"figures/{backend_figure}" in report
    assert report.count("/acc.png)") == 2  # each run's own curves are linked
    assert "In sweeps: `rates` lr=0.01" in report


def test_seeds_are_distinct_run_folders_and_seed_0_is_the_run_as_written(tmp_path: Path) -> None:
    base = write_spec(tmp_path, tiny_experiment("base"))
    path = sweep_file(tmp_path, name="s", base=base.name, seeds=3,
                      axes=[{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}])
    _, unseeded = load_sweep(path, seeds=1)
    _, points = load_sweep(path)
    assert [(p.label, p.seed) for p in points] == [(f"lr={lr}", s) for lr in (0.01, 0.001) for s in range(3)]
    assert len({run_folder.run_id(p.experiment) for p in points}) == 6
    assert run_folder.run_id(points[0].experiment) == run_folder.run_id(unseeded[0].experiment)
    assert run_folder.run_id(points[0].experiment) == run_folder.run_id(tiny_experiment("base"))  # today's run
    # seed s moves the weights/dropout seed and the batch order together, paired across arms
    assert [(p.experiment.train.seed, p.experiment.train.shuffle_seed) for p in points[3:]] == [(0, 42), (1, 43), (2, 44)]
    _, listed = load_sweep(path, seeds=[4, 2])
    assert [p.seed for p in listed] == [4, 2, 4, 2] and points[0].is_base and not points[3].is_base


def test_a_grown_sweep_trains_only_its_new_points_and_adds_to_its_record(
        finished_sweep: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, finished = finished_sweep
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    trained: list[tuple[float, int]] = []
    import netspec.runs.training_run as run_module
    real_fit = run_module.fit
    monkeypatch.setattr(run_module, "fit", lambda model, experiment, *a, **k:
                        trained.append((experiment.train.lr, experiment.train.seed)) or real_fit(model, experiment, *a, **k))
    before = json.loads(manifest_path(runs, "rates").read_text())
    assert runner.main([str(sweep), "--out", str(runs), "--device", "cpu", "--seeds", "2"]) == 0
    assert trained == [(0.01, 1), (0.001, 1)]  # seed 0 of each point was there already
    after = json.loads(manifest_path(runs, "rates").read_text())
    assert after["points"][:2] == before["points"] and [p["seed"] for p in after["points"]] == [0, 0, 1, 1]
    assert [i["seeds"] for i in after["invocations"]] == [[0], [0, 1]]
    assert runner.main([str(sweep), "--out", str(runs), "--device", "cpu", "--seeds", "2"]) == 0
    assert json.loads(manifest_path(runs, "rates").read_text()) == after and len(trained) == 2
