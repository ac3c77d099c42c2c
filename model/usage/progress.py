"""A one-line progress bar on stderr for long runs (shown on a terminal, or when asked for)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_CELLS = 30
REDRAW_S = 0.2


class Progress:
    """``update(done)`` as work advances (``done`` out of ``total`` units, e.g. bytes); ``close()``.

    Redraws at most every ``REDRAW_S`` seconds, so calling it per block costs nothing measurable.
    """

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, unit: str = "B") -> None:
        self.label = label
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.items = 0
        self._done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def update(self, done: int, items: int | None = None) -> None:
        self._done = done
        if items is not None:
            self.items = items
        now = time.monotonic()
        if now - self._drawn >= REDRAW_S:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self._done / self.total) if self.total else 0.0
        filled = int(frac * BAR_CELLS)
        elapsed_s = max(now - self._started, 1e-9)
        text = f"\r{self.label} [{'#' * filled}{'.' * (BAR_CELLS - filled)}] {frac * 100:5.1f}%"
        if self.items:
            text += f" {self.items:,} lines {self.items / elapsed_s:,.0f}/s"
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write(text + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        if self.total:
            self._done = self.total
        self._draw(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()


class NoProgress:
    items = 0

    def update(self, done: int, items: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(label: str, total: int, enabled: bool | None) -> Progress | NoProgress:
    """A bar when ``enabled`` is True, or when it is None and stderr is a terminal."""
    show = sys.stderr.isatty() if enabled is None else enabled
    return Progress(label, total) if show else NoProgress()
