"""Small hand-made runs and workloads for the simulator's tests (known curves, known answers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.estimators.base import RunExample
from airflow_predictive.simulation.workload import RunCurve, SimRun, Workload

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEY = TaskKey("wf", "task")


def example(
    memory: np.ndarray,
    cpu: np.ndarray,
    *,
    start_s: float = 0.0,
    key: TaskKey = KEY,
    name: str = "r",
    declared: ResourceVector | None = None,
) -> RunExample:
    times = np.arange(memory.size, dtype=float)
    start = T0 + timedelta(seconds=start_s)
    record = RunRecord(
        identity=RunIdentity(key, name, 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=float(memory.size)),
        outcome=Outcome.SUCCESS,
        declared=declared or ResourceVector(cpu_cores=4.0, memory_bytes=8 * GIB),
        peak=ResourceVector(cpu_cores=float(cpu.max()), memory_bytes=float(memory.max())),
        operator="op",
        n_samples=int(memory.size),
    )
    return RunExample(record, UsageSeries(times, {Metric.MEMORY_BYTES: memory, Metric.CPU_CORES: cpu}))


def sim_run(
    memory: np.ndarray,
    cpu: np.ndarray | None = None,
    *,
    index: int = 0,
    arrival_s: float = 0.0,
    declared_memory: float | None = 8 * GIB,
    declared_cpu: float | None = 4.0,
    key: TaskKey = KEY,
) -> SimRun:
    memory = np.asarray(memory, dtype=float)
    cpu = np.full(memory.size, 1.0) if cpu is None else np.asarray(cpu, dtype=float)
    return SimRun(
        index=index,
        key=key,
        arrival_s=arrival_s,
        curve=RunCurve(memory, cpu),
        grid_s=1.0,
        declared_memory=declared_memory,
        declared_cpu=declared_cpu,
        example=example(memory, cpu, start_s=arrival_s, key=key, name=f"r{index}"),
        origin=index,
    )


def workload(*runs: SimRun, train: tuple[RunExample, ...] = ()) -> Workload:
    by_task: dict[TaskKey, list[RunExample]] = {}
    for ex in (*train, *(r.example for r in runs)):
        by_task.setdefault(ex.key, []).append(ex)
    position = {id(ex): i for exs in by_task.values() for i, ex in enumerate(exs)}
    return Workload(tuple(runs), train, 1.0, 1, by_task, position)
