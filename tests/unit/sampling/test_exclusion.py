"""The sampler never counts itself: excluded processes and their descendants leave the tree, and
the cgroup escape targets the folder above the provider's marker."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from airflow_predictive.core.model.resources import ResourceVector
from airflow_predictive.sampling.escape import escape_targets, wrap
from airflow_predictive.sampling.process_tree import ProcessTreeSource, _prune
from airflow_predictive.sampling.sampler import Sampler

GRANDCHILD = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"


def test_an_excluded_child_and_its_descendants_are_never_counted() -> None:
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    excluded = subprocess.Popen([sys.executable, "-c", GRANDCHILD])
    try:
        deadline = time.monotonic() + 20
        while not psutil.Process(excluded.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        [grandchild] = psutil.Process(excluded.pid).children()
        source = ProcessTreeSource(psutil.Process().pid, network=False, exclude={excluded.pid})
        assert source.read() is not None
        assert kept.pid in source.pids
        assert excluded.pid not in source.pids and grandchild.pid not in source.pids
        me = psutil.Process()
        assert {p.pid for p in _prune(me.children(recursive=True), frozenset({excluded.pid}))} >= {kept.pid}
        assert grandchild.pid not in {
            p.pid for p in _prune(me.children(recursive=True), frozenset({excluded.pid}))
        }
    finally:
        for proc in (kept, excluded):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


def test_escape_targets_are_above_the_marker() -> None:
    ref = "v1:cpu=/sys/fs/cgroup/cpu/airflow-predictive/t1;memory=/sys/fs/cgroup/memory/airflow-predictive/t1"
    assert escape_targets(ref) == ["/sys/fs/cgroup/cpu/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs"]
    assert escape_targets("v1:memory=/sys/fs/cgroup/memory/system.slice/airflow-predictive/t") == [
        "/sys/fs/cgroup/memory/system.slice/cgroup.procs"
    ]
    assert escape_targets(None) == [] and escape_targets("v1:memory=/sys/fs/cgroup/memory/other/t") == []
    cmd = ["python", "-m", "x"]
    assert wrap(cmd, None) == cmd
    wrapped = wrap(cmd, ref)
    assert wrapped[0] == "/bin/sh" and wrapped[-3:] == cmd and "--" in wrapped


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t


class _Source:
    def read(self) -> ResourceVector:
        return ResourceVector(memory_bytes=10.0)


def test_a_resumed_leg_moves_its_samples_onto_the_runs_clock() -> None:
    clock = _Clock()
    sampler = Sampler(1, _Source(), clock, offset_s=0.5)  # type: ignore[arg-type]
    sampler.tick()
    clock.t += 1
    sampler.tick()
    sampler.add_reading(-0.2, ResourceVector(memory_bytes=99.0))  # the task's own reading at its hook
    assert [s.t_s for s in sampler.pending()] == [0.5, 1.5, 0.3]
    sampler.rebase(60.0)  # the stored run says this leg began 60 s after the try started
    assert [s.t_s for s in sampler.pending()] == [60.0, 61.0, 59.8]
    clock.t += 1
    sampler.tick()
    assert sampler.pending()[-1].t_s == 62.0 and sampler.peak.memory_bytes == 99.0
