"""Replayed runs -> pods for the node-level replay: their requests and their predicted starts.

Why: warm capacity is only as good as two predictions made *before* a task is submitted, its
peak (what the placeholder must hold) and its start (when the node must be Ready). This module
makes both from what a scheduler would know, and nothing it would not:

- requests: ``declared`` (the author's, what plain autoscaling sees) or ``plan`` (the peak of
  ``planner.plan_from_forecast`` on the profiler's held-out forecast: memory at p99, CPU at p90
  as a request);
- start: a task in a slot-gated queue (Airflow's worker slots and pools, Nextflow's executor
  queue) starts when a running task frees its slot. In kseg-eager 98.5% of starts come within
  10 s of another run's end. The scheduler knows its own queue order, so the run that frees the
  slot (the *releaser*: the latest end within ``match_window_s`` before the start) is known; its
  end is predicted from its own forecast's duration (p50, the window's late edge at p90). The
  prediction is known from the later of the releaser's start and the moment the task became
  ready (the latest end of an earlier run of the same sample group). A releaser outside the
  replay (a run of the training half: it ran in the recording, so it gated the start, but it is
  not a pod here) is predicted from its task's *earlier* recorded durations only (median, and
  the 90th percentile as the late edge), never from its own. A task with no releaser, or whose
  releaser has no prediction, gets no placeholder (it is served reactively).

The placeholder is made ``lead = provisioning delay + margin_s`` before the predicted start
(never before the prediction is known) and lapses ``lapse_margin_s`` after the later of the late
edge and the releaser's observed end: while the releaser runs, the task's start is still ahead
(the scheduler sees it running), so its plan has not lapsed.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.simulation.nodes import PodSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_predictive.core.model.series import Forecast
    from airflow_predictive.core.profiler.estimators.base import RunExample
    from airflow_predictive.core.scheduling.planner import PlanSettings
    from airflow_predictive.simulation.workload import SimRun, Workload


class Sizing(StrEnum):
    DECLARED = "declared"
    PLAN = "plan"


@dataclass(frozen=True, slots=True)
class WarmSettings:
    """margin_s: lead time beyond the provisioning delay. lapse_margin_s: how long after the late
    edge of the predicted start a placeholder waits for its pod. match_window_s: a start this
    close after a run's end is that run's freed slot."""

    margin_s: float = 30.0
    lapse_margin_s: float = 60.0
    match_window_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the start predictor reads of one run: when it was submitted and ended (true), its
    sample group, and its own predicted duration (p50 / p90; None without a forecast)."""

    index: int
    group: str
    submit_s: float
    end_s: float
    duration_p50: float | None
    duration_p90: float | None


@dataclass(frozen=True, slots=True)
class StartPrediction:
    """known_at: when the scheduler can know it; start_s: predicted start (p50); late_s: the
    window's late edge (p90); releaser: the run whose end frees the slot; releaser_end_s: when it
    ended (observed then)."""

    known_at: float
    start_s: float
    late_s: float
    releaser: int
    releaser_end_s: float = 0.0


def predict_starts(arrivals: Sequence[Arrival], settings: WarmSettings) -> dict[int, StartPrediction]:
    """Each run's predicted start from its releaser's predicted end (see the module docstring)."""
    by_end = sorted(arrivals, key=lambda a: (a.end_s, a.index))
    ends = [a.end_s for a in by_end]
    group_ends: dict[str, list[float]] = {}
    for a in arrivals:
        group_ends.setdefault(a.group, []).append(a.end_s)
    for v in group_ends.values():
        v.sort()
    out: dict[int, StartPrediction] = {}
    for j in arrivals:
        k = bisect.bisect_right(ends, j.submit_s) - 1
        releaser = None
        while k >= 0 and ends[k] >= j.submit_s - settings.match_window_s:
            cand = by_end[k]
            if cand.index != j.index and cand.submit_s < j.submit_s:
                releaser = cand
                break
            k -= 1
        if releaser is None or releaser.duration_p50 is None:
            continue
        ge = group_ends.get(j.group, [])
        g = bisect.bisect_right(ge, j.submit_s) - 1
        ready = ge[g] if g >= 0 else releaser.submit_s
        known = min(max(releaser.submit_s, ready), j.submit_s)
        start = releaser.submit_s + releaser.duration_p50
        late = releaser.submit_s + max(releaser.duration_p90 or releaser.duration_p50, releaser.duration_p50)
        out[j.index] = StartPrediction(
            known_at=known, start_s=start, late_s=late, releaser=releaser.index, releaser_end_s=releaser.end_s
        )
    return out


def duration_quantile(forecast: Forecast | None, q: float) -> float | None:
    """The forecast's predicted duration at ``q`` (nearest stored quantile); None when unknown."""
    if forecast is None or not forecast.duration_s:
        return None
    nearest = min(forecast.duration_s, key=lambda x: abs(x - q))
    v = forecast.duration_s[nearest]
    return v if v > 0 else None


