"""MLflow tracking: a run folder logged through --track reads back through MLflow's own client as its
history.json says, and logging it again (a rerun) updates the same MLflow run instead of adding one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="tracking needs netspec[track] (mlflow)")

import runner  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from netspec.errors import SetupError  # noqa: E402
from netspec.runs.tracking import EXPERIMENT, MlflowTracker, parse_track  # noqa: E402
from tests.helpers import tiny_experiment, write_spec  # noqa: E402


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_tracked_run_matches_its_history_and_a_rerun_adds_no_duplicate(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_experiment("tracked", epochs=2))
    out = tmp_path / "runs"
    for _ in range(2):  # the second invocation reuses the finished run and logs it again
        assert runner.main([str(spec), "--out", str(out), "--track"]) == 0
    uri = parse_track("mlflow", out)
    runs = _runs(uri)
    assert len(runs) == 1
    folder = next(out.glob("tracked/torch/*"))
    run = runs[0]
    assert run.data.tags["netspec.run_id"] == folder.name and folder.name in run.info.run_name
    history = json.loads((folder / "history.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    for field in ("train_loss", "val_acc"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, field))
        assert logged == [(row["epoch"], pytest.approx(row[field], rel=1e-12)) for row in history]
    assert json.loads(run.data.params["train.lr"]) == json.loads((folder / "spec.json").read_text())["train"]["lr"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "acc.png", "loss.png"} <= artifacts


def test_an_unreachable_server_is_one_line_before_training(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SetupError, match="no tracking server answers"):
        MlflowTracker(f"http://127.0.0.1:{port}")
    spec = write_spec(tmp_path, tiny_experiment("never", epochs=1))
    assert runner.main([str(spec), "--out", str(tmp_path / "runs"), "--track", f"mlflow=http://127.0.0.1:{port}"]) == 2
    assert not (tmp_path / "runs" / "never").exists()


@pytest.mark.slow
def test_a_real_tracking_server_on_localhost_gets_one_run_per_run_id(tmp_path: Path) -> None:
    """`mlflow server` started here on 127.0.0.1 (a bounded wait for it to answer), two invocations of one run."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not answer within 120 s")
                time.sleep(1)
        spec = write_spec(tmp_path, tiny_experiment("served", epochs=2))
        for _ in range(2):
            assert runner.main([str(spec), "--out", str(tmp_path / "runs"), "--track", f"mlflow={uri}"]) == 0
        runs = _runs(uri)
        folder = next((tmp_path / "runs").glob("served/torch/*"))
        assert [r.data.tags["netspec.run_id"] for r in runs] == [folder.name]
        history = json.loads((folder / "history.json").read_text())
        logged = MlflowClient(tracking_uri=uri).get_metric_history(runs[0].info.run_id, "val_loss")
        assert sorted((m.step, m.value) for m in logged) == [(r["epoch"], pytest.approx(r["val_loss"])) for r in history]
    finally:
        server.terminate()
        server.wait(timeout=30)
