"""The sampler's sources carry anon / file memory: from /proc without a cgroup, from the cgroup's
memory.stat (read once, with the working set) with one, and a failing pattern reader never reaches
the task (the two metrics are absent)."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.backends.cgroups.usage import CgroupUsageSource
from airflow_predictive.core.model.resources import Metric, ResourceVector
from airflow_predictive.sampling.process_tree import ProcessTreeSource
from airflow_predictive.sampling.sources import CombinedSource, PatternTreeSource, build_source, with_pattern

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_predictive.sampling.memstat import MemoryPattern

MIB = 1 << 20


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    """A process holding 40 MiB of touched anonymous memory."""
    code = "import sys,time; b=bytearray(40<<20); b[::4096]=b'1'*(10240); print('up',flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    yield proc
    proc.kill()
    proc.wait()


def test_without_a_cgroup_the_tree_source_carries_anon_and_file_from_proc(
    holder: subprocess.Popen[str],
) -> None:
    source = build_source(holder.pid, gpu_mode="off")
    assert isinstance(source, PatternTreeSource)
    reading = source.read()
    source.close()
    assert reading is not None
    assert (reading.memory_anon_bytes or 0) >= 40 * MIB
    assert reading.memory_file_bytes is not None
    assert reading.memory_bytes is not None  # the tree's own metrics are untouched


def _v2_folder(folder: Path, stat: str | None) -> str:
    """A folder with the v2 files a reading needs (a group as the kernel would show it)."""
    folder.mkdir()
    (folder / "memory.current").write_text(str(300 * MIB))
    (folder / "cpu.stat").write_text("usage_usec 1000\n")
    if stat is not None:
        (folder / "memory.stat").write_text(stat)
    return f"v2:{folder}"


def test_with_a_cgroup_anon_and_file_come_from_the_same_memory_stat_as_the_working_set(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    ref = _v2_folder(tmp_path / "g", "anon 1048576\nfile 9437184\nshmem 0\ninactive_file 8388608\n")
    source = CombinedSource(CgroupUsageSource(ref), ProcessTreeSource(holder.pid, network=False))
    reading = source.read()
    source.close()
    assert reading is not None
    assert (reading.memory_anon_bytes, reading.memory_file_bytes) == (1 * MIB, 9 * MIB)
    assert reading.memory_bytes == 300 * MIB - 8 * MIB  # the cgroup's working set, not the tree's RSS


def test_a_cgroup_without_a_readable_memory_stat_leaves_the_pattern_absent(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    # the tree knows anon / file from /proc, but with a cgroup the group is the one source of truth:
    # a value from another accounting would mix two measurements in one curve
    ref = _v2_folder(tmp_path / "g", None)
    source = CombinedSource(CgroupUsageSource(ref), ProcessTreeSource(holder.pid, network=False))
    reading = source.read()
    source.close()
    assert reading is not None
    assert reading.memory_anon_bytes is None and reading.memory_file_bytes is None
    assert reading.memory_bytes == 300 * MIB


def test_a_pattern_reader_that_raises_never_reaches_the_sampler() -> None:
    def broken() -> MemoryPattern:
        raise OSError("EIO")

    base = ResourceVector(cpu_cores=1.0, memory_bytes=10.0, memory_anon_bytes=5.0)
    out = with_pattern(base, broken)
    assert out.get(Metric.MEMORY_ANON_BYTES) is None  # no stale or invented value
    assert (out.cpu_cores, out.memory_bytes) == (1.0, 10.0)


def test_an_unusable_cgroup_ref_falls_back_to_the_proc_pattern(holder: subprocess.Popen[str]) -> None:
    source = build_source(holder.pid, cgroup="not-a-cgroup-ref", gpu_mode="off")
    assert isinstance(source, PatternTreeSource)
    reading = source.read()
    source.close()
    assert reading is not None and (reading.memory_anon_bytes or 0) >= 40 * MIB
