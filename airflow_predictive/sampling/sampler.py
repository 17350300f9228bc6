"""Sampler: take one reading per tick, buffer it, write the buffer through the RunStore port.

A sampler's failure must never reach the task: a source that raises, a reading full of NaNs or a
database that is down are each logged once with a clear message, and sampling goes on. While the
database is down the samples stay in a bounded buffer (the oldest are dropped, counted, once it is
full) and the next flush retries; nothing is lost while the buffer holds.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from airflow_predictive.core.model.series import ResourceSample
    from airflow_predictive.core.ports import Clock, RunStore, UsageSource

log = logging.getLogger(__name__)

#: consecutive failing reads after which the source is taken as gone (a source that can never read)
MAX_CONSECUTIVE_ERRORS = 60


class FlushStatus(StrEnum):
    EMPTY = "empty"  # nothing buffered
    WRITTEN = "written"
    NO_STORE = "no_store"  # no store attached yet: samples stay buffered
    FAILED = "failed"  # the store failed: samples stay buffered for the next flush


@dataclass(frozen=True, slots=True)
class SamplerStats:
    samples: int  # readings taken
    written: int  # samples written to the store
    buffered: int  # waiting for the next flush
    dropped: int  # lost because the buffer was full while the store was down
    read_errors: int  # ticks whose reading raised


def _clean(reading: ResourceVector) -> ResourceVector:
    """Re-validate a reading from any source: NaN, infinite or negative values become absent."""
    return ResourceVector.lenient({m: reading.get(m) for m in Metric})


class Sampler:
    """Samples one run. ``tick()`` reads and buffers; ``flush()`` writes. Not thread-safe.

    t_s of a sample = ``offset_s`` + seconds since the sampler was created (on ``clock``), where
    ``offset_s`` is how long after the run's start the sampler began.
    """

    def __init__(
        self,
        run_pk: int,
        source: UsageSource,
        clock: Clock,
        *,
        store: RunStore | None = None,
        offset_s: float = 0.0,
        max_buffer: int = 3600,
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.run_pk = run_pk
        self.source = source
        self.store = store
        self._clock = clock
        self._offset = max(0.0, offset_s)
        self._t0 = clock.monotonic() - self._offset
        self._buffer: deque[tuple[float, ResourceVector]] = deque()  # (t_s, usage)
        self._max_buffer = max_buffer
        self._peak = ResourceVector()
        self._samples = self._written = self._dropped = self._read_errors = 0
        self._consecutive_errors = 0
        self._store_down = False
        self._dropping = False
        self._last_t: float | None = None
        self.gone = False

    def rebase(self, offset_s: float) -> None:
        """Say again how long after the run's start this sampler began (a resumed leg learns it from
        the stored run): later samples and those still buffered move onto the run's clock."""
        delta = max(0.0, offset_s) - self._offset
        if delta == 0:
            return
        self._offset += delta
        self._t0 -= delta
        self._buffer = deque((t + delta, u) for t, u in self._buffer)
        if self._last_t is not None:
            self._last_t += delta

    def add_reading(self, seconds_since_created: float, usage: ResourceVector) -> None:
        """A reading someone else took (the task process at its start / end hook), placed on this
        sampler's clock ``seconds_since_created`` after it was created (negative: before)."""
        t_s = self._offset + seconds_since_created
        if t_s < 0:
            return
        clean = _clean(usage)
        self._peak = self._peak.maximum(clean)
        self._samples += 1
        self._append((t_s, clean))

    @property
    def last_t_s(self) -> float | None:
        """t_s of the latest sample taken (None before the first)."""
        return self._last_t

    @property
    def peak(self) -> ResourceVector:
        """The highest value of each metric over every reading so far (absent if never measured)."""
        return self._peak

    @property
    def stats(self) -> SamplerStats:
        return SamplerStats(self._samples, self._written, len(self._buffer), self._dropped, self._read_errors)

    def tick(self) -> bool:
        """Take one reading. False once the target is gone (the reading said None)."""
        if self.gone:
            return False
        t_s = self._clock.monotonic() - self._t0
        try:
            reading = self.source.read()
        except Exception as exc:
            self._read_errors += 1
            self._consecutive_errors += 1
            if self._consecutive_errors == 1:
                log.warning("predictive sampler: reading usage failed (%s); the task goes on", exc)
            if self._consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                log.warning(
                    "predictive sampler: %d readings in a row failed; stopping the sampler",
                    self._consecutive_errors,
                )
                self.gone = True
                return False
            return True
        if self._consecutive_errors:
            log.info("predictive sampler: readings work again after %d failures", self._consecutive_errors)
            self._consecutive_errors = 0
        if reading is None:
            self.gone = True
            return False
        if self._last_t is not None and t_s <= self._last_t:
            return True  # a clock that did not move: one sample per instant
        self._last_t = t_s
        usage = _clean(reading)
        self._peak = self._peak.maximum(usage)
        self._samples += 1
        self._append((t_s, usage))
        return True

    def _append(self, sample: tuple[float, ResourceVector]) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self._dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "predictive sampler: sample buffer full (%d) while the database is unreachable; "
                    "dropping the oldest samples",
                    self._max_buffer,
                )
        self._buffer.append(sample)

    def pending(self) -> list[ResourceSample]:
        """The buffered samples, oldest first."""
        # imported here: core.model.series pulls numpy, which the sidecar's start-up avoids
        from airflow_predictive.core.model.series import ResourceSample

        return [ResourceSample(t_s=t, usage=u) for t, u in self._buffer]

    def flush(self) -> FlushStatus:
        """Write every buffered sample; on failure keep them for the next flush."""
        if not self._buffer:
            return FlushStatus.EMPTY
        if self.store is None:
            return FlushStatus.NO_STORE
        batch = self.pending()
        try:
            self.store.add_samples(self.run_pk, batch)
        except Exception as exc:
            if not self._store_down:
                self._store_down = True
                log.warning(
                    "predictive sampler: cannot write samples of run %s (%s); keeping them "
                    "(up to %d) and retrying at the next flush",
                    self.run_pk,
                    exc,
                    self._max_buffer,
                )
            return FlushStatus.FAILED
        self._buffer.clear()
        self._written += len(batch)
        if self._store_down:
            log.warning(
                "predictive sampler: database reachable again; wrote %d buffered samples (%d dropped)",
                len(batch),
                self._dropped,
            )
            self._store_down = False
            self._dropping = False
        return FlushStatus.WRITTEN
