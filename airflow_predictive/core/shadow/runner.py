"""Running one shadow: start it on a backend, sample it, stop it at its budget, say how it ended.

Why: the same loop serves a local shadow (the cgroup backend: a bash command, or a forked
python callable adopted into a small group) and a shadow pod (the Kubernetes backend). It only
talks to the ``ResourceBackend`` port, with an injected clock and sleep, so tests drive time.
It never raises: whatever fails (start, usage reads, release) becomes the observation's end and
reason. The hard deadline is the budget: the shadow is released (killed) when it is reached, and
the loop itself never outlives ``budget + grace_s``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import Allocation, ExitKind
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.series import ResourceSample, UsageSeries
from airflow_predictive.core.shadow.reforecast import ShadowEnd, ShadowObservation

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from airflow_predictive.core.model.backend import Handle, TaskState
    from airflow_predictive.core.ports import Clock, ResourceBackend
    from airflow_predictive.core.shadow.policy import ShadowBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ShadowRun:
    """One shadow's observation plus what recording it needs (samples, wall clock, exit, cost)."""

    observation: ShadowObservation
    samples: tuple[ResourceSample, ...] = ()
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    handle_ref: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peak(self) -> ResourceVector:
        p = self.observation.prefix
        return p.peaks() if p is not None and len(p) else ResourceVector()

    @property
    def cost(self) -> ResourceVector:
        """What the shadow held: its limits x its wall time (core-seconds, byte-seconds)."""
        return self.observation.limits.scaled(max(0.0, self.observation.wall_s))


def run_shadow(
    backend: ResourceBackend,
    start: Callable[[Allocation], Handle],
    budget: ShadowBudget,
    *,
    clock: Clock,
    sample_interval_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> ShadowRun:
    """Start the shadow with ``start(allocation)`` (its small resources), sample it every
    ``sample_interval_s`` until it ends or ``budget.seconds`` pass, release it, and classify."""
    limits = budget.resources
    t0 = clock.monotonic()
    started_at = clock.now()
    try:
        handle = start(Allocation.exactly(limits))
    except Exception as exc:
        obs = ShadowObservation(None, ShadowEnd.NOT_STARTED, 0.0, limits, f"{type(exc).__name__}: {exc}")
        return ShadowRun(obs, started_at=started_at, ended_at=clock.now())
    samples: list[ResourceSample] = []
    notes: list[str] = []
    end: ShadowEnd | None = None
    state: TaskState | None = None
    reason = ""
    failed_reads = 0
    while True:
        elapsed = clock.monotonic() - t0
        try:
            state = backend.state(handle)
        except Exception as exc:
            end, reason = ShadowEnd.ERROR, f"state unreadable: {type(exc).__name__}: {exc}"
            break
        if state.kind is not ExitKind.RUNNING:
            break
        try:
            usage = backend.usage(handle)
        except Exception as exc:
            usage = None
            failed_reads += 1
            if failed_reads == 1:
                notes.append(f"usage read failed: {type(exc).__name__}: {exc}")
        if usage is not None:
            samples.append(ResourceSample(elapsed, usage))
        if elapsed >= budget.seconds:
            end, reason = ShadowEnd.BUDGET, f"stopped at its budget ({budget.seconds:.1f} s)"
            break
        sleep(max(0.0, min(sample_interval_s, budget.seconds - elapsed)))
    wall = clock.monotonic() - t0
    try:
        backend.release(handle)
    except Exception as exc:
        notes.append(f"release failed: {type(exc).__name__}: {exc}")
        log.warning("predictive: shadow %s could not be released: %s", handle.ref, exc)
    exit_code = state.exit_code if state is not None else None
    if end is None and state is not None:
        end, reason = _ended(state)
    obs = ShadowObservation(
        UsageSeries.from_samples(samples) if samples else None,
        end or ShadowEnd.ERROR,
        wall,
        limits,
        reason,
    )
    return ShadowRun(
        obs,
        tuple(samples),
        started_at=started_at,
        ended_at=clock.now(),
        exit_code=exit_code,
        handle_ref=handle.ref,
        notes=tuple(notes),
    )


def _ended(state: TaskState) -> tuple[ShadowEnd, str]:
    if state.kind is ExitKind.SUCCEEDED:
        return ShadowEnd.COMPLETED, "finished within its budget"
    if state.kind is ExitKind.OOM_KILLED:
        return ShadowEnd.OOM_KILLED, state.reason or "OOM-killed at its memory limit"
    if state.kind is ExitKind.FAILED:
        return ShadowEnd.FAILED, state.reason or f"exit code {state.exit_code}"
    return ShadowEnd.FAILED, state.reason or state.kind.value
