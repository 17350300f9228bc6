"""Running one shadow on a backend: sampled, stopped at its budget, classified."""

from __future__ import annotations

from airflow_predictive.backends.fake import FakeBackend, ManualClock, ramp_script
from airflow_predictive.core.model.backend import ProvisionSpec
from airflow_predictive.core.model.resources import MIB, Metric
from airflow_predictive.core.ports import ProvisionError
from airflow_predictive.core.shadow.policy import ShadowSettings, budget_for
from airflow_predictive.core.shadow.reforecast import ShadowEnd
from airflow_predictive.core.shadow.runner import run_shadow

SETTINGS = ShadowSettings(memory_bytes=256 * MIB, cpu_cores=0.5)


def _run(script, seconds: float = 10.0, name: str = "shadow"):
    clock = ManualClock()
    backend = FakeBackend(clock)
    backend.add_script(name, script)
    budget = budget_for(seconds / SETTINGS.budget, SETTINGS)

    def start(allocation):
        return backend.provision(ProvisionSpec(name=name, command=("x",)), allocation)

    run = run_shadow(backend, start, budget, clock=clock, sample_interval_s=0.5, sleep=clock.advance)
    return run, backend


def test_a_long_task_is_stopped_at_its_budget_with_its_prefix_sampled():
    run, backend = _run(ramp_script(100, 0.2, seconds=600, ramp_s=20), seconds=10.0)
    obs = run.observation
    assert obs.end is ShadowEnd.BUDGET
    assert 10.0 <= obs.wall_s < 11.0
    assert len(obs.prefix) >= 15
    assert obs.limits.memory_bytes == 256 * MIB
    assert obs.prefix.peak(Metric.MEMORY_BYTES) > 8 * MIB
    assert backend._tasks[run.handle_ref].released  # released (killed) at the deadline
    assert run.cost.cpu_cores == obs.limits.cpu_cores * obs.wall_s


def test_a_short_task_completes_inside_its_budget():
    run, _ = _run(ramp_script(50, 0.2, seconds=3, ramp_s=1), seconds=10.0)
    assert run.observation.end is ShadowEnd.COMPLETED
    assert run.observation.wall_s < 4


def test_a_task_above_the_small_memory_limit_is_oom_killed():
    run, _ = _run(ramp_script(1024, 0.2, seconds=60, ramp_s=4), seconds=10.0)
    assert run.observation.end is ShadowEnd.OOM_KILLED
    assert run.observation.end.usable


def test_a_failing_start_is_not_started_and_never_raises():
    clock = ManualClock()
    backend = FakeBackend(clock)

    def start(allocation):
        raise ProvisionError("no such program")

    run = run_shadow(backend, start, budget_for(100, SETTINGS), clock=clock, sleep=clock.advance)
    assert run.observation.end is ShadowEnd.NOT_STARTED
    assert "no such program" in run.observation.reason
