"""Small synthetic runs and a tiny estimator for the profiler tests (no shared data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Self

import numpy as np

from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.core.model.runs import Outcome, RunIdentity, RunRecord, RunSource, TaskKey
from airflow_predictive.core.model.series import DemandCurve, Forecast, UsageSeries
from airflow_predictive.core.profiler.estimators.base import ForecastQuery, NotFitted, RunExample

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

GIB = 1024.0**3


def ramp_series(peak_gib: float, seconds: int = 120, step: float = 2.0, cpu: float = 2.0) -> UsageSeries:
    t = np.arange(0, seconds, step)
    mem = np.minimum(1.0, (t + step) / (seconds / 2)) * peak_gib * GIB
    return UsageSeries(t, {Metric.MEMORY_BYTES: mem, Metric.CPU_CORES: np.full(t.size, cpu)})


def example(task: str, i: int, peak_gib: float, *, series: bool = True, seconds: int = 120) -> RunExample:
    s = ramp_series(peak_gib, seconds) if series else None
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=i)
    rec = RunRecord(
        identity=RunIdentity(TaskKey("wf", task), f"r{i}", 1, RunSource.TRACE),
        start=start,
        end=start + timedelta(seconds=seconds),
        outcome=Outcome.SUCCESS,
        declared=ResourceVector(cpu_cores=4, memory_bytes=8 * GIB),
        peak=s.peaks() if s is not None else ResourceVector(cpu_cores=2.0, memory_bytes=peak_gib * GIB),
        features={"input_bytes": float(i)},
        run_pk=i + 1,
    )
    return RunExample(rec, s)


class FlatHistoryPeak:
    """Flat forecast at ``factor`` x the last run's peaks; the test's own tiny estimator."""

    def __init__(
        self, name: str = "flat", factor: float = 1.0, metrics: tuple[Metric, ...] | None = None
    ) -> None:
        self.name = name
        self.factor = factor
        self.only = metrics

    def fit(self, examples: Sequence[RunExample]) -> Self:
        return self

    def predict(self, query: ForecastQuery) -> Forecast:
        if not query.history:
            raise NotFitted("no history")
        last = query.history[-1]
        curves = {}
        for m in self.only or query.metrics:
            v = last.record.peak.get(m)
            if v is None:
                continue
            base = v * self.factor
            curves[m] = DemandCurve(
                m, 2.0, {0.5: np.full(60, base), 0.9: np.full(60, base * 1.1), 0.99: np.full(60, base * 1.2)}
            )
        return Forecast(curves, {0.5: 120.0}, self.name)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, directory: Path) -> Self:
        return cls()


class Broken(FlatHistoryPeak):
    def predict(self, query: ForecastQuery) -> Forecast:
        raise RuntimeError("model file is corrupt")
