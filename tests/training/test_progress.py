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


def test_off_a_terminal_a_long_epoch_writes_a_line_per_tenth() -> None:
    stream = io.StringIO()  # not a terminal, as a log file
    line = ProgressLine(200, "epoch 2/5", stream)
    assert (line.enabled, line.lines, line.updates(20)) == (False, True, 10)
    line.start -= 10.0
    for done in (10, 20, 50, 60, 200):  # 5% (no mark yet), 10%, 25% (past 20%), 30%, the end (its own summary)
        line.update(done, "loss 0.5")
    written = stream.getvalue().splitlines()
    assert [w.split(" loss")[0] for w in written] == ["epoch 2/5: 10% (20/200)", "epoch 2/5: 25% (50/200)",
                                                      "epoch 2/5: 30% (60/200)"]
    assert all(w.endswith(tuple(f"ETA {m}" for m in ("1:30", "0:30", "0:23"))) for w in written)
    assert "\r" not in stream.getvalue()


def test_a_short_or_fast_epoch_off_a_terminal_stays_quiet() -> None:
    few = ProgressLine(99, "e", io.StringIO())
    assert (few.lines, few.updates(20)) == (False, 1)  # one train_steps call: a test's numbers unchanged
    fast_stream = io.StringIO()
    fast = ProgressLine(200, "e", fast_stream)
    for done in range(20, 201, 20):
        fast.update(done)
    assert fast_stream.getvalue() == ""  # under LINES_AFTER_S: only the epoch's summary line will say it
    assert ProgressLine(500, "e", io.StringIO(), enabled=False).lines is False  # progress=False: nothing
