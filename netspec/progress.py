"""A one-line progress display on stderr (no dependency): redrawn in place on a terminal, silent
otherwise, so logs of batch jobs keep only the per-epoch summary lines."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def update(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * done / max(self.total, 1))
        bar = "=" * filled + (">" if filled < width else "") + " " * max(width - filled - 1, 0)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {text}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
