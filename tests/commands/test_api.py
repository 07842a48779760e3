"""ns.train: the Python API (netspec/api.py): one-line errors with pydantic's details, the CLI's thread
rule, tiny runs, the result object, and figures that leave the user's matplotlib backend alone."""
from __future__ import annotations

import json

import pytest

import netspec as ns

SPEC = "specs/mlp.json"
SYNTHETIC = ["data.source=synthetic"]


def test_a_typo_is_one_line_with_did_you_mean_and_pydantic_details(tmp_path) -> None:
    with pytest.raises(ns.SpecError) as caught:
        ns.train(SPEC, overrides=["train.lrr=0.1"], out=tmp_path)
    assert "unknown field 'lrr' (did you mean 'lr'?)" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert [(d["type"], d["loc"]) for d in caught.value.details] == [("extra_forbidden", ("train", "lrr"))]
    assert not any(tmp_path.iterdir())  # nothing written for bad input


def test_an_unknown_backend_names_the_closest() -> None:
    with pytest.raises(ns.SpecError, match=r"unknown \(did you mean 'torch'\?\)"):
        ns.train(SPEC, backend="trch")


def test_train_returns_the_run_with_the_cli_thread_rule_and_the_users_backend_kept(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("svg")  # a user's own backend: a run must not switch it to Agg
    lines: list[str] = []
    result = ns.train(SPEC, tiny=True, epochs=1, overrides=SYNTHETIC, out=tmp_path, threads=1, log=lines.append)
    assert matplotlib.get_backend() == "svg"
    assert torch.get_num_threads() == 1
    assert any("2,000 train / 500 val / 500 test images" in line for line in lines)
    assert result.folder.parent.parent.parent == tmp_path and result.backend == "torch"
    on_disk = json.loads((result.folder / "metrics.json").read_text())
    assert result.metrics["test_acc"] == on_disk["test_acc"] == result.test_acc
    assert [r.epoch for r in result.history] == [1]
    assert result.history[0].test_acc == on_disk["test_acc"]  # epoch 1 is the best: its test is the final test
    assert (result.folder / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.experiment.train.epochs == 1
    again = ns.train(SPEC, tiny=True, epochs=1, overrides=SYNTHETIC, out=tmp_path, log=lines.append)
    assert again.folder == result.folder and any("reusing it" in line for line in lines)


@pytest.mark.slow  # a jax compile: about 7 s
def test_a_run_continued_on_another_backend_has_a_median_per_backend_and_marks_the_switch(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    import netspec.runs.plots as plots

    figures: list = []
    real = plots.curves_figure
    monkeypatch.setattr(plots, "curves_figure", lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    options = dict(tiny=True, overrides=SYNTHETIC, out=tmp_path, log=lambda _: None)
    first = ns.train(SPEC, backend="torch", epochs=1, **options)
    figures.clear()
    continued = ns.train(SPEC, backend="jax", epochs=3, source=first.folder, **options)
    seconds = [r.seconds for r in continued.history]
    assert seconds[0] == first.history[0].seconds  # the torch epoch, carried over in the checkpoint
    by_backend = continued.metrics["median_epoch_seconds_by_backend"]
    assert by_backend == {"torch": pytest.approx(seconds[0]), "jax": pytest.approx(sorted(seconds[1:])[0] / 2 + sorted(seconds[1:])[1] / 2)}
    marks = [line for line in figures[0].axes[0].lines if line.get_label() == "torch -> jax (after epoch 1)"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1.5, 1.5]


def test_train_is_a_plain_function_beside_the_training_room() -> None:
    """ns.train is netspec.api.train itself (help() and signature() see its parameters), and the training
    loop's room keeps its own name, netspec.training."""
    import inspect

    import netspec.training.trainer  # noqa: F401
    from netspec import api

    assert ns.train is api.train and "backend" in inspect.signature(ns.train).parameters
