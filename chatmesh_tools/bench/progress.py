"""A one-line progress bar on stderr (redrawn in place on a terminal, a line every few seconds otherwise)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: float, unit: str = "") -> None:
        self.label = label
        self.total = max(total, 1e-9)
        self.unit = unit
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: float, note: str = "") -> None:
        now = time.monotonic()
        if now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        self._draw(done, note)

    def _draw(self, done: float, note: str) -> None:
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 24)
        line = f"{self.label:<14} [{bar:<24}] {done:,.0f}/{self.total:,.0f}{self.unit} {note}"
        if self.tty:
            sys.stderr.write("\r" + line[:150].ljust(150))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, note: str = "") -> None:
        self._draw(self.total, note)
        if self.tty:
            sys.stderr.write("\n")
        sys.stderr.flush()
