"""The replayed task executions: each held-out run's true usage on a regular grid, in recorded order.

Why a grid: a try is simulated step by step against its allocation with numpy (one step =
``grid_s`` seconds of the task's own progress), so a run of a thousand samples costs a few array
operations, not a thousand Python iterations. Runs are split per task chronologically (first
``train_fraction`` trains the forecasters, the rest is replayed), exactly as the profiler's
evaluation splits them; the history a policy may use for a run is the task's earlier runs only.

``scaled_up`` repeats the replayed runs (sharing their arrays) to measure the simulator's speed on
more executions than a trace holds; it is synthetic and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from airflow_predictive.core.model.resources import Metric

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_predictive.core.model.runs import TaskKey
    from airflow_predictive.core.profiler.estimators.base import RunExample

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_CPU_CORES = 0.01  # a CPU reading below this is idle; keeps throttling ratios finite


@dataclass(frozen=True, eq=False)
class RunCurve:
    """A run's true usage per grid step (bytes / cores) with prefix sums and peaks (shared by
    synthetic copies of the run)."""

    memory: np.ndarray  # [steps] bytes
    cpu: np.ndarray  # [steps] cores
    memory_cumsum: np.ndarray = field(init=False, repr=False)  # [steps + 1]
    cpu_cumsum: np.ndarray = field(init=False, repr=False)  # [steps + 1]
    peak_memory: float = field(init=False)
    peak_cpu: float = field(init=False)

    def __post_init__(self) -> None:
        mem, cpu = _frozen(self.memory), _frozen(self.cpu)
        if mem.shape != cpu.shape or mem.ndim != 1 or mem.size == 0:
            raise ValueError("a run needs memory and CPU arrays of the same non-zero length")
        if not (np.all(np.isfinite(mem)) and np.all(np.isfinite(cpu))) or mem.min() < 0 or cpu.min() <= 0:
            raise ValueError("usage must be finite, memory >= 0 and CPU > 0")
        object.__setattr__(self, "memory", mem)
        object.__setattr__(self, "cpu", cpu)
        object.__setattr__(self, "memory_cumsum", _frozen(np.concatenate([[0.0], np.cumsum(mem)])))
        object.__setattr__(self, "cpu_cumsum", _frozen(np.concatenate([[0.0], np.cumsum(cpu)])))
        object.__setattr__(self, "peak_memory", float(mem.max()))
        object.__setattr__(self, "peak_cpu", float(cpu.max()))


@dataclass(frozen=True, eq=False)
class SimRun:
    """One replayed task execution.

    index: position in the replay (recorded order). arrival_s: seconds after the first replayed
    run's recorded start. curve: its true usage over its own progress, one value per ``grid_s``.
    declared_*: what the author asked for (None: not declared). example: the stored run it came
    from (features, history), shared by synthetic copies. origin: index of the original run for
    a synthetic copy (its own index otherwise).
    """

    index: int
    key: TaskKey
    arrival_s: float
    curve: RunCurve
    grid_s: float
    declared_memory: float | None
    declared_cpu: float | None
    example: RunExample
    origin: int

    @property
    def memory(self) -> np.ndarray:
        return self.curve.memory

    @property
    def cpu(self) -> np.ndarray:
        return self.curve.cpu

    @property
    def memory_cumsum(self) -> np.ndarray:
        return self.curve.memory_cumsum

    @property
    def cpu_cumsum(self) -> np.ndarray:
        return self.curve.cpu_cumsum

    @property
    def peak_memory(self) -> float:
        return self.curve.peak_memory

    @property
    def peak_cpu(self) -> float:
        return self.curve.peak_cpu

    @property
    def steps(self) -> int:
        return int(self.curve.memory.size)

    @property
    def duration_s(self) -> float:
        return self.steps * self.grid_s


@dataclass(frozen=True, eq=False)
class Workload:
    """The replay: runs in recorded order, the training runs, and each run's earlier runs.

    history_of(run) gives the task's runs that started before it (train and earlier replayed),
    the same history the profiler's held-out evaluation gives each forecast.
    """

    runs: tuple[SimRun, ...]
    train: tuple[RunExample, ...]
    grid_s: float
    synthetic_factor: int = 1
    _by_task: dict[TaskKey, list[RunExample]] = field(default_factory=dict, repr=False)
    _position: dict[int, int] = field(default_factory=dict, repr=False)

    def history_of(self, run: SimRun) -> list[RunExample]:
        runs = self._by_task.get(run.key, [])
        return runs[: self._position.get(id(run.example), 0)]

    @property
    def tasks(self) -> int:
        return len({r.key for r in self.runs})


def _start(ex: RunExample) -> datetime:
    return ex.record.start or _EPOCH


def usage_grid(example: RunExample, grid_s: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(memory, cpu) per grid step from a run's series (max over each step, gaps held); None when
    the run has no memory series. A run without CPU readings gets an idle CPU curve."""
    s = example.series
    if s is None or len(s) == 0 or s.peak(Metric.MEMORY_BYTES) is None:
        return None
    horizon = max(s.duration_s + grid_s, grid_s)
    mem = s.resampled(grid_s, Metric.MEMORY_BYTES, horizon)
    cpu = (
        s.resampled(grid_s, Metric.CPU_CORES, horizon)
        if s.peak(Metric.CPU_CORES) is not None
        else np.zeros(mem.size)
    )
    n = min(mem.size, cpu.size)
    mem, cpu = np.nan_to_num(mem[:n]), np.nan_to_num(cpu[:n])
    return mem.astype(float), np.maximum(cpu.astype(float), MIN_CPU_CORES)


