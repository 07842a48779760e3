"""What a resumed or repeated run keeps: a resumed run's TensorBoard events are not
purged from step 1, an extension starts from the longest finished run of its trajectory (the epochs
trained are counted), and every output file's mode follows the umask (never mkstemp's 0600).

The events are read as TensorBoard reads them: a file's SessionLog START at step s drops the events at
steps >= s of the files written before it (tensorboardX's purge_step), so what a reader shows is checked,
not only what is on disk.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.runs import tensorboard
from netspec.runs.run_folder import run_dir
from tests.helpers import tiny_experiment, write_spec

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2", reason="--tensorboard needs tensorboardX")


def shown_steps(folder: Path, tag: str = "val/acc") -> list[int]:
    """The steps of `tag` TensorBoard shows, its purge rule applied file by file in the order written."""
    shown: list[int] = []
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                shown = [s for s in shown if s < event.step]
            shown += [event.step for v in event.summary.value if v.tag == tag]
    return shown


def train(spec: Path, out: Path, *extra: str) -> int:
    return main([str(spec), "--out", str(out), "--device", "cpu", "--tensorboard", *extra])


class Killed(Exception):
    """Stands for a kill after an epoch's checkpoint and events."""


def test_a_resumed_runs_events_keep_the_epochs_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = tiny_experiment(epochs=4)
    spec = write_spec(tmp_path, experiment)
    original = tensorboard.TensorBoardLog.epoch

    def killed_after_epoch_2(self, record):
        original(self, record)
        if record.epoch == 2:
            raise Killed
    monkeypatch.setattr(tensorboard.TensorBoardLog, "epoch", killed_after_epoch_2)
    with pytest.raises(Killed):
        train(spec, tmp_path / "runs")
    monkeypatch.setattr(tensorboard.TensorBoardLog, "epoch", original)
    assert train(spec, tmp_path / "runs") == 0
    assert shown_steps(run_dir(tmp_path / "runs", experiment, "torch") / "tensorboard") == [1, 2, 3, 4]


def test_an_extension_starts_from_the_longest_finished_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment(epochs=1))
    for epochs in ("1", "3"):
        assert train(spec, tmp_path / "runs", "--epochs", epochs) == 0
    trained: list[int] = []
    original = tensorboard.TensorBoardLog.epoch
    monkeypatch.setattr(tensorboard.TensorBoardLog, "epoch", lambda self, r: (trained.append(r.epoch), original(self, r))[1])
    capsys.readouterr()
    assert train(spec, tmp_path / "runs", "--epochs", "4") == 0
    assert trained == [4], f"epochs trained to extend to 4: {trained} (from the 3-epoch run, one epoch)"
    assert "(3 epochs) to 4 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_every_output_file_follows_the_umask(tmp_path: Path, umask: int) -> None:
    experiment = tiny_experiment(epochs=1)
    spec = write_spec(tmp_path, experiment)
    old = os.umask(umask)
    try:
        assert train(spec, tmp_path / "runs") == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert len(files) > 8
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o666 & ~umask}
    assert not wrong, f"modes other than {oct(0o666 & ~umask)} under umask {oct(umask)}: {wrong}"
