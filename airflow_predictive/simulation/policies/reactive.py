"""A reactive shaper: grows on a usage trigger, shrinks on a timer, knows no forecast.

What a careful operator can build without prediction (and what the targets say prediction must
beat at once on slack and OOM kills). The try starts at the declared resources. Usage is sampled
every grid step: when memory or CPU usage reaches ``trigger`` of its limit, that limit grows to
usage x (1 + ``grow_margin``) (in force after the actuation delay); every ``shrink_after_s``
without a grow, limits shrink to the peak of the last window x (1 + ``shrink_margin``). After an
OOM kill the next try never goes below the kill's peak x 1.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.simulation.execution import Limits
from airflow_predictive.simulation.policies.base import TryContext, clamp, declared_limits

if TYPE_CHECKING:
    from airflow_predictive.simulation.execution import SimSettings, TryDriver, TryResult
    from airflow_predictive.simulation.policies.base import NodeShape
    from airflow_predictive.simulation.workload import Workload

RETRY_FLOOR_RATIO = 1.2


@dataclass(frozen=True)
class ReactiveSettings:
    trigger: float = 0.9
    grow_margin: float = 0.3
    shrink_after_s: float = 60.0
    shrink_margin: float = 0.2


class ReactivePolicy:
    def __init__(self, settings: ReactiveSettings | None = None, name: str = "reactive") -> None:
        self.settings = settings or ReactiveSettings()
        self.name = name

    def prepare(self, workload: Workload, settings: SimSettings) -> None:
        return None

    def driver(self, ctx: TryContext) -> TryDriver:
        floor = 0.0
        if ctx.previous is not None and ctx.previous.oom:
            floor = ctx.previous.peak_seen * RETRY_FLOOR_RATIO
        start = declared_limits(ctx.run, ctx.node)
        start = clamp(Limits(max(start.memory_bytes, floor), start.cpu_cores), ctx.node)
        return ReactiveDriver(ctx, start, floor, self.settings)

    def finished(self, ctx: TryContext, result: TryResult) -> None:
        return None


class ReactiveDriver:
    def __init__(self, ctx: TryContext, start: Limits, floor: float, s: ReactiveSettings) -> None:
        self.m, self.u = ctx.run.memory, ctx.run.cpu
        self.peaks = (ctx.run.peak_memory, ctx.run.peak_cpu)
        self.node: NodeShape = ctx.node
        self.start, self.floor, self.s = start, floor, s
        self.window = max(1, round(s.shrink_after_s / ctx.settings.grid_s))
        self.target = start
        self.last_change = 0

    def initial(self) -> Limits:
        return self.start

    def next_wakeup(self, k: int, current: Limits) -> int:
        due = self.last_change + self.window
        end = min(due, self.m.size)
        lim = self.target
        # a trigger line above the run's peaks is never reached (no need to look at its samples)
        never = (
            lim.memory_bytes * self.s.trigger > self.peaks[0]
            and lim.cpu_cores * self.s.trigger > self.peaks[1]
        )
        if end > k and not never:
            hot = (self.m[k:end] >= lim.memory_bytes * self.s.trigger) | (
                np.minimum(self.u[k:end], lim.cpu_cores) >= lim.cpu_cores * self.s.trigger
            )
            hit = np.flatnonzero(hot)
            if hit.size:
                return k + int(hit[0]) + 1  # the sample is seen once it is taken
        return max(due, k + 1)

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        lim = self.target
        mem, cpu = float(self.m[k - 1]), float(min(self.u[k - 1], current.cpu_cores))
        grow_mem = mem >= lim.memory_bytes * self.s.trigger
        grow_cpu = cpu >= lim.cpu_cores * self.s.trigger
        if grow_mem or grow_cpu:
            new = Limits(
                max(lim.memory_bytes, mem * (1 + self.s.grow_margin)) if grow_mem else lim.memory_bytes,
                max(lim.cpu_cores, cpu * (1 + self.s.grow_margin)) if grow_cpu else lim.cpu_cores,
            )
        elif k >= self.last_change + self.window:
            lo = max(0, k - self.window)
            new = Limits(
                max(float(self.m[lo:k].max()) * (1 + self.s.shrink_margin), self.floor),
                float(np.minimum(self.u[lo:k], current.cpu_cores).max()) * (1 + self.s.shrink_margin),
            )
        else:
            return None
        self.last_change = k
        new = clamp(new, self.node)
        if new == lim:
            return None
        self.target = new
        return new
