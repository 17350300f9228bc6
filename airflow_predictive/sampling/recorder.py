"""What the sidecar writes for one try when the listener hands it the whole recording.

``ControlReader`` reads the listener's JSON lines (``sampling.control``) from a non-blocking fd.
``RunWriter`` owns every database write of the try, all of them outside the task path: it creates
(or resumes) the run row at the first flush, lets the sampler's buffered samples go once the row
exists, and applies the end the listener announced (outcome, or a leg that deferred). While the
database is down, hung or locked each attempt fails within the engine's timeouts, the samples stay
in the sampler's bounded buffer, and the next attempt catches up; the end is retried with a
backoff for ``catch_up`` seconds after the task ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import LegEnd, Outcome
from airflow_predictive.sampling.control import (
    ControlError,
    EndMessage,
    LegMessage,
    Message,
    StartMessage,
    decode,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from airflow_predictive.core.model.runs import RunRecord
    from airflow_predictive.core.ports import Clock
    from airflow_predictive.sampling.sampler import Sampler
    from airflow_predictive.storage.run_store import SqlRunStore

log = logging.getLogger("airflow_predictive.sampling.sidecar")

VANISHED_NOTE = "task process vanished before its end was recorded"


class ControlReader:
    """Lines from the listener's pipe; ``closed`` once the task process closed it (or died)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self._partial = b""
        self._pending: list[Message] = []  # read while waiting for START, handed out by read()
        os.set_blocking(fd, False)

    def read(self) -> list[Message]:
        out, self._pending = self._pending, []
        while not self.closed:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(decode(line))
            except ControlError as exc:
                log.warning("predictive sampler: %s", exc)
        return out

    def wait_start(self, timeout: float) -> StartMessage | None:
        """Block (at most ``timeout`` s) for the START line the listener writes right after spawning."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            messages = self.read()
            for i, msg in enumerate(messages):
                if isinstance(msg, StartMessage):
                    self._pending = messages[i + 1 :]  # an END can follow at once (a short task)
                    return msg
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                return None
            with contextlib.suppress(InterruptedError):
                select.select([self.fd], [], [], remaining)


class RunWriter:
    """The try's row: created or resumed lazily, then samples, then the end (see the module doc)."""

    def __init__(self, record: RunRecord, sampler: Sampler, clock: Clock, *, leg_started_at_s: float) -> None:
        self.record = record
        self.sampler = sampler
        self._clock = clock
        self._leg_started = leg_started_at_s  # epoch seconds this leg's sidecar began sampling
        self.store: SqlRunStore | None = None
        self.run_pk: int | None = None
        self.leg: int | None = None
        self._failed = False

    def _warn_once(self, what: str, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "predictive sampler: cannot %s for %s (%s); samples are kept and it retries",
                what, self.record.key, str(exc).splitlines()[0][:300],
            )  # fmt: skip

    def ensure_run(self) -> bool:
        """Create / resume the run row once a store is attached; True when the row exists."""
        if self.run_pk is not None:
            return True
        if self.store is None:
            return False
        from datetime import UTC, datetime

        try:
            started = self.store.begin_leg(self.record, at=datetime.fromtimestamp(self._leg_started, UTC))
        except Exception as exc:
            self._warn_once("create the run row", exc)
            return False
        if self._failed:
            log.warning("predictive sampler: database reachable again for %s", self.record.key)
            self._failed = False
        self.run_pk, self.leg = started.run_pk, started.leg
        # samples count from the run's start; a resumed leg continues the first leg's clock
        self.sampler.run_pk = started.run_pk
        self.sampler.rebase(started.t_start_s)
        self.sampler.store = self.store
        if started.resumed:
            log.info("predictive sampler: run %s resumes in leg %d", started.run_pk, started.leg)
        return True

    def flush(self) -> None:
        if self.ensure_run():
            self.sampler.flush()

    def task_reading(self, at: datetime | None, rss_bytes: int | None) -> None:
        """The task process's own RSS at one of its hooks, as a sample of this leg."""
        if at is None or rss_bytes is None:
            return
        # a START reading taken just before this leg's sidecar began belongs to the leg's start: placed
        # earlier it would fall inside the previous leg's wait (deferred) interval
        dt = max(0.0, at.timestamp() - self._leg_started)
        self.sampler.add_reading(dt, ResourceVector(memory_bytes=float(rss_bytes)))

    def apply(self, end: EndMessage | LegMessage | None, *, oom_killed: Callable[[], bool]) -> bool:
        """Write the remaining samples and the end; True when everything is written."""
        if not self.ensure_run():
            return False
        from airflow_predictive.sampling.sampler import FlushStatus

        if self.sampler.flush() not in (FlushStatus.EMPTY, FlushStatus.WRITTEN):
            return False
        assert self.store is not None and self.run_pk is not None
        try:
            if isinstance(end, LegMessage):
                if not self.store.end_leg(
                    self.run_pk, self.leg or 1, end.reason, end.at, last_sample_t_s=self.sampler.last_t_s
                ):
                    log.info("predictive sampler: leg %s of run %s was superseded", self.leg, self.run_pk)
                return True
            peak = self.sampler.peak
            with contextlib.suppress(Exception):
                peak = self.store.series(self.run_pk).peaks().maximum(peak)
            if isinstance(end, EndMessage) and end.hwm_bytes:
                peak = peak.maximum(ResourceVector(memory_bytes=float(end.hwm_bytes)))
            if isinstance(end, EndMessage):
                done = self.store.finish_run(
                    self.run_pk, outcome=end.outcome, end=end.at, peak=peak,
                    exit_code=end.exit_code, note=end.note, leg=self.leg,
                )  # fmt: skip
                if not done:
                    log.warning(
                        "predictive sampler: run %s moved to a newer leg; its end is not ours", self.run_pk
                    )
                return True
            oom = oom_killed()
            outcome = Outcome.OOM_KILLED if oom else Outcome.UNKNOWN
            note = "the kernel OOM-killed the task (cgroup)" if oom else VANISHED_NOTE
            if self.store.finish_run(
                self.run_pk, outcome=outcome, end=self._clock.now(), peak=peak, note=note,
                only_if_running=True, leg=self.leg,
            ):  # fmt: skip
                self.store.end_leg(self.run_pk, self.leg or 1, LegEnd.VANISHED)
                log.warning("predictive sampler: run %s recorded as %s: %s", self.run_pk, outcome.value, note)
            return True
        except Exception as exc:
            self._warn_once("record the end", exc)
            return False

    def catch_up(
        self,
        end: EndMessage | LegMessage | None,
        *,
        budget_s: float,
        wait: Callable[[float], None],
        oom_killed: Callable[[], bool],
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> bool:
        """``apply`` until it succeeds or ``budget_s`` is spent (backoff 1, 2, 4 ... 30 s); a stop
        request (SIGTERM) ends the retries after the current attempt."""
        deadline = time.monotonic() + budget_s
        delay = 1.0
        while True:
            if self.apply(end, oom_killed=oom_killed):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop_requested():
                log.warning(
                    "predictive sampler: gave up recording %s after %.0f s: %d samples not written",
                    self.record.key, budget_s, self.sampler.stats.buffered,
                )  # fmt: skip
                return False
            wait(min(delay, remaining))
            delay = min(30.0, delay * 2)
