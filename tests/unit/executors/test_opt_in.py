from __future__ import annotations

from airflow_predictive.core.model.resources import GIB, Metric
from airflow_predictive.executors.opt_in import task_settings


def test_true_and_false_opt_in_and_out_and_nothing_follows_the_default() -> None:
    assert task_settings({"predictive": True}).enabled
    assert not task_settings({"predictive": False}, default_enabled=True).enabled
    assert task_settings(None, default_enabled=True).enabled
    assert not task_settings({}).enabled


def test_a_dict_opts_in_with_its_declared_resources_and_settings() -> None:
    s = task_settings(
        {
            "predictive": {
                "memory": "2Gi",
                "cpu": 1,
                "risk": {"memory": 0.95},
                "max": {"memory": "4Gi"},
                "duration": 90,
            }
        }
    )
    assert s.enabled and s.declared.memory_bytes == 2 * GIB and s.declared.cpu_cores == 1.0
    assert s.risk[Metric.MEMORY_BYTES] == 0.95 and s.risk[Metric.CPU_CORES] == 0.9
    assert s.maximum.memory_bytes == 4 * GIB and s.duration_s == 90.0


def test_bad_values_are_ignored_never_raised() -> None:
    s = task_settings({"predictive": {"risk": 7, "max": {"memory": "lots", "disk": 1}, "duration": "soon"}})
    assert s.enabled and s.risk[Metric.MEMORY_BYTES] == 0.99
    assert s.maximum.is_empty() and s.duration_s is None
    assert not task_settings({"predictive": "yes please"}).enabled
