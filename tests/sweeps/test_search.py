"""Optuna searches over spec fields: trials are ordinary run folders found by run id, a killed search
resumes and trains only what is missing, a finished search trains nothing, and bad search files are one line."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="searches need netspec[search] (optuna)")

import netspec as ns  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.protocol.backend import load_backend  # noqa: E402
from netspec.runs import run_folder  # noqa: E402
from netspec.spec.search_file import load_search  # noqa: E402
from netspec.sweeps.search import STUDY_DB, run_search  # noqa: E402

DATA = ns.DataConfig(source="synthetic", train_size=300, val_size=100, test_size=100)


def _base(directory: Path) -> Path:
    network = ns.Network(input_shape=(3, 32, 32), layers=[ns.Flatten(), ns.Linear(out_features=16), ns.ReLU(),
                                                          ns.Dropout(p=0.2, id="drop"), ns.Linear(out_features=10)])
    experiment = ns.Experiment(name="mlp_tiny", network=network, data=DATA,
                               train=ns.TrainConfig(lr=1e-2, batch_size=50, epochs=3, eval_batch_size=100))
    path = directory / "mlp_tiny.json"
    experiment.save(path)
    return path


def _search(directory: Path, **changes: object) -> Path:
    _base(directory)
    spec = {"version": 1, "name": "tiny", "base": "mlp_tiny.json",
            "space": [{"name": "lr", "paths": ["train.lr"], "type": "loguniform", "low": 1e-4, "high": 1e-1},
                      {"name": "dropout", "paths": ["network.layers.drop.p"], "type": "uniform", "low": 0.0, "high": 0.6}],
            "trials": 6, "seeds": 2, "pruner": {"type": "median", "startup_trials": 2, "warmup_epochs": 1}, **changes}
    path = directory / "search.json"
    path.write_text(json.dumps(spec))
    return path


class Lines(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def trained(self) -> int:
        """Epochs trained in this process (the trainer's epoch lines)."""
        return sum(1 for line in self if line.startswith("epoch "))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_search_prunes_records_its_runs_and_trains_nothing_the_second_time(tmp_path: Path, backend: str) -> None:
    if backend == "jax":
        pytest.importorskip("jax", reason="the jax backend")
    path = _search(tmp_path)
    out = tmp_path / "runs"
    log = Lines()
    record = run_search(path, load_backend(backend), out, log=log, progress=False)
    states = [t["state"] for t in record["trials"]]
    assert len(states) == 6 and "complete" in states
    # TPE draws its first 10 points at random from sampler_seed, so the 6 points are the same everywhere; two
    # have lr ~1.2e-4 (val acc ~0.09 after epoch 2, the others ~0.5), far below the median: pruned on any
    # machine and backend. (A third, lr 0.08, sits near the median and may go either way.)
    assert states.count("pruned") >= 2
    pruned_lrs = [t["params"]["lr"] for t in record["trials"] if t["state"] == "pruned"]
    assert sum(lr < 1e-3 for lr in pruned_lrs) == 2
    # The study in SQLite, read back by Optuna itself, and the run folders agree with the record.
    study = optuna.load_study(study_name=f"tiny:{backend}", storage=f"sqlite:///{out / 'searches/tiny' / STUDY_DB}")
    search = load_search(path)
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        experiments = search.seeded(trial.params)
        per_seed = []
        for experiment in experiments:
            folder = run_folder.run_dir(out, experiment, backend)
            history = json.loads((folder / "history.json").read_text())
            per_seed.append(max(row["val_acc"] for row in history))  # objective: best val_acc
        assert trial.value == pytest.approx(statistics.fmean(per_seed), abs=1e-12)
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:  # stopped early: no metrics.json, fewer epochs
            folder = run_folder.run_dir(out, search.seeded(trial.params)[0], backend)
            assert not (folder / "metrics.json").exists()
            assert len(json.loads((folder / "history.json").read_text())) < 3
    best = ns.Experiment.load(out / "searches/tiny" / f"best-{backend}.json")
    assert run_folder.run_id(best) == study.best_trial.user_attrs["run_ids"][0]
    again = Lines()
    run_search(path, load_backend(backend), out, log=again, progress=False)
    assert again.trained() == 0 and "6 of 6 trials already finished" in again[0]
    # The report's table shows the study's trials with the values Optuna holds, and its figures exist.
    from netspec.sweeps.report import build_report
    report = build_report(out, out / "report.md").read_text()
    for trial in study.trials:
        row = next(line for line in report.splitlines() if line.startswith(f"| {trial.number} |"))
        assert trial.state.name.lower() in row
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert f"{trial.value:.4f}" in row
    stem = f"search_tiny_{backend}"
    for figure in ("history", "slice_lr", "slice_dropout"):
        assert (out / "figures" / f"{stem}_{figure}.png").stat().st_size > 0


def test_a_killed_search_resumes_and_trains_only_the_rest(tmp_path: Path) -> None:
    path = _search(tmp_path, pruner={"type": "none"}, seeds=1)
    out = tmp_path / "runs"
    torch = load_backend("torch")

    class Kill(Exception):
        pass

    seen = Lines()

    def killing(line: str) -> None:
        seen(line)
        if line.startswith("epoch 2") and any(s.startswith("trial 3 (") for s in seen):
            raise Kill()  # the fourth trial killed as its second epoch ends, before its checkpoint

    with pytest.raises(Kill):
        run_search(path, torch, out, log=killing, progress=False)
    assert seen.trained() == 3 * 3 + 2  # three whole trials and two epochs of the fourth (one saved)
    resumed = Lines()
    record = run_search(path, torch, out, log=resumed, progress=False)
    assert any("3 of 6 trials already finished" in line for line in resumed)
    assert any("interrupted by a kill" in line for line in resumed)
    assert any("resuming" in line and "after epoch 1 of 3" in line for line in resumed)  # from its checkpoint
    assert resumed.trained() == 2 + 2 * 3  # its two unsaved epochs, and the two trials never started
    assert [t["state"] for t in record["trials"]] == ["complete"] * 6


@pytest.mark.parametrize("change, words", [
    ({"space": [{"name": "lr", "paths": ["train.lrr"], "type": "uniform", "low": 0.1, "high": 0.2}]}, "did you mean 'lr'"),
    ({"space": [{"name": "lr", "paths": ["train.lr"], "type": "uniform", "low": 0.2, "high": 0.1}]}, "empty or inverted"),
    ({"space": [{"name": "lr", "paths": ["train.lr"], "type": "loguniform", "low": 0.0, "high": 0.1}]}, "above 0"),
    ({"trials": 0}, "trials"),
    ({"trials": 10**7}, "trials"),
])
def test_bad_search_files_are_one_line(tmp_path: Path, change: dict, words: str) -> None:
    path = _search(tmp_path, **change)
    with pytest.raises(NetspecError, match=words) as err:
        run_search(path, load_backend("torch"), tmp_path / "runs", log=Lines(), progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs" / "mlp_tiny").exists()


def test_a_damaged_foreign_or_other_study_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = _search(tmp_path, trials=1, seeds=1)
    out = tmp_path / "runs"
    db = out / "searches/tiny" / STUDY_DB
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database at all")
    with pytest.raises(NetspecError, match="not a SQLite database"):
        run_search(path, load_backend("torch"), out, log=Lines(), progress=False)
    db.unlink()
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE mine (x)")
    with pytest.raises(NetspecError, match="something else"):
        run_search(path, load_backend("torch"), out, log=Lines(), progress=False)
    db.unlink()
    run_search(path, load_backend("torch"), out, log=Lines(), progress=False)
    other = _search(tmp_path, trials=1, seeds=1, objective={"metric": "val_loss", "at": "last"})
    with pytest.raises(NetspecError, match="another search"):
        run_search(other, load_backend("torch"), out, log=Lines(), progress=False)


def test_trials_as_ray_tasks_prune_and_resume_like_local_ones(ray_local: object, tmp_path: Path) -> None:
    """On the folder's local Ray (tests/sweeps/conftest.py)."""
    from netspec.sweeps.launchers import RayLauncher

    path = _search(tmp_path, trials=4, seeds=1, pruner={"type": "median", "startup_trials": 1, "warmup_epochs": 0})
    out = tmp_path / "runs"
    record = run_search(path, load_backend("torch"), out, log=Lines(), progress=False, launcher=RayLauncher())
    assert len(record["trials"]) == 4
    study = optuna.load_study(study_name="tiny:torch", storage=f"sqlite:///{out / 'searches/tiny' / STUDY_DB}")
    search = load_search(path)
    for trial in study.trials:  # each worker's epochs reached the shared study, and its run folder is there
        folder = run_folder.run_dir(out, search.seeded(trial.params)[0], "torch")
        history = json.loads((folder / "history.json").read_text())
        assert sorted(trial.intermediate_values) == [row["epoch"] for row in history]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(max(row["val_acc"] for row in history), abs=1e-12)
    again = Lines()
    run_search(path, load_backend("torch"), out, log=again, progress=False, launcher=RayLauncher())
    assert again.trained() == 0 and any("4 of 4 trials already finished" in line for line in again)


@pytest.mark.parametrize("module, args, words", [
    ("optuna", [], "netspec search needs optuna"),
    ("mlflow", ["--track"], "--track mlflow needs mlflow"),
])
def test_without_the_package_the_command_is_one_line_before_anything_trains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, module: str, args: list,
        words: str) -> None:
    import sys

    import runner

    path = _search(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # how Python marks a module unimportable
    assert runner.main(["search", str(path), "--out", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (tmp_path / "runs").exists()
