"""--tensorboard writes one scalar per figure per epoch into the run folder; without it, nothing."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.runs.run_folder import run_dir
from tests.helpers import tiny_experiment, write_spec

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under folder (TFRecord: length, its crc, the record, its crc)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_every_epoch_and_figure_reaches_tensorboard(tmp_path: Path) -> None:
    experiment = tiny_experiment(epochs=3)
    spec = write_spec(tmp_path, experiment)
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--device", "cpu", "--tensorboard"]) == 0
    folder = run_dir(tmp_path / "runs", experiment, "torch")
    found = scalars(folder / "tensorboard")
    history = json.loads((folder / "history.json").read_text())
    assert [step for step, _ in found["val/acc"]] == [1, 2, 3]
    assert [v for _, v in found["train/loss"]] == pytest.approx([r["train_loss"] for r in history], rel=1e-6)
    tested = [r["epoch"] for r in history if r["test_acc"] is not None]
    assert [step for step, _ in found["test/acc"]] == tested  # only the epochs that evaluated the test split


def test_without_the_flag_no_event_files_are_written(tmp_path: Path) -> None:
    experiment = tiny_experiment(epochs=1)
    spec = write_spec(tmp_path, experiment)
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--device", "cpu"]) == 0
    assert not (run_dir(tmp_path / "runs", experiment, "torch") / "tensorboard").exists()
