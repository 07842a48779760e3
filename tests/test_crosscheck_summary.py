"""Issue 35: lr.png's lr axis is logarithmic when every lr is positive; crosscheck prints a summary
first (the full table with --verbose), and a reported row that does not fail says why it is tolerated."""
from __future__ import annotations

from pathlib import Path


from netspec.runs.lr_plot import lr_figure
from netspec.spec.experiment import TrainConfig
from netspec.train.trainer import EpochRecord

ROOT = Path(__file__).resolve().parent.parent


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
