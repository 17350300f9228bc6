"""TreeAccountant arithmetic on synthetic snapshots, and ProcessTreeSource on small real processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.sampling import process_tree
from airflow_predictive.sampling.gpu import GpuUsage
from airflow_predictive.sampling.process_tree import ProcessTreeSource, ProcReading, TreeAccountant
from airflow_predictive.sampling.sources import TargetGone, build_source

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator


def _snap(*procs: ProcReading) -> dict[tuple[int, float], ProcReading]:
    return {p.key: p for p in procs}


def _p(pid: int, ppid: int, cpu: float, io: int | None = 0, rss: int = 100, ct: float = 1.0) -> ProcReading:
    return ProcReading(pid, ppid, ct, cpu, rss, io, io)


def test_first_snapshot_is_only_a_baseline() -> None:
    acct = TreeAccountant()
    assert acct.update(_snap(_p(10, 1, 5.0)), t=0.0) is None
    rates = acct.update(_snap(_p(10, 1, 6.0, io=1000)), t=2.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.5)
    assert rates.read_bps == pytest.approx(500.0)


def test_new_child_counts_all_it_used_since_it_appeared() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 5.0)), t=0.0)
    rates = acct.update(_snap(_p(10, 1, 5.0), _p(11, 10, 0.8, io=400)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.8)
    assert rates.write_bps == pytest.approx(400.0)


def test_child_reaped_by_its_parent_in_the_tree_is_not_counted_twice() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 5.0), _p(11, 10, 3.0, io=300)), t=0.0)
    # the child used 0.5 s more, exited, and the kernel moved its 3.5 s into the parent's children times
    rates = acct.update(_snap(_p(10, 1, 5.0 + 3.5, io=350)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.5)
    assert rates.read_bps == pytest.approx(50.0)


def test_grandchild_reaped_through_a_vanished_child_is_not_counted_twice() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 1.0), _p(11, 10, 1.0), _p(12, 11, 2.0)), t=0.0)
    # 12 and 11 both exited; 11's final totals (1.0 + 2.0 of its reaped child + 0.2 more) went to 10
    rates = acct.update(_snap(_p(10, 1, 1.0 + 3.2)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.2)


def test_child_orphaned_out_of_the_tree_does_not_cancel_the_others() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 1.0), _p(11, 99, 50.0)), t=0.0)  # 11's parent is outside the tree
    rates = acct.update(_snap(_p(10, 1, 1.7)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.7)


def test_reused_pid_is_a_new_process() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 1.0), _p(11, 10, 9.0, ct=1.0)), t=0.0)
    # 11 exited unreaped-by-us and a new process got the same pid (another create time)
    rates = acct.update(_snap(_p(10, 1, 1.0 + 9.0), _p(11, 10, 0.3, ct=2.0)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == pytest.approx(0.3)


def test_unreadable_io_makes_disk_absent_not_zero() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 1.0), _p(11, 10, 1.0, io=None)), t=0.0)
    rates = acct.update(_snap(_p(10, 1, 2.0), _p(11, 10, 1.0, io=None)), t=1.0)
    assert rates is not None
    assert rates.read_bps is None and rates.write_bps is None
    assert rates.cpu_cores == pytest.approx(1.0)


def test_counters_going_backwards_never_give_negative_rates() -> None:
    acct = TreeAccountant()
    acct.update(_snap(_p(10, 1, 5.0, io=1000)), t=0.0)
    rates = acct.update(_snap(_p(10, 1, 4.0, io=10)), t=1.0)
    assert rates is not None
    assert rates.cpu_cores == 0.0 and rates.read_bps == 0.0


# -- real processes ---------------------------------------------------------------------------------


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 1.0
        return self.t

    def now(self):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    code = "import time; print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"  # the interpreter runs
    yield proc
    proc.kill()
    proc.wait()


def test_reads_memory_of_a_live_process_and_none_once_it_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    source = ProcessTreeSource(sleeper.pid, clock=StepClock(), network=False)
    first = source.read()
    assert isinstance(first, ResourceVector)
    assert first.memory_bytes is not None and first.memory_bytes > 1_000_000
    assert first.cpu_cores is None  # no rate before a second reading
    second = source.read()
    assert second is not None and second.cpu_cores is not None
    assert second.gpu_util is None and second.gpu_memory_bytes is None  # no GPU reader: absent
    sleeper.kill()
    sleeper.wait()
    assert source.read() is None


def test_a_zombie_task_process_counts_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    source = ProcessTreeSource(proc.pid, clock=StepClock(), network=False)
    # not reaped (no wait()) until the end: the process stays a zombie
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
        os.sched_yield()
    assert source.read() is None
    proc.wait()


def test_process_vanishing_mid_sample_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys,time; subprocess.Popen(['sleep','60']); time.sleep(60)"]
    )
    try:
        while not psutil.Process(parent.pid).children():
            os.sched_yield()
        child_pid = psutil.Process(parent.pid).children()[0].pid
        source = ProcessTreeSource(parent.pid, clock=StepClock(), network=False)
        both = source.read()
        assert both is not None and child_pid in source.pids
        real_io = psutil.Process.io_counters

        def vanish(self: psutil.Process) -> object:
            if self.pid == child_pid:  # listed by children(), gone when read
                raise psutil.NoSuchProcess(self.pid)
            return real_io(self)

        monkeypatch.setattr(psutil.Process, "io_counters", vanish)
        reading = source.read()
        assert reading is not None and reading.memory_bytes is not None
        assert child_pid not in source.pids
        assert both.memory_bytes is not None and reading.memory_bytes < both.memory_bytes
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()


def test_short_lived_grandchildren_never_break_a_reading() -> None:
    churn = subprocess.Popen(["sh", "-c", "while true; do /bin/true; done"])
    try:
        source = ProcessTreeSource(churn.pid, clock=StepClock(), network=True)
        readings = [source.read() for _ in range(40)]
        assert all(r is not None and r.memory_bytes is not None for r in readings)
    finally:
        churn.kill()
        churn.wait()


def test_missing_process_raises_at_construction() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(psutil.NoSuchProcess):
        ProcessTreeSource(proc.pid, network=False)


def _spawn_tree() -> subprocess.Popen[bytes]:
    """A parent with one child (``sleep``), the parent printing once the child runs."""
    code = "import subprocess,time; subprocess.Popen(['sleep','60']); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
    return proc


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    for p in psutil.Process(proc.pid).children(recursive=True):
        p.kill()
    proc.kill()
    proc.wait()


def test_walks_the_kernel_children_lists_when_the_kernel_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _spawn_tree()
    try:
        expected = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
        if process_tree.has_children_files(proc.pid):  # the real files (CONFIG_PROC_CHILDREN)
            assert set(process_tree.direct_children(proc.pid)) == expected - {proc.pid}
        calls: list[int] = []
        real, real_has = process_tree.direct_children, process_tree.has_children_files

        def counting(pid: int) -> list[int]:
            calls.append(pid)
            return real(pid) if real_has(pid) else [c.pid for c in psutil.Process(pid).children()]

        monkeypatch.setattr(process_tree, "has_children_files", lambda pid: True)
        monkeypatch.setattr(process_tree, "direct_children", counting)
        source = ProcessTreeSource(proc.pid, clock=StepClock(), network=False)
        source.read()
        assert set(source.pids) == expected and len(expected) == 2
        assert calls[0] == proc.pid and len(calls) == 2  # root, then its child
    finally:
        _kill_tree(proc)


def test_slow_proc_scans_run_every_few_ticks_and_known_processes_are_read_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_tree, "has_children_files", lambda pid: False)
    monkeypatch.setattr(process_tree, "SCAN_BUDGET_S", 1e-9)  # any scan is "too slow"
    proc = _spawn_tree()
    try:
        scans = 0
        real_children = psutil.Process.children

        def counting(self: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
            nonlocal scans
            scans += 1
            return real_children(self, recursive=recursive)

        monkeypatch.setattr(psutil.Process, "children", counting)
        source = ProcessTreeSource(proc.pid, clock=StepClock(), network=False)
        readings = [source.read() for _ in range(5)]
        assert all(r is not None for r in readings)
        assert scans == 1  # the next scan is many ticks away
        assert len(source.pids) == 2  # the child found by the scan is still read
    finally:
        _kill_tree(proc)


class _OneGpuProcess:
    """A GpuReader answering for one pid only (stands in for NVML; no GPU exists here)."""

    name = "fake"

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.asked: list[set[int]] = []

    def read(self, pids: Collection[int], now: float = 0.0) -> GpuUsage | None:
        self.asked.append(set(pids))
        return GpuUsage(util=0.25, memory_bytes=512.0) if self.pid in pids else GpuUsage(0.0, 0.0)


def test_gpu_reader_is_asked_about_the_trees_pids(sleeper: subprocess.Popen[bytes]) -> None:
    gpu = _OneGpuProcess(sleeper.pid)
    source = ProcessTreeSource(sleeper.pid, clock=StepClock(), network=False, gpu=gpu)
    reading = source.read()
    assert reading is not None
    assert (reading.gpu_util, reading.gpu_memory_bytes) == (0.25, 512.0)
    assert gpu.asked == [{sleeper.pid}]


def test_unusable_cgroup_falls_back_to_the_process_tree(
    sleeper: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        source = build_source(sleeper.pid, cgroup="not-a-cgroup-ref", gpu_mode="off")
    assert isinstance(source, ProcessTreeSource)
    assert any("sampling the process tree instead" in r.message for r in caplog.records)


def test_building_a_source_for_a_missing_process_says_so() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(TargetGone):
        build_source(proc.pid, gpu_mode="off")
