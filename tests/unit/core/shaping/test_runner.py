"""ShapingGroup: one thread ticks every member each round; a member that raises is logged once and
ticked again while the others go on; removed members are never ticked again; close stops it all."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from airflow_predictive.core.shaping.runner import ShapingGroup


class Member:
    def __init__(self, fail: bool = False) -> None:
        self.ticks = 0
        self.fail = fail
        self.ticked = threading.Event()

    def tick(self) -> None:
        self.ticks += 1
        self.ticked.set()
        if self.fail:
            raise RuntimeError("boom")


def test_one_round_ticks_every_member_and_survives_a_failing_one(caplog: pytest.LogCaptureFixture) -> None:
    group = ShapingGroup(1.0)
    good, bad = Member(), Member(fail=True)
    group._members.update({"good": (good, threading.Lock()), "bad": (bad, threading.Lock())})  # no thread
    with caplog.at_level(logging.DEBUG, logger="airflow_predictive.core.shaping.runner"):
        for _ in range(3):
            assert group.round() == 2
    assert good.ticks == bad.ticks == 3
    assert sum("failed; the task keeps its resources" in r.getMessage() for r in caplog.records) == 1


def test_a_removed_member_is_not_ticked_again() -> None:
    group = ShapingGroup(1.0)
    a, b = Member(), Member()
    group._members.update({"a": (a, threading.Lock()), "b": (b, threading.Lock())})
    group.round()
    assert group.remove("a") is a and group.remove("a") is None
    group.round()
    assert (a.ticks, b.ticks) == (1, 2) and len(group) == 1


def test_the_thread_starts_with_the_first_member_and_stops_on_close() -> None:
    group = ShapingGroup(0.01)
    assert not group.alive
    first, second = Member(), Member()
    group.add(1, first)
    group.add(2, second)  # the same thread takes it
    assert first.ticked.wait(10) and second.ticked.wait(10)
    assert group.alive
    group.close()
    assert not group.alive and len(group) == 0
    after = (first.ticks, second.ticks)
    time.sleep(0.05)
    assert (first.ticks, second.ticks) == after


class Slow(Member):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def tick(self) -> None:
        super().tick()
        self.release.wait(10)


def test_remove_waits_for_that_members_tick_in_progress_and_no_longer() -> None:
    group = ShapingGroup(0.01)
    slow = Slow()
    group.add("slow", slow)
    assert slow.ticked.wait(10)  # its tick is now blocked inside
    returned = threading.Event()
    remover = threading.Thread(target=lambda: (group.remove("slow", wait_s=30), returned.set()))
    remover.start()
    assert not returned.wait(0.2)  # still waiting for the tick in progress
    slow.release.set()
    assert returned.wait(10)
    ticks = slow.ticks
    group.add("other", Member())  # the thread goes on with the others
    time.sleep(0.05)
    assert slow.ticks == ticks
    group.close()


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ShapingGroup(0)
