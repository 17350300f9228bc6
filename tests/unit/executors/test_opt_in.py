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


def test_shadow_run_and_shadow_cmds_are_parsed_and_a_local_task_is_not_shadowed_by_default() -> None:
    from airflow_predictive.core.shadow.policy import ShadowMode

    assert task_settings({"predictive": True}).shadow_run is ShadowMode.NEVER
    assert task_settings({"predictive": {}}, default_shadow=ShadowMode.AUTO).shadow_run is ShadowMode.AUTO
    s = task_settings({"predictive": {"shadow_run": True, "shadow_cmds": ["python", "dry.py"]}})
    assert s.shadow_run is ShadowMode.ALWAYS and s.shadow_cmds == ("python", "dry.py")
    auto = task_settings({"predictive": {"shadow_run": "auto", "shadow_cmds": "echo dry"}})
    assert auto.shadow_run is ShadowMode.AUTO and auto.shadow_cmds == ("/bin/bash", "-c", "echo dry")
    bad = task_settings({"predictive": {"shadow_run": "sometimes", "shadow_cmds": [1, 2]}})
    assert bad.enabled and bad.shadow_run is ShadowMode.NEVER and bad.shadow_cmds is None
