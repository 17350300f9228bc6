"""A progress bar with an ETA on stderr for the long profiler commands (train, evaluate).

Why: an evaluation of thousands of runs or a training with the LSTM takes minutes; a command that
prints nothing for minutes looks hung. ``Progress`` counts work items (one candidate on one
backtest fold, one fit, one estimator's forecasts ...) and redraws one line at most every
``interval_s`` seconds: done / total, percent, elapsed, and the ETA from the elapsed time per item
so far. On a terminal the line is redrawn in place; otherwise (CI logs) a line is written per
redraw. Disabled (no output) when ``stream`` is None.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """``add(total)`` announces work, ``step(label)`` finishes one item, ``close()`` ends the line."""

    def __init__(
        self, label: str, *, stream: TextIO | None = sys.stderr, interval_s: float = 1.0, width: int = 24
    ) -> None:
        self.label = label
        self.stream = stream
        self.interval_s = interval_s
        self.width = width
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self._drawn = -1.0
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def add(self, items: int) -> None:
        self.total += max(0, items)

    def step(self, what: str = "", items: int = 1) -> None:
        self.done += items
        now = time.monotonic()
        if self.stream is not None and (now - self._drawn >= self.interval_s or self.done >= self.total):
            self._drawn = now
            self.stream.write(
                ("\r" if self._tty else "") + self.line(what, now) + ("" if self._tty else "\n")
            )
            self.stream.flush()

    def line(self, what: str = "", now: float | None = None) -> str:
        elapsed = (now if now is not None else time.monotonic()) - self.started
        total = max(self.total, self.done, 1)
        frac = self.done / total
        bar = "#" * round(frac * self.width)
        eta = elapsed / self.done * (total - self.done) if self.done else float("nan")
        eta_text = _clock(eta) if eta == eta else "?"
        return (
            f"{self.label} [{bar:<{self.width}}] {self.done}/{total} {100 * frac:3.0f}% "
            f"elapsed {_clock(elapsed)} ETA {eta_text} {what}"
        ).rstrip()

    def close(self) -> None:
        if self.stream is not None and self._tty:
            self.stream.write("\n")
            self.stream.flush()
