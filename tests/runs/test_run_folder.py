"""RunFolder's promises on the scripted backend: atomic files with unique temporary
names, strict JSON, damaged files detected in one line and rebuilt, one process per run (the lock)."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import netspec as ns
from netspec.runs import checkpoint
from netspec.runs.run_folder import CHECKPOINT, HISTORY_JSON, METRICS, WEIGHTS, RunFolder, write_json_atomic
from netspec.training.trainer import fit
from netspec.runs.training_run import run_experiment
from tests.scripted import Script, ScriptedBackend, ScriptedModel, scripted_data

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
SCRIPT = Script(step_losses=[4.0, 3.0, 2.0, 1.0], step_accs=[0.25, 0.5, 0.5, 0.75],
                val=[(1.0, 0.25), (1.0, 0.5), (1.0, 0.5), (1.0, 0.25)], test=[(2.0, 0.1), (2.0, 0.2), (2.0, 0.3), (2.0, 0.4)])


def experiment(epochs: int = EPOCHS) -> ns.Experiment:
    network = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])
    return ns.Experiment(name="scripted", network=network, train=ns.TrainConfig(batch_size=4, epochs=epochs, eval_batch_size=4))


def run(root: Path, script: Script = SCRIPT, force: bool = False, epochs: int = EPOCHS) -> tuple[ScriptedBackend, list[str]]:
    """One scripted run into root; returns the backend (its last model's record) and the log lines."""
    backend, lines = ScriptedBackend(script), []
    run_experiment(experiment(epochs), backend, root, dataset=scripted_data(4, 2, 2), log=lines.append, progress=False,
                   force=force)
    return backend, lines


def folder(root: Path) -> Path:
    return RunFolder.of(root, experiment(), "scripted").path


def contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.suffix != ".png"}


def test_files_are_strict_json_and_metrics_is_marked_finished(tmp_path: Path) -> None:
    run(tmp_path)
    for name in (METRICS, HISTORY_JSON, "spec.json", "env.json"):
        json.loads((folder(tmp_path) / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))
    metrics = json.loads((folder(tmp_path) / METRICS).read_text())
    assert metrics["status"] == "finished" and metrics["epochs"] == EPOCHS
    assert not list(folder(tmp_path).glob(".*.tmp"))
    write_json_atomic(tmp_path / "x.json", {"a": math.nan, "b": [np.float32(1.5), math.inf]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.5, None]}


def test_two_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    target, errors = tmp_path / "shared.json", []

    def writer(tag: int) -> None:
        try:
            for i in range(100):
                write_json_atomic(target, {"writer": tag, "i": i, "pad": "x" * 5000})
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(target.read_text())["i"] == 99  # whole, never interleaved
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_metrics_is_one_line_and_rebuilt_from_the_checkpoint(tmp_path: Path, damage: str) -> None:
    run(tmp_path)
    before = contents(folder(tmp_path))
    path = folder(tmp_path) / METRICS
    path.write_bytes({"garbage": b"\x00\xffnot json", "truncated": before[METRICS][:40], "empty": b""}[damage])
    backend, lines = run(tmp_path)
    assert [line for line in lines if "not taken as done" in line] == [f"{folder(tmp_path)}: {METRICS} is damaged" + lines[0].split("is damaged")[1]]
    assert any("resuming" in line and f"after epoch {EPOCHS}" in line for line in lines)
    assert backend.model is not None and backend.model.train_calls == []  # nothing trained again
    after = contents(folder(tmp_path))
    strip = lambda m: {k: v for k, v in json.loads(m).items() if k not in ("epoch_seconds", "median_epoch_seconds", "compile_seconds")}
    assert strip(after.pop(METRICS)) == strip(before.pop(METRICS)) and after == before


def test_damaged_history_means_not_finished(tmp_path: Path) -> None:
    run(tmp_path)
    (folder(tmp_path) / HISTORY_JSON).write_text("[{")
    assert RunFolder(folder(tmp_path)).read_metrics() is None
    _, lines = run(tmp_path)
    assert any(f"{HISTORY_JSON} is damaged" in line for line in lines)
    assert len(json.loads((folder(tmp_path) / HISTORY_JSON).read_text())) == EPOCHS


