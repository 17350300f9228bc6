"""When a pod started, read from its API body: the clock a shaper's plan and forecast follow."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow_predictive.triggers.pod_shaper import pod_started_at

T0 = datetime(2026, 12, 1, 23, 0, 0, tzinfo=UTC).timestamp()


def _pod(**status: object) -> dict[str, object]:
    return {"metadata": {"name": "p"}, "status": status}


def test_the_containers_own_start_wins_over_the_pods() -> None:
    pod = _pod(
        startTime="2026-12-01T23:00:00Z",
        containerStatuses=[
            {"name": "sidecar", "state": {"running": {"startedAt": "2026-12-01T23:00:01Z"}}},
            {"name": "base", "state": {"running": {"startedAt": "2026-12-01T23:00:07Z"}}},
        ],
    )
    assert pod_started_at(pod, "base") == T0 + 7
    assert pod_started_at(pod, "sidecar") == T0 + 1


def test_a_container_not_running_yet_falls_back_to_the_pods_start() -> None:
    pod = _pod(
        startTime="2026-12-01T23:00:00+00:00", containerStatuses=[{"name": "base", "state": {"waiting": {}}}]
    )
    assert pod_started_at(pod, "base") == T0


def test_a_body_that_does_not_say_gives_none() -> None:
    assert pod_started_at(_pod(), "base") is None
    assert pod_started_at(_pod(startTime="yesterday"), "base") is None
    assert pod_started_at({"metadata": {}}, "base") is None
    assert pod_started_at(None, "base") is None
