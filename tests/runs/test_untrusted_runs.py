"""Run folders, manifests, checkpoints and launches from elsewhere: every file read
back is validated by one schema per file kind (netspec.runs.records) and named in one line when it fails,
nothing blocks on a FIFO or allocates what a header declares, and launches refuse what can never run.
All without training: each test is milliseconds."""
from __future__ import annotations

import io
import json
import os
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

import netspec as ns
from netspec import io as nio
from netspec.runs import run_folder
from netspec.errors import DataError, NetspecError, SetupError, SpecError
from netspec.runs.run_folder import RunFolder, Trajectory
from netspec.training.history import EpochRecord
from netspec.training.trainer import TrainerState


@contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail rather than hang: what is checked here is that nothing blocks."""
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def lines() -> tuple[list[str], Any]:
    out: list[str] = []
    return out, out.append


# ---- FIFOs and sizes: nothing blocks, nothing allocates what a header declares -----------------------


def test_a_fifo_where_json_is_read_is_refused_without_blocking(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    os.mkfifo(folder / run_folder.METRICS)
    said, log = lines()
    with within(5):
        with pytest.raises(SpecError, match="a FIFO, not a file"):
            nio.read_json(folder / run_folder.METRICS)
        assert RunFolder(folder).read_metrics(log) is None
    assert len(said) == 1 and "metrics.json is damaged (a FIFO" in said[0]


def npz_declaring(shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("w.npy", header.getvalue() + b"\0" * 64)
    return out.getvalue()


def test_an_npz_member_declaring_2_40_floats_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    path.write_bytes(npz_declaring((2**40,)))
    with pytest.raises(ValueError, match=r"declares shape \(1099511627776,\) .* but its member holds 1"):
        nio.load_npz(path, 2**40)
    with pytest.raises(SpecError, match="declares shape"):
        ns.load_weights(path)


def test_a_huge_image_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from netspec.deploy.inference import read_image

    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(64 * 2**30)  # sparse: nothing is written
    with pytest.raises(DataError, match="huge.png: larger than"):
        read_image(path)


# ---- one schema per file kind -----------------------------------------------------------------------


def finished_folder(tmp_path: Path, **metrics: Any) -> RunFolder:
    folder = RunFolder(tmp_path / "run")
    history = [EpochRecord(1, 2.0, 0.3, 2.1, 0.25, 1e-3, 1.0, 100.0, 2.2, 0.2)]
    folder.write_history(history)
    folder.write_metrics({**folder.write_finished(history, {}), **metrics})
    return folder


@pytest.mark.parametrize("field, value, says", [
    ("test_acc", True, "test_acc: must be a number"), ("test_acc", "0.9", "test_acc: must be a number"),
    ("val_acc", 1.5, "val_acc: must be less than or equal to 1"), ("epochs", 0, "epochs: must be greater than"),
])
def test_metrics_of_the_wrong_type_or_range_are_never_coerced(tmp_path: Path, field: str, value: Any, says: str) -> None:
    folder = finished_folder(tmp_path, **{field: value})
    said, log = lines()
    assert folder.read_metrics(log) is None
    assert len(said) == 1 and says in said[0] and "metrics.json" in said[0]


def test_a_history_that_is_not_one_row_per_epoch_is_damaged(tmp_path: Path) -> None:
    folder = finished_folder(tmp_path)
    assert folder.read_metrics() is not None  # the valid folder reads
    (folder.path / run_folder.HISTORY_JSON).write_text("[1]")
    said, log = lines()
    assert folder.read_metrics(log) is None and "history.json" in said[0]


def checkpoint(tmp_path: Path, model: dict[str, np.ndarray], lr: float = 1e-3) -> RunFolder:
    record = EpochRecord(1, 2.0, 0.3, 2.1, 0.25, 1e-3, 1.0, 100.0, 2.2, 0.2)
    folder = RunFolder(tmp_path / "run")
    folder.write_checkpoint(TrainerState([record], 0.25, lr, None, None, model, None), Trajectory("trajectory", 2))
    return folder


def adam_state(moment: np.ndarray, step: Any = 3) -> dict[str, np.ndarray]:
    return {"0.weight": np.zeros((2, 3), np.float32), "adam.exp_avg.0.weight": moment,
            "adam.exp_avg_sq.0.weight": np.zeros((2, 3), np.float32), "adam.step": np.array(step),
            "0.bias": np.zeros(2, np.float32), "adam.exp_avg.0.bias": np.zeros(2, np.float32),
            "adam.exp_avg_sq.0.bias": np.zeros(2, np.float32), "rng.dropout": np.array([0, 3], np.int64)}


@pytest.mark.parametrize("state, lr, says", [
    (adam_state(np.zeros((3, 2), np.float32)), 1e-3, "does not fit the network (model.adam.exp_avg.0.weight has shape (3, 2)"),
    (adam_state(np.zeros((2, 3), np.float32), step=-5), 1e-3, "damaged checkpoint (model.adam.step is -5"),
    (adam_state(np.zeros((2, 3), np.float32)), -0.01, "lr: must be greater than or equal to 0"),
], ids=["transposed-moment", "negative-step", "negative-lr"])
def test_a_checkpoint_that_does_not_fit_is_not_trusted(tmp_path: Path, state: dict, lr: float, says: str) -> None:
    assert checkpoint(tmp_path / "good", adam_state(np.zeros((2, 3), np.float32))).read_checkpoint() is not None
    said, log = lines()
    assert checkpoint(tmp_path, state, lr).read_checkpoint(log) is None
    assert len(said) == 1 and says in said[0] and "checkpoint.npz" in said[0] and "not trusted" in said[0]


def test_a_checkpoint_of_another_network_is_not_trusted(tmp_path: Path) -> None:
    network = ns.Network(input_shape=(3,), layers=[ns.Linear(out_features=2)])  # 0.weight is (2, 3)
    assert checkpoint(tmp_path / "ok", adam_state(np.zeros((2, 3), np.float32))).read_checkpoint(network=network)
    other = ns.Network(input_shape=(4,), layers=[ns.Linear(out_features=2)])
    said, log = lines()
    assert checkpoint(tmp_path, adam_state(np.zeros((2, 3), np.float32))).read_checkpoint(log, other) is None
    assert "model.0.weight has shape (2, 3), the network's is (2, 4)" in said[0]


@pytest.mark.parametrize("change, says", [
    ({"scale": [0.0, 1.0, 1.0]}, "scale: 0: must be greater than 0"),
    ({"shift": [1.0, 1.0], "scale": [1.0, 1.0]}, "images have 3 channels"),
    ({"classes": []}, "classes"),
])
def test_a_bad_preprocess_json_is_refused_in_one_line(tmp_path: Path, change: dict, says: str) -> None:
    from netspec.deploy.inference import read_preprocess

    content = {"classes": ["a", "b"], "shift": [1.0, 2.0, 3.0], "scale": [4.0, 5.0, 6.0], **change}
    (tmp_path / run_folder.PREPROCESS).write_text(json.dumps(content))
    with pytest.raises(DataError) as err:
        read_preprocess(tmp_path, ns.DataConfig())
    assert says in str(err.value) and "preprocess.json" in str(err.value) and "\n" not in str(err.value)


def test_a_16_bit_png_is_scaled_not_clipped() -> None:
    from netspec.data.images import decode_image

    values = (np.arange(32 * 32).reshape(32, 32) * 63).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    pixels = decode_image(buffer.getvalue())
    assert np.array_equal(pixels[:, :, 0], np.round(values / 257).astype(np.uint8))  # 65535 -> 255, linearly
    assert np.array_equal(pixels[:, :, 0], pixels[:, :, 2])


@pytest.mark.parametrize("text, says", [
    ('{"name": "a", "name": "b"}', "the key 'name' appears twice"),
    ('{"description": "\\ud800"}', "a lone surrogate"),
])
def test_json_a_guess_would_decide_is_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(SpecError, match=says):
        nio.read_json(path)


def test_a_manifest_is_validated_before_the_report_uses_it(tmp_path: Path) -> None:
    from netspec.sweeps.report_runs import read_manifests

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    good = {"name": "s", "backends": ["torch"], "points": []}
    for name, content in {"good": good, "nobackends": {**good, "backends": []}, "escape": {**good, "backends": ["../../x"]},
                          "points": {**good, "points": [1, "two", None]}}.items():
        (sweeps / f"{name}.json").write_text(json.dumps(content))
    said, log = lines()
    assert [m["name"] for m in read_manifests(tmp_path, log)] == ["s"]
    assert len(said) == 3 and all("left out of the report" in line for line in said)


# ---- sweeps and launches ------------------------------------------------------------------------------


def test_sweeps_refuse_what_trains_nothing_or_merges_runs(tmp_path: Path) -> None:
    from netspec.sweeps.sweep import SweepSpec, seed_list, with_seed

    with pytest.raises(ValueError, match="seeds"):
        SweepSpec(name="s", base="b.json", seeds=[])
    with pytest.raises(ValueError, match="axis name 'x' is used twice"):
        SweepSpec(name="s", base="b.json", axes=[{"name": "x", "paths": ["train.lr"], "values": [1]},
                                                 {"name": "x", "paths": ["train.seed"], "values": [1]}])
    with pytest.raises(SpecError, match="more than the 10,000"):
        seed_list(100_000)
    experiment = ns.Experiment(network=ns.Network(input_shape=(3,), layers=[ns.Linear(out_features=2)]),
                               train=ns.TrainConfig(shuffle_seed=2**32 - 1))
    with pytest.raises(SpecError, match="train.shuffle_seed 4,294,967,296, past the largest seed"):
        with_seed(experiment, 1)


def test_out_is_never_a_file_a_source_tree_or_a_specs_folder(tmp_path: Path) -> None:
    from netspec.runs.run_folder import check_output_root

    (tmp_path / "afile").write_text("x")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pyproject.toml").write_text("")
    (tmp_path / "specs" / "sweeps").mkdir(parents=True)
    (tmp_path / "specs" / "sweeps" / "sw.json").write_text(json.dumps({"name": "sw", "base": "../m.json", "axes": []}))
    (tmp_path / "runs" / "sweeps").mkdir(parents=True)
    (tmp_path / "runs" / "sweeps" / "sw.json").write_text(json.dumps({"name": "sw", "backends": ["torch"], "points": [],
                                                                         "axes": ["lr"]}))
    for bad, says in (("afile", "a file where"), ("src", "source tree"), ("specs", "a folder of specs")):
        with pytest.raises(SetupError, match=says):
            check_output_root(tmp_path / bad)
    check_output_root(tmp_path / "runs")  # a folder of runs, with its manifest
    check_output_root(tmp_path / "new")


def test_a_sweep_never_overwrites_a_file_that_is_not_its_manifest(tmp_path: Path) -> None:
    from netspec.sweeps.sweep import SweepSpec, record_invocation

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "sw.json").write_text("notes")
    with pytest.raises(SpecError, match="not a sweep manifest netspec wrote"):
        record_invocation(tmp_path, SweepSpec(name="sw", base="b.json"), [], [], [])
    assert (tmp_path / "sweeps" / "sw.json").read_text() == "notes"


def test_launches_that_could_never_run_are_refused_before_submitting() -> None:
    from netspec.sweeps.launchers import check_fits, make_launcher, reachable

    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(NetspecError, match="--gpus-per-run"):
            make_launcher("ray", gpus_per_run=bad)
    with within(15):
        with pytest.raises(SetupError, match="--address 127.0.0.1:1: no Ray cluster answers"):
            reachable("127.0.0.1:1")
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}]
    check_fits(0.5, 1.0, nodes)
    check_fits(2.0, 1.0, nodes)
    with pytest.raises(SetupError, match="no node of the Ray cluster has 1e\\+06 GPU"):
        check_fits(1e6, 1.0, nodes)


def test_the_memory_check_counts_the_real_batch() -> None:
    from netspec.spec.params import check_memory

    from netspec.spec.params import training_bytes

    network = ns.Network(input_shape=(3, 32, 32), layers=[ns.Conv2d(out_channels=100_000, kernel_size=3, padding=1)])
    one_image, _ = training_bytes(network, 1)
    check_memory(network, 1, available=2 * one_image)  # room for a batch of one image, not of 50
    with pytest.raises(SpecError, match="activations of a batch of 50"):
        check_memory(network, 50, available=2 * one_image)


def test_a_damaged_data_cache_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from netspec.data.cache import cached
    from netspec.data.types import RawImages

    def build() -> RawImages:
        x = np.zeros((2, 3, 32, 32), np.uint8)
        return RawImages(x, np.array([0, 1]), x, np.array([1, 0]), classes=["a", "b"], origin="test")

    cached(tmp_path, "k", build)
    for damage in (lambda b: b[:100], lambda b: b""):
        path = tmp_path / "k.npz"
        path.write_bytes(damage(path.read_bytes()))
        assert cached(tmp_path, "k", build).classes == ["a", "b"]
        assert "damaged cache" in capsys.readouterr().err
        assert cached(tmp_path, "k", lambda: pytest.fail("not rebuilt: read back")).origin == "test"


def test_report_into_an_existing_folder_writes_nothing(tmp_path: Path) -> None:
    from netspec.sweeps.sweep import write_report

    (tmp_path / "runs" / "x").mkdir(parents=True)
    with pytest.raises(SpecError, match="a folder; -o names the report's file"):
        write_report(tmp_path / "runs", tmp_path / "runs" / "x")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["x"]
