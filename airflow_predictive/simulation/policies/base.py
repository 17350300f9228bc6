"""The policy interface of the simulator, and drivers shared by several policies.

A policy sees the replay in cluster-time order: ``prepare`` once (forecasts, models), then for
every try ``driver(ctx)`` (what the try starts with and how it is controlled while it runs) and
``finished(ctx, result)`` (what it learns: an OOM bump, a new peak). Retry rules live in
``driver``: ``ctx.previous`` is the killed try's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.simulation.execution import NEVER, Limits

if TYPE_CHECKING:
    from airflow_predictive.simulation.execution import SimSettings, TryDriver, TryResult
    from airflow_predictive.simulation.workload import SimRun, Workload

VPA_OOM_MIN_BUMP = 100 * MIB
VPA_OOM_BUMP_RATIO = 1.2


@dataclass(frozen=True)
class NodeShape:
    """The largest allocation one node can give a try (a try never asks for more)."""

    memory_bytes: float
    cpu_cores: float


@dataclass(frozen=True)
class TryContext:
    """One try about to be queued: the run, which try, the previous try's result, cluster time."""

    run: SimRun
    attempt: int
    previous: TryResult | None
    now_s: float
    settings: SimSettings
    node: NodeShape


class Policy(Protocol):
    name: str

    def prepare(self, workload: Workload, settings: SimSettings) -> None: ...

    def driver(self, ctx: TryContext) -> TryDriver: ...

    def finished(self, ctx: TryContext, result: TryResult) -> None: ...


class FlatDriver:
    """The same limits for the whole try (declared, VPA at creation, Autopilot, a flat plan)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def initial(self) -> Limits:
        return self.limits

    def next_wakeup(self, k: int, current: Limits) -> int:
        return NEVER

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        return None


class StaticDriver:
    """Limits per grid step known before the try starts (``static`` arrays; see ``run_try``)."""

    def __init__(self, memory: np.ndarray, cpu: np.ndarray) -> None:
        self.static = (memory, cpu)

    def initial(self) -> Limits:
        return Limits(float(self.static[0][0]), float(self.static[1][0]))

    def next_wakeup(self, k: int, current: Limits) -> int:
        return NEVER

    def decide(self, k: int, now_s: float, current: Limits) -> Limits | None:
        return None


def clamp(limits: Limits, node: NodeShape) -> Limits:
    """Within one node (a pod asking for more than a node has would stay Pending forever)."""
    return Limits(
        min(limits.memory_bytes, node.memory_bytes), min(max(limits.cpu_cores, 0.01), node.cpu_cores)
    )


def vpa_oom_bump(limit_bytes: float) -> float:
    """VPA's memory after an OOM kill: max(limit + 100 MiB, limit x 1.2)."""
    return max(limit_bytes + VPA_OOM_MIN_BUMP, limit_bytes * VPA_OOM_BUMP_RATIO)


def window_max(values: np.ndarray, window: int) -> np.ndarray:
    """Per window of ``window`` steps, the maximum (the last window may be shorter)."""
    n = values.size
    blocks = math.ceil(n / window)
    padded = np.full(blocks * window, -np.inf)
    padded[:n] = values
    return padded.reshape(blocks, window).max(axis=1)


def declared_limits(run: SimRun, node: NodeShape) -> Limits:
    """What the author asked for; an undeclared dimension gets the whole node (no request)."""
    return clamp(
        Limits(
            run.declared_memory if run.declared_memory else node.memory_bytes,
            run.declared_cpu if run.declared_cpu else node.cpu_cores,
        ),
        node,
    )
