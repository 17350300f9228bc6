"""Admission: which waiting tasks start now (pure; one ``admit_round`` per executor heartbeat).

Conservative backfilling over the pool's reserved-over-time profile: waiting tasks are taken in
order of effective priority (Airflow's ``priority_weight`` plus an ageing bonus per second waited;
a task past ``max_wait_s`` goes before every task that has not waited as long), each placed at its
earliest feasible start in a working copy of the profile that already holds the running tasks and
the predicted starts of every task before it. A task is admitted when that start is *now*, so a
smaller task only goes ahead when it fits around the predicted starts of all tasks before it: it
delays none of them (no head-of-line blocking, no starvation). Only the first ``lookahead``
waiting tasks are placed per round (bounded cost); the rest wait for a later round.

A plan above the pool's capacity can never fit: the task runs on its declared resources (one log
line, DECLARED_FALLBACK) or fails fast when ``fail_fast`` is set. Admission decides; the ledger
then reserves atomically and may still refuse (another executor got there first): the task stays
queued for the next round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_predictive.core.model.plan import AdmissionDecision, AdmissionOutcome
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.scheduling.profile import relative_pieces

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.plan import AllocationPlan
    from airflow_predictive.core.model.runs import RunIdentity
    from airflow_predictive.core.scheduling.profile import Profile

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """aging_per_s: priority points gained per second of waiting.
    max_wait_s: past this wait a task is never overtaken by one that waited less.
    lookahead: how many waiting tasks are placed per round.
    fail_fast: a plan that can never fit fails the task instead of running it on declared resources.
    """

    aging_per_s: float = 1.0 / 60.0
    max_wait_s: float = 1800.0
    lookahead: int = 64
    fail_fast: bool = False


@dataclass(frozen=True, slots=True)
class WaitingTask:
    """One task held by admission: ``key`` is the caller's handle (the workload key)."""

    key: str
    run: RunIdentity
    plan: AllocationPlan
    priority: int = 1
    queued_at: float = 0.0
    declared: ResourceVector = field(default_factory=ResourceVector)

    def effective_priority(self, now: float, settings: AdmissionSettings) -> float:
        waited = max(0.0, now - self.queued_at)
        if waited >= settings.max_wait_s:
            return math.inf
        return self.priority + settings.aging_per_s * waited


def order(queue: Sequence[WaitingTask], now: float, settings: AdmissionSettings) -> list[WaitingTask]:
    """Highest effective priority first; among the long-waiting (inf) or equal, the oldest first."""
    return sorted(queue, key=lambda w: (-w.effective_priority(now, settings), w.queued_at, w.key))


def decide_one(
    task: WaitingTask, working: Profile, now: float, settings: AdmissionSettings
) -> AdmissionOutcome:
    """Place one task into ``working`` (mutated: it holds the task at its start afterwards)."""
    pieces = relative_pieces(task.plan.segments())
    never = working.never_fits(pieces)
    if never is not None:
        text = f"plan can never fit the pool: {never.describe(now)}"
        if settings.fail_fast:
            return AdmissionOutcome(AdmissionDecision.FAILED_FAST, text, bottleneck=never)
        return AdmissionOutcome(
            AdmissionDecision.DECLARED_FALLBACK, f"{text}; running on declared resources", bottleneck=never
        )
    start = working.earliest_start(pieces, now)
    assert start is not None  # never_fits said it fits an empty pool
    if start <= now + _EPS:
        working.add((now + a, now + b, c) for a, b, c in pieces)
        return AdmissionOutcome(AdmissionDecision.ADMITTED, "fits the pool now", earliest_start=now)
    blocked = working.fit(pieces, now).bottleneck
    working.add((start + a, start + b, c) for a, b, c in pieces)
    why = f"waits for capacity until +{start - now:.0f} s"
    if blocked is not None:
        why += f": {blocked.describe(now)}"
    return AdmissionOutcome(AdmissionDecision.QUEUED, why, bottleneck=blocked, earliest_start=start)


def admit_round(
    queue: Sequence[WaitingTask], profile: Profile, now: float, settings: AdmissionSettings
) -> list[tuple[WaitingTask, AdmissionOutcome]]:
    """Decide every waiting task (see the module docstring); ``profile`` is not changed."""
    working = profile.copy()
    out: list[tuple[WaitingTask, AdmissionOutcome]] = []
    for i, task in enumerate(order(queue, now, settings)):
        if i >= settings.lookahead:
            out.append(
                (
                    task,
                    AdmissionOutcome(
                        AdmissionDecision.QUEUED,
                        f"behind {settings.lookahead} waiting tasks of higher or equal priority",
                    ),
                )
            )
            continue
        out.append((task, decide_one(task, working, now, settings)))
    return out
