"""A damaged .npz, a refused report output and a too-deep --set value are each one line."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

import netspec as ns
from netspec.cli import main
from netspec.data import cache
from netspec.data.types import RawImages
from netspec.errors import DataError, NetspecError, SetupError, SpecError
from netspec.io import DamagedNpz, load_npz
from netspec.sweeps.sweep import write_report
from tests.helpers import tiny_experiment
from tests.sweeps.test_report_tables import finish_run

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def _damaged(tmp_path: Path) -> list[Path]:
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, a=np.arange(1000.0), b=np.ones((10, 10)))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [empty, truncated]


# ---- 1. a damaged .npz -------------------------------------------------------------------------

def test_a_damaged_npz_is_one_line_naming_the_file(tmp_path: Path) -> None:
    for path in _damaged(tmp_path):
        with pytest.raises(DamagedNpz) as info:
            load_npz(path, 2**30)
        message = str(info.value)
        assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
        assert "\n" not in message and message.startswith(f"{path}: damaged or truncated .npz (")
        assert "delete it and run the command again" in message


def test_a_missing_npz_is_still_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz", 2**30)


def _raw() -> RawImages:
    return RawImages(np.zeros((2, 3, 4, 4), np.uint8), np.array([0, 1]), np.zeros((1, 3, 4, 4), np.uint8),
                     np.array([1]), classes=["a", "b"], origin="test")


def test_a_damaged_cache_entry_is_ignored_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for damaged in _damaged(tmp_path):
        key = damaged.stem
        stderr = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        builds = []
        raw = cache.cached(tmp_path, key, lambda: builds.append(1) or _raw())
        assert builds == [1] and raw.origin == "test"
        lines = stderr.getvalue().strip().splitlines()
        assert len(lines) == 1 and f"damaged cache {damaged}" in lines[0] and "decoding the data again" in lines[0]
        again = cache.cached(tmp_path, key, lambda: pytest.fail("a rebuilt cache entry is read back"))
        assert again.classes == ["a", "b"] and np.array_equal(again.train_y, [0, 1])


# ---- 2. a refused report output ---------------------------------------------------------------

def _tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    finish_run(root, tiny_experiment().model_copy(update={"name": "good"}), "torch", seed=1)
    return root


def test_report_into_an_existing_folder_writes_nothing(runs: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(SpecError, match="a folder; -o names the report's file"):
        write_report(runs, out)
    assert main(["report", str(runs), "-o", str(out)]) == 2
    assert "a folder; -o names the report's file" in one_error_line(capsys)
    assert _tree(tmp_path) == before
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("report.md"))


@pytest.mark.parametrize("block", ["runs_csv_folder", "figures_file", "parent_file"])
def test_every_report_refusal_comes_before_the_first_write(runs: Path, tmp_path: Path, block: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "report.md"
    if block == "runs_csv_folder":
        (folder / "runs.csv").mkdir()
    elif block == "figures_file":
        (folder / "figures").write_text("not a folder")
    else:
        (tmp_path / "plain").write_text("a file")
        out = tmp_path / "plain" / "report.md"
    before = _tree(tmp_path)
    with pytest.raises(SetupError):
        write_report(runs, out)
    assert _tree(tmp_path) == before


# ---- 3. a too-deep --set value ----------------------------------------------------------------

DEEP = "train.lr=" + "[" * 10000 + "]" * 10000


def test_a_deep_set_value_is_one_line_through_load() -> None:
    with pytest.raises(SpecError) as info:
        ns.Experiment.load(ROOT / "specs" / "mlp.json", [DEEP])
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert "--set train.lr=" in message and "nested more than 32 levels deep" in message


def test_a_deep_set_value_is_one_line_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(ROOT / "specs" / "mlp.json"), "--set", DEEP]) == 2
    line = one_error_line(capsys)
    assert "--set train.lr=" in line and "nested more than 32 levels deep" in line


def test_set_values_up_to_the_bound_still_parse() -> None:
    from netspec.spec.overrides import MAX_SET_DEPTH, parse_value

    assert parse_value("[" * MAX_SET_DEPTH + "]" * MAX_SET_DEPTH) is not None
    assert parse_value('"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["') == "[" * 42  # inside a string: no nesting
    assert parse_value("0.01") == 0.01 and parse_value("adam") == "adam"
    with pytest.raises(NetspecError):
        parse_value("{" * 33 + "}" * 33, "x")
