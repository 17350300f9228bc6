from __future__ import annotations

from airflow_predictive.core.feedback import (
    FailureFacts,
    classify_failure,
    curve_summary,
    exit_code_from_message,
    sparkline,
)
from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.core.model.runs import Outcome
from airflow_predictive.core.model.series import ResourceSample, UsageSeries


def test_oom_events_win_over_everything() -> None:
    outcome, note = classify_failure(FailureFacts("AirflowException", "exit code 137", oom_events=1))
    assert outcome is Outcome.OOM_KILLED and "OOM" in note


def test_timeouts_are_recognised() -> None:
    assert classify_failure(FailureFacts("AirflowTaskTimeout", "Timeout, PID: 1"))[0] is Outcome.TIMED_OUT


def test_sigkill_without_oom_evidence_stays_failed_but_says_so() -> None:
    outcome, note = classify_failure(
        FailureFacts(
            "AirflowException", "Bash command failed. The command returned a non-zero exit code 137."
        )
    )
    assert outcome is Outcome.FAILED and "SIGKILL" in note


def test_exit_code_parsing() -> None:
    assert exit_code_from_message("returned a non-zero exit code 137.") == 137
    assert exit_code_from_message("no code here") is None


def test_curve_summary_shows_peaks() -> None:
    s = UsageSeries.from_samples(
        [ResourceSample(float(i), ResourceVector(memory_bytes=i * 1024**3, cpu_cores=1.0)) for i in range(4)]
    )
    text = curve_summary(s)
    assert "peak 3.00 GiB" in text and "peak 1.00 cores" in text
    assert sparkline([0, 1, 2, 3], width=4)[-1] == "█"
