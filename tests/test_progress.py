"""The progress line's ETA (netspec/progress.py)."""
from __future__ import annotations

import io

from netspec.progress import ProgressLine


def test_the_eta_is_the_mean_pace_times_the_steps_left() -> None:
    stream = io.StringIO()
    line = ProgressLine(10, "epoch 1/1", stream, enabled=True)
    line.start -= 30.0  # 30 s for 4 of 10 steps: 7.5 s a step, 6 steps (45 s) to go
    line.update(4, "loss 1.0")
    assert stream.getvalue().startswith("\repoch 1/1 [")
    assert "4/10 loss 1.0 ETA 0:45" in stream.getvalue()


def test_an_hour_or_more_shows_hours_and_no_eta_before_the_first_step_or_at_the_end() -> None:
    line = ProgressLine(3, "x", io.StringIO(), enabled=True)
    line.start -= 3700.0
    assert line.eta(1) == " ETA 2:03:20"
    assert line.eta(0) == "" and line.eta(3) == ""
