from __future__ import annotations

import numpy as np

from airflow_predictive.core.model.resources import GIB, Metric, ResourceVector
from airflow_predictive.core.model.series import DemandCurve, Forecast
from airflow_predictive.core.profiler.explain import explain, format_duration


def test_durations_read_naturally() -> None:
    assert format_duration(45) == "45 s"
    assert format_duration(130) == "2 min 10 s"
    assert format_duration(120) == "2 min"
    assert format_duration(3900) == "1 h 5 min"


def _forecast() -> Forecast:
    mem = np.concatenate([np.linspace(0.5, 3.0, 13), np.full(10, 2.0)]) * GIB  # peak at step 12
    cpu = np.concatenate([np.full(9, 3.2), np.full(14, 1.0)])
    curves = {
        Metric.MEMORY_BYTES: DemandCurve(Metric.MEMORY_BYTES, 10.0, {0.5: mem * 0.9, 0.9: mem * 1.0333}),
        Metric.CPU_CORES: DemandCurve(Metric.CPU_CORES, 10.0, {0.5: cpu, 0.9: cpu * 1.1}),
    }
    return Forecast(curves, {0.5: 230.0}, "test")


def test_sentence_names_peak_time_and_cpu_phase() -> None:
    text = explain(_forecast(), ResourceVector(cpu_cores=4))
    assert text == (
        "memory peaks at 3.1 GiB (p90) about 2 min after start; "
        "CPU 80% of 4 cores for the first 1 min 30 s; runs about 3 min 50 s (p50)"
    )


def test_cpu_without_declared_cores_is_in_cores() -> None:
    assert "CPU 3.2 cores for the first" in explain(_forecast())


def test_missing_metrics_are_left_out() -> None:
    only_cpu = Forecast({Metric.CPU_CORES: _forecast().curves[Metric.CPU_CORES]}, {}, "x", peak_only=True)
    text = explain(only_cpu)
    assert "memory" not in text and text.endswith("(from peaks only)")
    assert explain(Forecast({}, {}, "empty")) == "no forecast (empty)"
