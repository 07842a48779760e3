"""The first hour: an optional package a flag needs is checked before anything starts or is
written, in one line that names the pip extra; a sweep's missing base names the sweep file and its field."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Callable

import pytest

from netspec.cli import main
from netspec.errors import require
from netspec.errors import SetupError, SpecError
from netspec.spec.sweep_file import load_sweep
from tests.helpers import tiny_experiment, write_json, write_spec


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's only stderr line (an `error:` line), after checking nothing went to stdout: no run
    header, no table, nothing printed before the refusal."""
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert captured.out == ""
    return err[0]


def hide_by_sys_modules(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """None in sys.modules: how Python marks a module unimportable (import raises, find_spec is None)."""
    monkeypatch.setitem(sys.modules, module, None)


def hide_by_find_spec(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """find_spec answering None for the module, as on a machine without it (the module may be loaded here)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


HIDERS = [pytest.param(hide_by_sys_modules, id="sys.modules"), pytest.param(hide_by_find_spec, id="find_spec")]
Hider = Callable[[pytest.MonkeyPatch, str], None]


@pytest.mark.parametrize("hide", HIDERS)
@pytest.mark.parametrize("flags, module, line", [
    (["--tensorboard"], "tensorboardX",
     "error: --tensorboard needs tensorboardX, which is not installed; run: pip install 'netspec[tensorboard]'"),
    (["--launcher", "ray"], "ray",
     "error: --launcher ray needs ray, which is not installed; run: pip install 'netspec[ray]'"),
])
def test_train_refuses_a_missing_optional_package_before_any_output(
        flags: list[str], module: str, line: str, hide: Hider, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, tiny_experiment(epochs=1))
    out = tmp_path / "runs"
    hide(monkeypatch, module)
    assert main(["train", str(spec), "--out", str(out), *flags]) == 2
    assert one_error_line(capsys) == line
    assert not out.exists()


@pytest.mark.parametrize("hide", HIDERS)
def test_export_refuses_a_missing_onnx_before_reading_the_run(
        hide: Hider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The run folder does not exist: the package line comes first, before the run is even looked at.
    target = tmp_path / "out" / "model.onnx"
    hide(monkeypatch, "onnx")
    assert main(["export", str(tmp_path / "no-run"), "-o", str(target)]) == 2
    assert one_error_line(capsys) == ("error: ONNX export needs the onnx package, which is not installed; "
                                      "run: pip install 'netspec[export]'")
    assert not target.parent.exists()


def test_the_cli_line_is_the_one_the_export_and_tensorboard_modules_give(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Library callers (no CLI) still get the same line from the modules' own checks at import time."""
    from netspec.deploy.export import _onnx
    from netspec.runs.tensorboard import TensorBoardLog

    for module, extra, what, package, own_check in [
            ("tensorboardX", "tensorboard", "--tensorboard", None, lambda: TensorBoardLog(tmp_path / "run", 0)),
            ("onnx", "export", "ONNX export", "the onnx package", _onnx)]:
        hide_by_sys_modules(monkeypatch, module)
        with pytest.raises(SetupError) as from_cli:
            require(module, extra, what, package)
        with pytest.raises(SetupError) as from_module:
            own_check()
        assert str(from_cli.value) == str(from_module.value)
    assert not (tmp_path / "run").exists()


def test_require_passes_an_installed_package_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    require("json.tool", "none", "this test")  # installed with Python: no error
    assert "json.tool" not in sys.modules  # looked up, not imported


def test_a_sweeps_missing_base_names_the_sweep_file_and_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "sweeps"
    folder.mkdir()
    sweep = write_json(folder / "x.json", {"name": "x", "base": "bad/myres.json",
                                           "axes": [{"name": "lr", "paths": ["train.lr"], "values": [0.1]}]})
    out = tmp_path / "runs"
    assert main(["train", str(sweep), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    resolved = (folder / "bad" / "myres.json").resolve()
    assert line.startswith(f"error: {sweep}: base 'bad/myres.json' (resolved to {resolved}, relative to the sweep file): ")
    assert "cannot read the file" in line and line.endswith("; check the path")  # the read's own words kept
    assert not out.exists()


def test_a_sweeps_unreadable_variant_names_its_label(tmp_path: Path) -> None:
    good = write_spec(tmp_path, tiny_experiment("good"))
    (tmp_path / "broken.json").write_text("{not json")
    sweep = write_json(tmp_path / "v.json", {"name": "v", "variants": {"a": good.name, "b": "broken.json"}})
    with pytest.raises(SpecError) as err:
        load_sweep(sweep)
    assert str(err.value).startswith(f"{sweep}: variants.b 'broken.json' (resolved to {(tmp_path / 'broken.json').resolve()}")
    assert "malformed JSON at line 1" in str(err.value)  # the read's own words kept
