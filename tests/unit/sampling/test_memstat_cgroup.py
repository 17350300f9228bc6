"""A real cgroup: a process touching anonymous memory shows anon growth, one reading a file shows
file growth, as the sampler's cgroup source reads them (memory.stat). Needs a writable memory
controller (in CI its absence fails the test)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.group import make_group
from airflow_predictive.sampling.sources import CombinedSource, build_source
from tests._real_parts import require_cgroups

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_predictive.backends.cgroups.group import TaskGroup

MIB = 1 << 20

# each line on stdin starts one step; "ok" on stdout when it is done
STEPS = r"""
import os, sys
path = sys.argv[1]
hold = []
for step in sys.stdin:
    step = step.strip()
    if step == "anon":
        b = bytearray(96 << 20)
        b[::4096] = b"\x01" * (96 << 8)
        hold.append(b)
    elif step == "file":
        with open(path, "wb") as fh:
            for _ in range(24):
                fh.write(b"\xab" * (4 << 20))
            fh.flush(); os.fsync(fh.fileno())
        for _ in range(2):
            with open(path, "rb", buffering=0) as fh:
                while fh.read(1 << 20):
                    pass
    print("ok", flush=True)
"""


@pytest.fixture
def group() -> Iterator[TaskGroup]:
    layout = require_cgroups("memory")
    assert layout.version is not None
    parents = {c: p for c, p in layout.parents.items() if c in ("memory", "cpu", "cpuacct")}
    made = make_group(layout.version, parents, f"memstat-test-{uuid.uuid4().hex[:10]}")
    made.create()
    yield made
    for _ in range(100):
        made.kill()
        if not made.pids():
            break
        time.sleep(0.05)
    made.remove()


def _step(proc: subprocess.Popen[str], name: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ok"


@pytest.mark.cgroups
def test_the_cgroup_source_sees_anon_growth_then_file_growth(group: TaskGroup, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STEPS, str(tmp_path / "data.bin")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        group.add_pid(proc.pid)
        source = build_source(proc.pid, cgroup=group.ref, gpu_mode="off")
        assert isinstance(source, CombinedSource)
        start = source.read()
        assert (
            start is not None and start.memory_anon_bytes is not None and start.memory_file_bytes is not None
        )

        _step(proc, "anon")
        after_anon = source.read()
        assert after_anon is not None and after_anon.memory_anon_bytes is not None
        assert after_anon.memory_anon_bytes - start.memory_anon_bytes >= 80 * MIB
        assert after_anon.memory_file_bytes is not None
        assert after_anon.memory_file_bytes - start.memory_file_bytes < 16 * MIB

        _step(proc, "file")
        after_file = source.read()
        assert after_file is not None and after_file.memory_file_bytes is not None
        assert after_file.memory_file_bytes - after_anon.memory_file_bytes >= 80 * MIB
        assert after_file.memory_anon_bytes is not None
        assert abs(after_file.memory_anon_bytes - after_anon.memory_anon_bytes) < 16 * MIB
        source.close()
    finally:
        proc.kill()
        proc.wait()