def requests_of(
    run: SimRun, forecast: Forecast | None, sizing: Sizing, plan_settings: PlanSettings
) -> tuple[float, float]:
    """(memory bytes, CPU cores) the run's pod requests under ``sizing`` (fallbacks: declared, then
    the true peak, for a run that declares nothing)."""
    from airflow_predictive.core.scheduling.planner import plan_from_forecast

    declared = ResourceVector(memory_bytes=run.declared_memory, cpu_cores=run.declared_cpu)
    mem = run.declared_memory or run.peak_memory
    cpu = run.declared_cpu or max(run.peak_cpu, 0.1)
    if sizing is Sizing.PLAN and forecast is not None:
        peak = plan_from_forecast(forecast, declared=declared, settings=plan_settings).plan.peak()
        mem = peak.limits.memory_bytes or peak.requests.memory_bytes or mem
        cpu = peak.requests.cpu_cores or peak.limits.cpu_cores or cpu
    return float(mem), float(cpu)


def sample_group(example: RunExample) -> str:
    """The run's sample (kseg-eager: ``DA100_L1`` -> ``DA100``), else its run id."""
    sample = example.record.features.get("sample")
    if isinstance(sample, str) and sample:
        return sample.split("_")[0]
    return example.record.identity.run_id


def _seconds(ex: RunExample) -> float | None:
    rec = ex.record
    if rec.start is None or rec.end is None:
        return None
    return (rec.end - rec.start).total_seconds()


def training_arrivals(
    workload: Workload, group: Callable[[RunExample], str], *, first_index: int
) -> list[Arrival]:
    """The runs outside the replay as releasers, on the replay's clock, each predicted from its
    task's earlier runs' durations (None without any)."""
    if not workload.runs:
        return []
    ref = workload.runs[0]
    start0 = ref.example.record.start
    if start0 is None:
        return []
    t0 = start0.timestamp() - ref.arrival_s
    by_task: dict[object, list[RunExample]] = {}
    for ex in workload.train:
        if ex.record.start is not None:
            by_task.setdefault(ex.key, []).append(ex)
    out: list[Arrival] = []
    for runs in by_task.values():
        runs.sort(key=lambda e: e.record.start or 0)
        earlier: list[float] = []
        for ex in runs:
            d = _seconds(ex)
            assert ex.record.start is not None
            if d is not None and d > 0:
                submit = ex.record.start.timestamp() - t0
                p50 = float(np.median(earlier)) if earlier else None
                p90 = float(np.percentile(earlier, 90)) if earlier else None
                out.append(Arrival(first_index + len(out), group(ex), submit, submit + d, p50, p90))
                earlier.append(d)
    return out


def pods_for(
    workload: Workload,
    forecasts: Mapping[int, Forecast],
    sizing: Sizing,
    *,
    provisioning_delay_s: float,
    plan_settings: PlanSettings,
    settings: WarmSettings | None = None,
    group: Callable[[RunExample], str] | None = None,
    releasers_outside: bool = True,
) -> tuple[list[PodSpec], dict[int, StartPrediction]]:
    """The workload's runs as pods (with placeholders timed from the predicted starts);
    ``releasers_outside``: runs of the training half may be releasers (see the module docstring)."""
    settings = settings or WarmSettings()
    group = group or sample_group
    arrivals = []
    for run in workload.runs:
        f = forecasts.get(run.origin)
        arrivals.append(
            Arrival(
                index=run.index,
                group=group(run.example),
                submit_s=run.arrival_s,
                end_s=run.arrival_s + run.duration_s,
                duration_p50=duration_quantile(f, 0.5),
                duration_p90=duration_quantile(f, 0.9),
            )
        )
    if releasers_outside:
        first = max((r.index for r in workload.runs), default=0) + 1
        arrivals.extend(training_arrivals(workload, group, first_index=first))
    starts = predict_starts(arrivals, settings)
    lead = provisioning_delay_s + settings.margin_s
    pods = []
    for run in workload.runs:
        mem, cpu = requests_of(run, forecasts.get(run.origin), sizing, plan_settings)
        pred = starts.get(run.index)
        warm_at = warm_until = None
        if pred is not None:
            warm_at = max(pred.known_at, pred.start_s - lead)
            warm_until = max(pred.late_s, pred.start_s, pred.releaser_end_s) + settings.lapse_margin_s
        pods.append(
            PodSpec(
                index=run.index,
                submit_s=run.arrival_s,
                duration_s=run.duration_s,
                memory=mem,
                cpu=cpu,
                warm_at_s=warm_at,
                warm_until_s=warm_until,
                predicted_start_s=None if pred is None else pred.start_s,
                predicted_duration_s=duration_quantile(forecasts.get(run.origin), 0.5),
            )
        )
    return pods, starts
