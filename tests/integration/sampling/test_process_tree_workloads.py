"""ProcessTreeSource on real processes: memory steps, CPU burn, children of children, loopback traffic."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.sampling.process_tree import ProcessTreeSource
from tests.integration.sampling.workload_driver import Workload

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_predictive.core.model.resources import ResourceVector

MIB = 1024 * 1024


@pytest.fixture
def workload() -> Iterator[Workload]:
    w = Workload()
    yield w
    w.close()


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 1.0
        return self.t

    def now(self) -> datetime:
        return datetime.now(UTC)


def _read(source: ProcessTreeSource) -> ResourceVector:
    reading = source.read()
    assert reading is not None
    return reading


def test_memory_peak_follows_allocation_steps_within_ten_percent(workload: Workload) -> None:
    source = ProcessTreeSource(workload.pid, network=False)
    base = _read(source).memory_bytes
    assert base is not None
    peak = base
    for _ in range(4):  # 4 steps of 48 MiB
        workload.do("alloc 48")
        reading = _read(source).memory_bytes
        assert reading is not None
        peak = max(peak, reading)
    allocated = 4 * 48 * MIB
    assert peak - base == pytest.approx(allocated, rel=0.10)
    workload.do("free")
    after = _read(source).memory_bytes
    assert after is not None and after < peak - allocated / 2


def test_cpu_of_a_busy_process_matches_what_it_used(workload: Workload) -> None:
    source = ProcessTreeSource(workload.pid, network=False)
    _read(source)
    t0 = time.monotonic()
    used = workload.do("burn 1.5")
    reading = _read(source)
    wall = time.monotonic() - t0
    assert reading.cpu_cores is not None
    assert reading.cpu_cores > 0.5  # busy the whole window
    assert reading.cpu_cores * wall == pytest.approx(used, rel=0.15, abs=0.05)


def test_children_of_children_are_counted_while_alive_and_after_they_exit(workload: Workload) -> None:
    source = ProcessTreeSource(workload.pid, network=False)
    base = _read(source).memory_bytes
    assert base is not None
    child = int(workload.do("child_hold 64"))
    reading = _read(source)
    assert child in source.pids and len(source.pids) == 3  # workload, child, grandchild
    assert reading.memory_bytes is not None
    # two interpreters holding 64 MiB each; each new interpreter adds at most ~20 MiB of its own
    assert 2 * 64 * MIB <= reading.memory_bytes - base <= 2 * (64 + 20) * MIB
    workload.do("child_release")
    _read(source)
    assert source.pids == (workload.pid,)
    # CPU of a grandchild that ran and was reaped between two readings still counts
    t0 = time.monotonic()
    used = workload.do("child_burn 1.0")
    reading = _read(source)
    wall = time.monotonic() - t0
    assert reading.cpu_cores is not None
    assert reading.cpu_cores * wall >= used * 0.9
    assert reading.cpu_cores * wall <= used + 0.6  # plus two interpreters starting, not double counted


def test_network_of_the_tree_counts_its_loopback_traffic() -> None:
    code = (
        "import socket,sys,threading\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname()); a, _ = s.accept()\n"
        "print('up', flush=True); sys.stdin.readline()\n"
        "t = threading.Thread(target=c.sendall, args=(b'x' * 4_000_000,)); t.start(); n = 0\n"
        "while n < 4_000_000: n += len(a.recv(1 << 20))\n"
        "t.join()\n"
        "print('sent', flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "up"
        clock = StepClock()  # one "second" per reading: rates read as bytes per reading
        source = ProcessTreeSource(proc.pid, clock=clock)
        _read(source)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "sent"
        reading = _read(source)
        assert reading.net_rx_bps is not None and reading.net_tx_bps is not None
        assert reading.net_rx_bps == pytest.approx(4_000_000, rel=0.01)
        assert reading.net_tx_bps == pytest.approx(4_000_000, rel=0.01)
    finally:
        proc.kill()
        proc.wait()
