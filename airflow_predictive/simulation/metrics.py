"""Figures per policy from a replay (the definitions of ../shared/docs/anchors.md).

- slack (memory, CPU): integral(allocated - used) / integral(allocated) over every try. A killed
  try's usage did no useful work: its whole allocation counts as waste (used = 0 for it).
- waste: integral(allocated - used) in GiB*s and core*s, same rule.
- oom_per_1000: OOM-killed tries per 1,000 tries.
- throttled_share: wall time with CPU usage above the limit over all tries' wall time.
- queue wait p50 / p95 over tries (seconds from queued to started), makespan (first arrival to
  last end), resizes per run (applied in-place changes, all tries), decision latency: ``plan_ms``
  (the policy's decision before a try starts: for ours the planner) and ``tick_ms`` (each decision
  while it runs: for ours one shaping controller tick), wall-clock p50 / p99 in ms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from airflow_predictive.core.model.resources import GIB

if TYPE_CHECKING:
    from airflow_predictive.simulation.cluster import Replay


@dataclass(frozen=True)
class PolicyMetrics:
    memory_slack: float
    cpu_slack: float
    memory_waste_gib_s: float
    cpu_waste_core_s: float
    oom_per_1000: float
    throttled_share: float
    queue_wait_s_p50: float
    queue_wait_s_p95: float
    makespan_s: float
    resizes_per_run: float
    plan_ms_p50: float
    plan_ms_p99: float
    tick_ms_p50: float
    tick_ms_p99: float
    runs: int
    tries: int
    oom_kills: int
    failed_runs: int
    overcommitted_grows: int
    replay_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def summarise(replay: Replay) -> PolicyMetrics:
    tries = replay.tries
    mem_alloc = sum(t.result.memory_alloc for t in tries)
    cpu_alloc = sum(t.result.cpu_alloc for t in tries)
    mem_used = sum(t.result.memory_used for t in tries if not t.result.oom)
    cpu_used = sum(t.result.cpu_used for t in tries if not t.result.oom)
    wall = sum(t.result.wall_s for t in tries)
    throttled = sum(t.result.throttled_s for t in tries)
    ooms = sum(t.result.oom for t in tries)
    waits = np.array([t.wait_s for t in tries]) if tries else np.zeros(1)
    plans = np.array([t.result.decision_s[0] for t in tries if t.result.decision_s] or [0.0])
    ticks = [d for t in tries for d in t.result.decision_s[1:]]
    tick_arr = np.array(ticks or [0.0])
    return PolicyMetrics(
        memory_slack=_ratio(mem_alloc - mem_used, mem_alloc),
        cpu_slack=_ratio(cpu_alloc - cpu_used, cpu_alloc),
        memory_waste_gib_s=(mem_alloc - mem_used) / GIB,
        cpu_waste_core_s=cpu_alloc - cpu_used,
        oom_per_1000=1000.0 * _ratio(ooms, len(tries)),
        throttled_share=_ratio(throttled, wall),
        queue_wait_s_p50=float(np.percentile(waits, 50)),
        queue_wait_s_p95=float(np.percentile(waits, 95)),
        makespan_s=replay.makespan_s,
        resizes_per_run=_ratio(sum(t.result.resizes for t in tries), replay.runs),
        plan_ms_p50=float(np.percentile(plans, 50)) * 1000,
        plan_ms_p99=float(np.percentile(plans, 99)) * 1000,
        tick_ms_p50=float(np.percentile(tick_arr, 50)) * 1000,
        tick_ms_p99=float(np.percentile(tick_arr, 99)) * 1000,
        runs=replay.runs,
        tries=len(tries),
        oom_kills=int(ooms),
        failed_runs=replay.failed_runs,
        overcommitted_grows=replay.overcommitted_grows,
        replay_seconds=replay.seconds,
    )
