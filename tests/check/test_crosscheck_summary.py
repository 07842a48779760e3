"""The lr axis of lr.png is logarithmic when every lr is positive; crosscheck prints a summary
first (the full table with --verbose), and a reported row that does not fail says why it is tolerated."""
from __future__ import annotations

from pathlib import Path

import pytest


from netspec.runs.lr_plot import lr_figure
from netspec.spec.experiment import TrainConfig
from netspec.training.history import EpochRecord

ROOT = Path(__file__).resolve().parents[2]


def _history(epochs: int) -> list[EpochRecord]:
    return [EpochRecord(e, 1.0, 0.5, 1.0, 0.5, 1e-3, 1.0, 1.0) for e in range(1, epochs + 1)]


def _yscale(config: TrainConfig, epochs: int = 4) -> str:
    from netspec.runs.plots import pyplot
    fig = lr_figure(_history(epochs), config, steps_per_epoch=5, title="t")
    try:
        return fig.axes[0].get_yscale()
    finally:
        pyplot().close(fig)


def test_the_lr_axis_is_logarithmic_when_every_lr_is_positive() -> None:
    assert _yscale(TrainConfig(lr=0.1, schedule={"type": "onecycle"})) == "log"
    assert _yscale(TrainConfig(lr=0.1, schedule={"type": "constant"})) == "log"


def test_a_schedule_that_reaches_zero_keeps_a_linear_axis() -> None:
    page = TrainConfig(lr=0.4, epochs=4, schedule={"type": "piecewise_linear", "knots": [[0, 0], [2, 1], [4, 0]]})
    assert _yscale(page) == "linear"


# ---- crosscheck: summary first, --verbose for the table, a reason on each tolerated row ----

SMALL_LAYERS = [{"type": "Conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}, {"type": "BatchNorm"},
                {"type": "ReLU"}, {"type": "Flatten"}, {"type": "Linear", "out_features": 4}]


def _small() -> "object":
    import netspec as ns
    return ns.Network.model_validate({"input_shape": [2, 4, 4], "layers": SMALL_LAYERS})


@pytest.fixture(scope="module")
def report() -> "object":
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from netspec.check.crosscheck import run_crosscheck
    from netspec.protocol.backend import load_backend
    return run_crosscheck(_small(), load_backend("torch"), load_backend("jax"), steps=2)


def test_the_summary_starts_with_the_verdict_and_is_far_shorter_than_the_table(report) -> None:
    summary, table = report.summary().splitlines(), report.table().splitlines()
    assert report.ok
    assert summary[0].startswith("crosscheck PASSED: jax against torch, ")
    assert f"{len(report.rows)} rows compared" in summary[0]
    assert len(summary) * 4 <= len(table)
    assert any(line.lstrip().startswith("float64 worst") for line in summary)
    assert any(line.lstrip().startswith("float32 worst") for line in summary)
    assert any(line.lstrip().startswith("float32 reported") and "tolerated: " in line for line in summary)


def test_a_tolerated_row_carries_its_reason(report) -> None:
    from netspec.check.crosscheck import BIAS_BEFORE_BATCHNORM, FLOAT32_STEPS
    reported = [row for row in report.rows if not row.asserted]
    assert reported and all(row.reason for row in reported)
    assert all(not row.reason for row in report.rows if row.asserted)
    by_tensor = {row.tensor: row.reason for row in reported}
    assert by_tensor["0.bias"] == BIAS_BEFORE_BATCHNORM  # a conv bias before BatchNorm
    assert by_tensor["4.bias"] == FLOAT32_STEPS  # the last Linear's bias reaches the output
    assert BIAS_BEFORE_BATCHNORM in report.table()


def test_a_failing_summary_says_failed_and_lists_the_failing_rows() -> None:
    import math
    from netspec.check.crosscheck import CrosscheckReport, Row
    report = CrosscheckReport("cross-check jax against torch: title", [
        Row("float64", "loss", "", 1e-16, 1e-16, 1e-9),
        Row("float64", "grad", "0.weight", 1e-3, 1e-2, 1e-9),
        Row("float32", "after 2 steps", "0.bias", 1e-1, 1.0, math.inf, "why"),
    ])
    lines = report.summary().splitlines()
    assert lines[0].startswith("crosscheck FAILED (1 of 2 asserted rows): jax against torch, 3 rows compared")
    assert any(line.lstrip().startswith("FAIL") and "float64 grad 0.weight" in line for line in lines)
    assert any("tolerated: why" in line for line in lines)


def test_cli_prints_the_summary_by_default_and_the_table_with_verbose(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    import netspec as ns
    from netspec.cli import main
    spec = tmp_path / "small.json"
    ns.Experiment(name="small", network=_small()).save(spec)
    assert main(["crosscheck", str(spec)]) == 0
    default = capsys.readouterr().out
    assert default.startswith("crosscheck PASSED") and "--verbose" in default and "max abs" not in default
    assert main(["crosscheck", str(spec), "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert "max abs" in verbose and "tolerated because" in verbose and "float64  eval logits" in verbose
    assert len(verbose.splitlines()) > 3 * len(default.splitlines())
