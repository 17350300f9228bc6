"""A bounded background queue for the writes of server-side hooks (scheduler, API server).

``on_task_instance_failed`` also fires in the scheduler (zombies, killed tasks) and in the API
server (a UI mark) with an ORM TaskInstance. Writing there synchronously would stall the
scheduler loop or a request whenever the provider's database is slow; the hook instead hands a
job to ``BackgroundWriter.submit``, which never blocks: a full queue drops its oldest job (counted,
one warning), and one daemon thread runs the jobs with the recording engine's timeouts.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundWriter:
    """Runs submitted jobs on one daemon thread; ``submit`` returns at once (see the module doc)."""

    def __init__(self, capacity: int = 1000, name: str = "predictive-recorder") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._jobs: collections.deque[tuple[str, Callable[[], object]]] = collections.deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._name = name
        self._thread: threading.Thread | None = None
        self._busy = False
        self.dropped = 0
        self.done = 0
        self.failed = 0
        self._warned: set[str] = set()

    def submit(self, label: str, job: Callable[[], object]) -> None:
        with self._cond:
            if len(self._jobs) >= self._capacity:
                self._jobs.popleft()
                self.dropped += 1
                if "full" not in self._warned:
                    self._warned.add("full")
                    log.warning(
                        "predictive: recording queue full (%d): dropping the oldest write; the "
                        "provider's database is too slow for this process",
                        self._capacity,
                    )
            self._jobs.append((label, job))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                label, job = self._jobs.popleft()
                self._busy = True
            try:
                job()
                self.done += 1
            except Exception as exc:
                self.failed += 1
                if label not in self._warned:
                    self._warned.add(label)
                    log.warning(
                        "predictive: could not record %s (%s: %s); Airflow is not affected",
                        label, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "",
                    )  # fmt: skip

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted job ran (tests, shutdown); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)
