"""Sweeps on a local Ray (2 CPUs): the same folders and bit-identical numbers as the sequential run,
a worker killed mid-point is retried, a finished sweep submits nothing, and the default path never
imports Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import runner
from netspec.protocol.backend import load_backend
from netspec.sweeps.launchers import RayLauncher, train_point
from netspec.sweeps.sweep import run_sweep
from tests.helpers import tiny_experiment, write_json, write_spec

def is_timing(key: str) -> bool:
    """Fields that measure the machine, not the run (seconds, compile_seconds, images_per_s, ...): left out."""
    return "seconds" in key or key in ("images_per_s", "device")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two learning rates x two seeds = four one-epoch runs on torch."""
    root = tmp_path_factory.mktemp("ray_sweep")
    base = write_spec(root, tiny_experiment("base", epochs=1))
    return write_json(root / "lrs.json", {"version": 1, "name": "lrs", "base": base.name, "seeds": 2,
                                          "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01, 0.001]}]})


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not is_timing(k)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def results(runs: Path) -> dict[str, Any]:
    """Every run folder's metrics and history (timing left out), by its path under runs/."""
    return {str(p.parent.relative_to(runs)): {f: without_timing(json.loads((p.parent / f).read_text()))
                                              for f in ("metrics.json", "history.json")}
            for p in sorted(runs.glob("*/*/*/metrics.json"))}


def test_ray_sweep_equals_the_sequential_sweep_bit_for_bit(ray_local: Any, sweep: Path, tmp_path: Path) -> None:
    quiet: Callable[[str], None] = lambda line: None
    torch = [load_backend("torch")]
    run_sweep(sweep, torch, tmp_path / "sequential", device="cpu", log=quiet, progress=False)
    run_sweep(sweep, torch, tmp_path / "ray", device="cpu", log=quiet, progress=False, launcher=RayLauncher())
    sequential, on_ray = results(tmp_path / "sequential"), results(tmp_path / "ray")
    assert len(sequential) == 4
    assert on_ray == sequential  # same run ids (folders), same numbers to the last bit

    log: list[str] = []
    assert RayLauncher(task=_never_called).run([], tmp_path / "ray") == []
    run_sweep(sweep, torch, tmp_path / "ray", device="cpu", log=log.append, launcher=RayLauncher(task=_never_called))
    assert "ray: 4 of 4 runs already finished" in log[0] and "submitting 0" in log[0]


def _never_called(*args: Any) -> str:
    raise AssertionError("a finished run was submitted")


def crash_first_attempt(marker: Path) -> Callable[..., str]:
    """A task that kills its worker process on its first attempt (no cleanup, as a lost node) and
    trains normally when retried. A closure, so Ray ships it by value to the worker."""
    def task(*args: Any) -> str:
        if not marker.exists():
            marker.write_text("crashed once")
            os._exit(1)
        return train_point(*args)
    return task


def test_a_worker_killed_mid_point_is_retried(ray_local: Any, tmp_path: Path) -> None:
    base = write_spec(tmp_path, tiny_experiment("killed", epochs=1))
    path = write_json(tmp_path / "one.json", {"version": 1, "name": "one", "base": base.name,
                                              "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.01]}]})
    marker = tmp_path / "attempt"
    run_sweep(path, [load_backend("torch")], tmp_path / "runs", device="cpu", log=lambda line: None,
              launcher=RayLauncher(task=crash_first_attempt(marker), max_retries=2))
    assert marker.read_text() == "crashed once"
    assert len(list((tmp_path / "runs").glob("killed/torch/*/metrics.json"))) == 1


def test_the_default_launcher_never_imports_ray(sweep: Path, tmp_path: Path) -> None:
    code = ("import sys, runner; "
            f"assert runner.main([{str(sweep)!r}, '--out', {str(tmp_path)!r}, '--device', 'cpu', '--seeds', '1', "
            "'--set', 'data.train_size=300', '--set', 'data.val_size=100', '--set', 'data.test_size=100']) == 0; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert runner.main([str(sweep), "--launcher", "local", "--address", "x"]) == 2  # --address needs ray
