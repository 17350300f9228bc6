"""The server-side queue never blocks its caller and drops its oldest job when full."""

from __future__ import annotations

import threading

from airflow_predictive.listeners.background import BackgroundWriter


def test_a_full_queue_drops_the_oldest_job_and_counts_it() -> None:
    gate = threading.Event()
    ran: list[int] = []
    writer = BackgroundWriter(capacity=2)
    writer.submit("blocker", gate.wait)  # the thread takes this one and waits
    while writer.pending:  # until the worker holds the blocker
        threading.Event().wait(0.01)
    for i in range(4):
        writer.submit(f"job {i}", lambda i=i: ran.append(i))
    assert writer.dropped == 2 and writer.pending == 2
    gate.set()
    assert writer.drain(timeout=10)
    assert ran == [2, 3]


def test_a_failing_job_is_counted_and_the_next_still_runs() -> None:
    ran: list[str] = []
    writer = BackgroundWriter()

    def boom() -> None:
        raise RuntimeError("database hung")

    writer.submit("failure of d.t", boom)
    writer.submit("next", lambda: ran.append("next"))
    assert writer.drain(timeout=10)
    assert writer.failed == 1 and ran == ["next"]
