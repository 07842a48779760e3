"""Progress on stderr, one line, no dependency: the trainer's epoch bar and the data loaders' ticker.

`ProgressLine` redraws a bar in place (on a terminal, unless told otherwise) and clears it when
done, so logs of batch jobs keep only the per-epoch summary lines. `track` wraps an iterable in one:
it redraws at most every `every_s` seconds and, when the whole took longer than that, leaves one
summary line (kept in logs too); short runs (tests) print nothing.
"""
from __future__ import annotations

import sys
import time
from typing import Iterator, Sequence, TextIO, TypeVar

T = TypeVar("T")


LINE_EVERY = 0.1
"""Off a terminal (a log file, a notebook), a long epoch writes a line per this fraction of it."""
LINES_MIN_STEPS = 100
"""...when it has this many steps at least (a real epoch; a test's few steps keep their one host read)..."""
LINES_AFTER_S = 5.0
"""...and has run this long: a fast epoch leaves only its summary line."""


class ProgressLine:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        tty = self.stream.isatty()
        self.enabled = tty if enabled is None else enabled
        # Off a terminal, unless told otherwise: whole lines at LINE_EVERY marks, decided by the step count
        # alone (never by timing), so the epoch's train_steps calls, and with them its numbers, are reproducible.
        self.lines = enabled is None and not tty and total >= LINES_MIN_STEPS
        self._next_line = LINE_EVERY
        self.start = time.perf_counter()

    def updates(self, most: int) -> int:
        """How many times an epoch should report: `most` for the bar, one per LINE_EVERY for lines, else 1."""
        return most if self.enabled else round(1 / LINE_EVERY) if self.lines else 1

    def update(self, done: int, text: str = "") -> None:
        if self.lines:
            self._line(done, text)
        if not self.enabled:
            return
        width = 24
        filled = int(width * done / max(self.total, 1))
        bar = "=" * filled + (">" if filled < width else "") + " " * max(width - filled - 1, 0)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {text}{self.eta(done)}\033[K")
        self.stream.flush()

    def _line(self, done: int, text: str) -> None:
        """'epoch 3/50: 30% (94/312) loss ... img/s, 12s so far ETA 0:28' once per LINE_EVERY crossed."""
        fraction = done / max(self.total, 1)
        if fraction + 1e-9 < self._next_line:
            return
        self._next_line = (int(fraction / LINE_EVERY + 1e-9) + 1) * LINE_EVERY
        if self.elapsed >= LINES_AFTER_S and done < self.total:
            self.stream.write(f"{self.label}: {fraction:.0%} ({done}/{self.total}) {text}, {self.elapsed:.0f}s so far"
                              f"{self.eta(done)}\n")
            self.stream.flush()

    def eta(self, done: int) -> str:
        """' ETA 1:05' from the mean pace so far ('' before the first step or after the last)."""
        if not 0 < done < self.total:
            return ""
        left = round(self.elapsed / done * (self.total - done))
        return f" ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}" if left >= 3600 else f" ETA {left // 60}:{left % 60:02d}"

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def track(items: Sequence[T], label: str, enabled: bool = True, every_s: float = 0.5, note: str = "",
          stream: TextIO | None = None) -> Iterator[T]:
    """Yield `items` with a `ProgressLine` redrawn every `every_s` seconds on a terminal; if `enabled`
    and the whole took `every_s` or more, end with 'label: N in 1.2s (note)' on a line of its own."""
    stream = stream or sys.stderr
    line = ProgressLine(len(items), label, stream, enabled=enabled and stream.isatty())
    last, drawn = line.start, False
    for i, item in enumerate(items):
        if line.enabled and time.perf_counter() - last >= every_s:
            line.update(i)
            last, drawn = time.perf_counter(), True
        yield item
    if drawn:
        line.close()
    seconds = line.elapsed
    if enabled and seconds >= every_s:
        stream.write(f"\r{label}: {len(items):,} in {seconds:.1f}s" + (f" ({note})" if note else "") + "\n")
        stream.flush()
