"""Synthetic runs for the profiler's tests: small, seeded, with known shapes (ramps, plateaus)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pytest

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import UsageSeries
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, RunExample

if TYPE_CHECKING:
    from collections.abc import Sequence

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def make_run(
    key: TaskKey,
    index: int,
    *,
    input_bytes: float | None = 1e9,
    peak_gib: float = 2.0,
    duration_s: float = 120.0,
    step_s: float = 2.0,
    shape: str = "ramp",
    operator: str | None = "BashOperator",
    declared: ResourceVector | None = None,
    series: bool = True,
    cpu: float = 1.5,
    noise: float = 0.0,
    seed: int = 0,
) -> RunExample:
    """One finished run: memory follows ``shape`` up to ``peak_gib``; CPU near ``cpu`` cores."""
    rng = np.random.default_rng(seed + index)
    start = T0 + timedelta(hours=index)
    times = np.arange(0.0, duration_s + 1e-9, step_s)
    frac = times / max(duration_s, 1e-9)
    if shape == "ramp":
        mem = 0.2 + 0.8 * frac
    elif shape == "plateau":
        mem = np.minimum(1.0, 0.3 + 1.4 * frac)
    else:
        mem = np.ones_like(frac)
    mem = mem * peak_gib * GIB * (1 + noise * rng.standard_normal(times.size))
    cpu_arr = np.full(times.size, cpu) * (1 + noise * rng.standard_normal(times.size))
    usage = UsageSeries(times, {Metric.MEMORY_BYTES: np.abs(mem), Metric.CPU_CORES: np.abs(cpu_arr)})
    features = {} if input_bytes is None else {"input_bytes": input_bytes}
    record = RunRecord(
        identity=RunIdentity(key, f"run_{index}", 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=float(times[-1])),
        outcome=Outcome.SUCCESS,
        declared=declared or ResourceVector(cpu_cores=4.0, memory_bytes=16 * GIB),
        peak=usage.peaks(),
        operator=operator,
        features=features,
        sample_interval_s=step_s,
        n_samples=len(usage),
    )
    return RunExample(record, usage if series else None)


def linear_task(
    key: TaskKey, n: int, *, seed: int = 0, noise: float = 0.02, shape: str = "ramp"
) -> list[RunExample]:
    """Runs whose peak and duration grow linearly with the input size (1 ... 4 GB)."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        size = float(rng.uniform(1e9, 4e9))
        runs.append(
            make_run(
                key,
                i,
                input_bytes=size,
                peak_gib=0.5 + size / 1e9,
                duration_s=60.0 + 30.0 * size / 1e9,
                noise=noise,
                seed=seed,
                shape=shape,
            )
        )
    return runs


def query_for(run: RunExample, history: Sequence[RunExample], **kwargs: object) -> ForecastQuery:
    """The query a caller would build before ``run`` starts."""
    return ForecastQuery(
        key=run.key,
        features=run.record.features,
        declared=run.record.declared,
        operator=run.record.operator,
        history=tuple(history),
        **kwargs,  # type: ignore[arg-type]
    )


class Synth:
    """The builders above, handed to tests through the ``synth`` fixture."""

    make_run = staticmethod(make_run)
    linear_task = staticmethod(linear_task)
    query_for = staticmethod(query_for)


@pytest.fixture(scope="session")
def synth() -> type[Synth]:
    return Synth


@pytest.fixture
def task_key() -> TaskKey:
    return TaskKey("etl", "transform")