def test_damaged_checkpoint_is_one_line_and_the_run_starts_over(tmp_path: Path) -> None:
    run(tmp_path)
    reference = contents(folder(tmp_path))
    (folder(tmp_path) / METRICS).unlink()
    checkpoint = folder(tmp_path) / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    backend, lines = run(tmp_path)
    assert sum("damaged checkpoint" in line for line in lines) == 1
    assert backend.model is not None and len(backend.model.train_calls) == EPOCHS  # trained again from epoch 1
    assert contents(folder(tmp_path))[WEIGHTS] == reference[WEIGHTS]
    rebuilt = RunFolder(folder(tmp_path)).read_checkpoint()
    assert rebuilt is not None and rebuilt.state.epoch == EPOCHS


def test_fit_goes_on_from_a_state_as_if_never_stopped(tmp_path: Path) -> None:
    experiment_, data = experiment(), scripted_data(4, 2, 2)
    states: list[Any] = []
    whole = fit(ScriptedModel(experiment_.network, SCRIPT), experiment_, data, on_epoch=lambda s, best: states.append(s),
                log=lambda line: None)
    for stop in range(1, EPOCHS):
        path = tmp_path / f"after-{stop}.npz"  # through the checkpoint's bytes and back
        path.write_bytes(checkpoint.encode(checkpoint.Checkpoint(states[stop - 1], "trajectory", EPOCHS)))
        state = checkpoint.load(path, experiment_.network).state
        model = ScriptedModel(experiment_.network, SCRIPT)
        resumed = fit(model, experiment_, data, log=lambda line: None, state=state)
        untimed = lambda history: [dataclasses.replace(r, seconds=0.0, images_per_s=0.0) for r in history]
        assert untimed(resumed) == untimed(whole) and resumed[:stop] == whole[:stop]
        assert [c.epoch for c in model.train_calls] == list(range(stop + 1, EPOCHS + 1))


def test_a_diverged_scripted_run_is_recorded_and_never_a_result(tmp_path: Path) -> None:
    script = Script(step_losses=[4.0, math.nan, 2.0, 1.0], step_accs=SCRIPT.step_accs, val=SCRIPT.val, test=SCRIPT.test)
    with pytest.raises(ns.errors.DivergedError, match="training loss nan in epoch 2 of 4") as err:
        run(tmp_path, script)
    assert err.value.exit_code == 3
    metrics = json.loads((folder(tmp_path) / METRICS).read_text())
    assert {k: metrics[k] for k in ("status", "epoch", "epochs_done")} == {"status": "diverged", "epoch": 2, "epochs_done": 1}
    assert "test_acc" not in metrics


HOLDER = """
import sys, time
from netspec.runs.training_run import run_experiment
from tests.runs.test_run_folder import SCRIPT, experiment
from tests.scripted import ScriptedBackend, scripted_data
run_experiment(experiment(), ScriptedBackend(SCRIPT), sys.argv[1], dataset=scripted_data(4, 2, 2), progress=False,
               log=lambda line: time.sleep(0.4))  # slow: 4 epochs of 0.4 s
"""


def test_a_second_process_waits_for_the_holder_and_reuses_its_run(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO)
    info = tmp_path / ".locks" / "scripted" / "scripted" / f"{folder(tmp_path).name}.lock.holder"
    deadline = time.monotonic() + 60
    while not info.exists():
        assert holder.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    backend, lines = run(tmp_path)
    assert holder.wait() == 0
    assert lines[0].startswith(f"waiting for run {folder(tmp_path)}: process {holder.pid} on ")
    assert any("reusing it" in line for line in lines) and backend.model is None  # not trained twice


def test_force_replaces_the_run_only_when_finished(tmp_path: Path) -> None:
    run(tmp_path)
    stale = folder(tmp_path).with_name(folder(tmp_path).name + ".attempt-dead")
    stale.mkdir()
    backend, _ = run(tmp_path, force=True)
    assert backend.model is not None and len(backend.model.train_calls) == EPOCHS
    assert not stale.exists() and sorted(p.name for p in folder(tmp_path).parent.iterdir() if p.is_dir()) == [folder(tmp_path).name]
    assert RunFolder(folder(tmp_path)).read_metrics() is not None


def test_a_swap_killed_halfway_is_recovered(tmp_path: Path) -> None:
    run(tmp_path)
    before = contents(folder(tmp_path))
    folder(tmp_path).rename(folder(tmp_path).with_name(folder(tmp_path).name + ".old-dead"))  # killed between the renames
    attempt = folder(tmp_path).with_name(folder(tmp_path).name + ".attempt-half")
    attempt.mkdir()  # an attempt that never finished
    backend, lines = run(tmp_path)
    assert any("restored the finished run" in line for line in lines) and backend.model is None
    assert contents(folder(tmp_path)) == before
