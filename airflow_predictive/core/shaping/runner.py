"""Drives shaping controllers at a fixed interval until their tasks end (local tasks, workers).

The controller does the work in ``tick()``; this only calls it on time, on a daemon thread or in
the caller's thread, and stops when the task has ended or ``stop()`` is called. ``ShapingLoop``
drives one controller (a worker shaping its own pod); ``ShapingGroup`` drives any number on one
thread (the PredictiveLocalExecutor: one round over N tasks, not N threads). A tick that raises (it
should not) is logged once per task and the loop goes on: shaping must never take the task down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

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


class Shaped(Protocol):
    """What a ``ShapingGroup`` ticks: a ``ShapingController``, or an adapter around one."""

    def tick(self) -> Any: ...


class ShapingGroup:
    """Ticks every member once per ``interval_s`` on one daemon thread (started on first ``add``).

    ``remove(key)`` waits (at most ``wait_s``) for a tick of that member in progress, so the caller
    may release the member's cgroup right after; it never waits for other members' ticks, and
    ``add`` never waits for a tick at all (the executor calls both from the scheduler's loop).
    ``close()`` stops the thread and forgets everyone. ``round()`` is one pass in the caller's
    thread (tests, benchmarks); ``before_round`` (optional) runs first in each round that has
    members (a batched read the members' ticks then use). A member whose tick raises is logged once (then at debug) and
    ticked again next round.
    """

    def __init__(
        self,
        interval_s: float = 1.0,
        *,
        name: str = "shaping-group",
        before_round: Callable[[], None] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self.name = name
        self.before_round = before_round  # once per round with members (one batched read for all)
        self._before_failed = False
        self.rounds = 0
        self._members: dict[Any, tuple[Shaped, threading.Lock]] = {}
        self._lock = threading.Lock()  # guards the members dict only (held briefly)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: set[Any] = set()

    def add(self, key: Any, member: Shaped) -> None:
        with self._lock:
            self._members[key] = (member, threading.Lock())
            self._failed.discard(key)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
                self._thread.start()

    def remove(self, key: Any, wait_s: float = 2.0) -> Shaped | None:
        with self._lock:
            self._failed.discard(key)
            entry = self._members.pop(key, None)
        if entry is None:
            return None
        member, ticking = entry
        if ticking.acquire(timeout=wait_s):  # its tick in progress (if any) has ended
            ticking.release()
        else:
            log.warning("shaping tick of %s still running after %.1fs; going on without it", key, wait_s)
        return member

    def get(self, key: Any) -> Shaped | None:
        entry = self._members.get(key)
        return None if entry is None else entry[0]

    def __len__(self) -> int:
        return len(self._members)

    def round(self) -> int:
        """Tick every member once; returns how many were ticked."""
        ticked = 0
        with self._lock:
            snapshot = list(self._members.items())
        if snapshot and self.before_round is not None:
            try:
                self.before_round()
                self._before_failed = False
            except Exception:  # the members' ticks see last round's view; logged once per outage
                if not self._before_failed:
                    log.exception("shaping round's refresh failed; members see the last one")
                self._before_failed = True
        for key, (member, ticking) in snapshot:
            if self._stop.is_set():
                break
            with ticking:
                if key not in self._members:  # removed since the snapshot
                    continue
                try:
                    member.tick()
                except Exception:
                    if key not in self._failed:
                        self._failed.add(key)
                        log.exception("shaping tick of %s failed; the task keeps its resources", key)
                    else:
                        log.debug("shaping tick of %s failed again", key, exc_info=True)
                ticked += 1
        self.rounds += 1
        return ticked

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.round()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._lock:
            self._members.clear()
            self._failed.clear()
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
