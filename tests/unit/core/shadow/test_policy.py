"""When a task is shadowed, and what a shadow may cost."""

from __future__ import annotations

import pytest

from airflow_predictive.core.model.resources import MIB
from airflow_predictive.core.shadow.policy import (
    ShadowMode,
    ShadowReason,
    ShadowSettings,
    budget_for,
    decide,
    relative_errors,
)

S = ShadowSettings()


def test_a_task_with_fewer_runs_than_the_minimum_is_shadowed_as_a_cold_start():
    d = decide(ShadowMode.AUTO, 2, [], S)
    assert d.run and d.reason is ShadowReason.COLD_START
    assert not decide(ShadowMode.AUTO, 3, [0.05, 0.1, 0.02], S).run


def test_recent_errors_beyond_the_threshold_are_drift():
    errors = relative_errors(1000.0, [1000.0, 2000.0, 1900.0, 2100.0])
    d = decide(ShadowMode.AUTO, 10, errors, S)
    assert d.run and d.reason is ShadowReason.DRIFT
    # one bad run among good ones is not drift (median of the newest window)
    assert not decide(ShadowMode.AUTO, 10, relative_errors(1000.0, [1000.0, 1050.0, 3000.0]), S).run
    # too few errors to judge
    assert not decide(ShadowMode.AUTO, 10, [0.9], S).run


def test_asked_and_disabled_override_the_history():
    assert decide(ShadowMode.parse(True), 50, [], S).reason is ShadowReason.ASKED
    assert not decide(ShadowMode.parse(False), 0, [], S).run
    assert ShadowMode.parse("auto") is ShadowMode.AUTO
    with pytest.raises(ValueError, match="shadow_run"):
        ShadowMode.parse("sometimes")


def test_the_budget_is_a_share_of_the_predicted_runtime_within_min_and_deadline():
    assert budget_for(1000.0, S).seconds == pytest.approx(50.0)
    assert budget_for(20.0, S).seconds == S.min_s  # 1 s would say nothing
    assert budget_for(1e6, S).seconds == S.deadline_s
    unknown = budget_for(None, S)
    assert unknown.seconds == pytest.approx(S.default_runtime_s * S.budget)
    assert "assumed" in unknown.note
    assert unknown.resources.memory_bytes == 512 * MIB


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ShadowSettings(budget=0.0)
    with pytest.raises(ValueError):
        ShadowSettings(deadline_s=float("inf"))


def test_errors_without_a_forecast_or_peaks_are_empty():
    assert relative_errors(None, [1.0]) == []
    assert relative_errors(100.0, [None, 0.0, float("nan")]) == []


def test_a_local_task_is_shadowed_only_with_a_command_to_replay() -> None:
    from airflow_predictive.core.shadow.policy import ShadowMode, ShadowReason, local_gate

    never = local_gate(ShadowMode.NEVER, "shadow_cmds")
    assert never is not None and not never.run and never.reason is ShadowReason.DISABLED
    for mode in (ShadowMode.AUTO, ShadowMode.ALWAYS):
        blocked = local_gate(mode, None)
        assert blocked is not None and not blocked.run and blocked.reason is ShadowReason.NO_COMMAND
        assert local_gate(mode, "its bash_command") is None  # decide() says (cold / drift / asked)
