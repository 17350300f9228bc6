"""Drives a ``ShapingController`` at a fixed interval until its task ends (local tasks, workers).

The controller does the work in ``tick()``; this only calls it on time, on a daemon thread or in
the caller's thread, and stops when the task has ended or ``stop()`` is called. ``wait`` is
injected (``threading.Event.wait`` by default) so tests never sleep for real. A tick that raises
(it should not) is logged and the loop goes on: shaping must never take the task down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_predictive.core.shaping.controller import ShapingController, TickReport

log = logging.getLogger(__name__)


class ShapingLoop:
    """``run()`` ticks ``controller`` every ``interval_s`` until the task ends; ``start()`` does it
    on a daemon thread."""

    def __init__(
        self, controller: ShapingController, interval_s: float = 1.0, *, max_ticks: int | None = None
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.controller = controller
        self.interval_s = interval_s
        self.max_ticks = max_ticks
        self.ticks = 0
        self.last: TickReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.last = self.controller.tick()
            except Exception:
                log.exception(
                    "shaping tick of %s failed; the task keeps its resources", self.controller.handle.name
                )
            self.ticks += 1
            if self.controller.finished is not None:
                return
            if self.max_ticks is not None and self.ticks >= self.max_ticks:
                return
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> ShapingLoop:
        self._thread = threading.Thread(
            target=self.run, name=f"shaping-{self.controller.handle.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
