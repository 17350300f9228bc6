"""Observe-only process-tree usage: rates over sensible windows, None once the process is gone."""

from __future__ import annotations

import os
import subprocess
import sys

from airflow_predictive.backends.cgroups.observe import ProcessTreeUsage
from airflow_predictive.backends.fake import ManualClock


def test_close_readings_are_measured_against_the_older_baseline() -> None:
    clock = ManualClock()
    source = ProcessTreeUsage(os.getpid(), clock)
    sum(i * i for i in range(200_000))  # burn a few ms of real CPU between readings
    clock.advance(1.0)
    first = source.read()
    sum(i * i for i in range(200_000))
    clock.advance(0.001)  # 1 ms of clock: psutil's 10 ms ticks would make a huge rate here
    second = source.read()
    assert first is not None and first.cpu_cores is not None
    assert second is not None and second.cpu_cores is not None
    assert second.cpu_cores < 1.0  # measured over ~1 s, not over 1 ms
    assert second.memory_bytes is not None and second.memory_bytes > 0


def test_gone_process_reads_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    source = ProcessTreeUsage(proc.pid, ManualClock())
    proc.wait(timeout=20)
    assert source.read() is None
