"""Pod usage from the in-pod sampler's store samples, metrics.k8s.io as the fallback.

Why it exists: metrics.k8s.io is a rate over a window (15 s or more on a real metrics-server), so a
pod shaped from it sees a spike late. The in-pod sampler (``sampling/pod_sampler.py``) writes a
sample of the pod's containers every second; ``SidecarUsage.merge`` takes, for every pod of a
shaping round, its newest sample when it is at most ``fresh_s`` old (one store query for all pods)
and metrics.k8s.io otherwise (no sampler in the pod, a sampler that stopped, a store that is down).
Metrics the sample leaves absent (CPU on its first reading) come from metrics.k8s.io. Which source
fed each pod is kept (``sources``) and logged when it changes, so a shaped pod says where its
usage came from. Reading never raises: a store that fails is logged once and the round uses
metrics.k8s.io.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from airflow_predictive.core.model.resources import Metric, ResourceVector

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

#: a store sample older than this does not count as the pod's usage now
FRESH_S = 3.0


class UsageOrigin(StrEnum):
    SIDECAR = "sidecar"  # the in-pod sampler's newest store sample
    METRICS = "metrics.k8s.io"
    NONE = "none"  # neither answered this round


class NewestSamples(Protocol):
    """``SqlRunStore.newest_samples``: ``namespace/pod`` -> a value with ``at`` and ``usage``."""

    def __call__(self, hostnames: Sequence[str]) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class PodUsage:
    usage: ResourceVector | None
    origin: UsageOrigin
    age_s: float | None = None  # how old the sidecar's sample was


class SidecarUsage:
    """Chooses each pod's usage for one round (see the module docstring)."""

    def __init__(
        self, newest: NewestSamples, *, fresh_s: float = FRESH_S, wall: Callable[[], float] = time.time
    ) -> None:
        if not fresh_s > 0:
            raise ValueError("fresh_s must be positive")
        self.newest = newest
        self.fresh_s = fresh_s
        self._wall = wall
        self.sources: dict[str, UsageOrigin] = {}
        self._failing = False

    def merge(self, refs: Sequence[str], metrics: Mapping[str, ResourceVector]) -> dict[str, PodUsage]:
        samples: Mapping[str, Any] = {}
        if refs:
            try:
                samples = self.newest(list(refs))
                if self._failing:
                    log.info("pod usage: the sampler store answers again")
                self._failing = False
            except Exception as exc:  # the store is down: metrics.k8s.io for this round
                if not self._failing:
                    log.warning("pod usage: sampler samples unreadable (%s); using metrics.k8s.io", exc)
                self._failing = True
        now = self._wall()
        out: dict[str, PodUsage] = {}
        for ref in refs:
            out[ref] = self._choose(ref, samples.get(ref), metrics.get(ref), now)
            self._note(ref, out[ref])
        for gone in set(self.sources) - set(refs):
            del self.sources[gone]
        return out

    def _choose(self, ref: str, sample: Any, fallback: ResourceVector | None, now: float) -> PodUsage:
        if sample is not None:
            age = max(0.0, now - float(sample.at))
            usage = sample.usage
            if age <= self.fresh_s and usage is not None and usage.get(Metric.MEMORY_BYTES) is not None:
                if fallback is not None:  # a metric the sample lacks comes from metrics.k8s.io
                    usage = ResourceVector.lenient(
                        {m: usage.get(m) if usage.get(m) is not None else fallback.get(m) for m in Metric}
                    )
                return PodUsage(usage, UsageOrigin.SIDECAR, age)
        if fallback is not None:
            return PodUsage(fallback, UsageOrigin.METRICS)
        return PodUsage(None, UsageOrigin.NONE)

    def _note(self, ref: str, chosen: PodUsage) -> None:
        before = self.sources.get(ref)
        self.sources[ref] = chosen.origin
        if before is chosen.origin or (before is None and chosen.origin is UsageOrigin.NONE):
            return
        if chosen.origin is UsageOrigin.SIDECAR:
            log.info("pod usage of %s: from the in-pod sampler (sample %.1fs old)", ref, chosen.age_s or 0.0)
        elif before is UsageOrigin.SIDECAR:
            log.info(
                "pod usage of %s: no sampler sample newer than %.0fs; back to %s",
                ref, self.fresh_s, chosen.origin.value,
            )  # fmt: skip
        elif before is not None or chosen.origin is UsageOrigin.METRICS:
            log.info("pod usage of %s: from %s", ref, chosen.origin.value)

    def counts(self) -> dict[str, int]:
        """Pods per origin in the last round."""
        out: dict[str, int] = {}
        for origin in self.sources.values():
            out[origin.value] = out.get(origin.value, 0) + 1
        return out


def store_samples(store: Any) -> NewestSamples:
    """``SqlRunStore.newest_samples`` of source ``pod`` as a ``NewestSamples`` reader."""

    def read(hostnames: Sequence[str]) -> Mapping[str, Any]:
        return dict(store.newest_samples(hostnames))

    return read