def build_workload(
    examples: Sequence[RunExample], *, grid_s: float = 1.0, train_fraction: float = 0.5
) -> Workload:
    """Split per task chronologically and put the held-out runs with a memory series on the grid."""
    from airflow_predictive.training.dataset import chronological, split_chronologically

    ordered = chronological(examples)
    train, test = split_chronologically(ordered, train_fraction)
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in ordered:
        by_task.setdefault(ex.key, []).append(ex)
    position = {id(ex): i for runs in by_task.values() for i, ex in enumerate(runs)}
    usable = [(ex, g) for ex in test if (g := usage_grid(ex, grid_s)) is not None]
    t0 = min((_start(ex) for ex, _ in usable), default=_EPOCH)
    runs = []
    for i, (ex, (mem, cpu)) in enumerate(usable):
        declared = ex.record.declared
        runs.append(
            SimRun(
                index=i,
                key=ex.key,
                arrival_s=max(0.0, (_start(ex) - t0).total_seconds()),
                curve=RunCurve(mem, cpu),
                grid_s=grid_s,
                declared_memory=declared.memory_bytes or None,
                declared_cpu=declared.cpu_cores or None,
                example=ex,
                origin=i,
            )
        )
    return Workload(tuple(runs), tuple(train), grid_s, 1, by_task, position)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=float)
    a.setflags(write=False)
    return a


def scaled_up(workload: Workload, executions: int, *, gap_s: float = 60.0) -> Workload:
    """A synthetic replay of ``executions`` runs: the workload repeated back to back (copies share
    the originals' usage arrays, forecasts and histories), each copy starting ``gap_s`` after the
    previous one's last arrival."""
    if not workload.runs:
        raise ValueError("nothing to scale up: the workload has no runs")
    span = max(r.arrival_s for r in workload.runs) + gap_s
    copies = math.ceil(executions / len(workload.runs))
    runs: list[SimRun] = []
    for c in range(copies):
        for r in workload.runs:
            if len(runs) == executions:
                break
            runs.append(replace(r, index=len(runs), arrival_s=r.arrival_s + c * span, origin=r.origin))
    return replace(workload, runs=tuple(runs), synthetic_factor=copies)
