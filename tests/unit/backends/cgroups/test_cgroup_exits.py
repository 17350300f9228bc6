"""Exit classification: OOM only with evidence from the cgroup."""

from __future__ import annotations

from airflow_predictive.backends.cgroups.exits import classify_exit, hit_limit_without_counter
from airflow_predictive.backends.cgroups.group import CgroupReading
from airflow_predictive.core.model.backend import ExitKind


def _reading(oom_kills: int | None, peak: int | None, limit: int | None) -> CgroupReading:
    return CgroupReading(None, None, None, peak, limit, None, oom_kills, None)


def test_sigkill_with_an_oom_kill_is_oom_killed_with_exit_137() -> None:
    state = classify_exit(-9, 1)
    assert state.kind is ExitKind.OOM_KILLED and state.exit_code == 137 and state.oom_events == 1


def test_shell_exit_137_after_a_child_was_oom_killed_is_oom_killed() -> None:
    assert classify_exit(137, 2).kind is ExitKind.OOM_KILLED


def test_success_stays_success_even_after_a_child_oom() -> None:
    state = classify_exit(0, 1)
    assert state.kind is ExitKind.SUCCEEDED and state.oom_events == 1
    assert "OOM" in state.reason


def test_failures_without_oom_are_failures() -> None:
    assert classify_exit(3, 0).reason == "exited with 3"
    assert classify_exit(-15, 0).reason == "killed by SIGTERM"
    assert classify_exit(-9, 0).kind is ExitKind.FAILED
    assert classify_exit(-200, 0).reason == "killed by signal 200"


def test_inferred_oom_needs_sigkill_and_the_peak_at_the_limit() -> None:
    at_limit = _reading(None, 64 * 1024 * 1024, 64 * 1024 * 1024)
    assert hit_limit_without_counter(at_limit)
    assert not hit_limit_without_counter(_reading(None, 10 * 1024 * 1024, 64 * 1024 * 1024))
    assert not hit_limit_without_counter(_reading(0, 64 * 1024 * 1024, 64 * 1024 * 1024))  # counter known
    assert not hit_limit_without_counter(_reading(None, 64 * 1024 * 1024, None))
    assert not hit_limit_without_counter(None)
    inferred = classify_exit(-9, 0, True)
    assert inferred.kind is ExitKind.OOM_KILLED and "inferred" in inferred.reason
    assert classify_exit(-15, 0, True).kind is ExitKind.FAILED
