"""Memory access patterns: memory.stat (v1 and v2) and /proc parsing, the readers, NULL on missing."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from airflow_predictive.sampling.memstat import (
    CgroupMemoryPattern,
    MemoryPattern,
    ProcMemoryPattern,
    parse_memory_stat,
    parse_proc_status,
)

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

MIB = 1 << 20

V1_STAT = """cache 999
rss 888
shmem 1
pgfault 7
pgmajfault 0
total_cache 314572800
total_rss 104857600
total_rss_huge 0
total_shmem 10485760
total_pgfault 1200
total_pgmajfault 3
total_inactive_file 1000
"""

V2_STAT = """anon 52428800
file 209715200
kernel 1234
shmem 4194304
file_mapped 1000
pgfault 400
pgmajfault 2
inactive_file 1
"""

STATUS = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
VmRSS:\t   30000 kB
RssAnon:\t   20000 kB
RssFile:\t    9000 kB
RssShmem:\t    1000 kB
VmSwap:\t       0 kB
"""


def test_v1_reads_the_hierarchical_totals_and_moves_shmem_from_cache_to_anon() -> None:
    p = parse_memory_stat(V1_STAT, v2=False)
    assert p.anon_bytes == 100 * MIB + 10 * MIB  # total_rss + total_shmem: neither can be dropped
    assert p.file_bytes == 300 * MIB - 10 * MIB  # total_cache minus shmem: reclaimable page cache
    assert (p.faults, p.major_faults) == (1200, 3)


def test_v1_without_hierarchical_keys_falls_back_to_the_group_own_keys() -> None:
    p = parse_memory_stat("cache 400\nrss 100\npgfault 5\n", v2=False)
    assert (p.anon_bytes, p.file_bytes, p.faults, p.major_faults) == (100, 400, 5, None)


def test_v2_reads_anon_file_and_shmem() -> None:
    p = parse_memory_stat(V2_STAT, v2=True)
    assert p.anon_bytes == 50 * MIB + 4 * MIB
    assert p.file_bytes == 200 * MIB - 4 * MIB
    assert (p.faults, p.major_faults) == (400, 2)


def test_keys_this_kernel_lacks_stay_absent_never_zero() -> None:
    assert parse_memory_stat("kernel 5\ngarbage line here\nanon notanumber\n", v2=True) == MemoryPattern()
    assert parse_memory_stat("", v2=False) == MemoryPattern()


def test_proc_status_gives_anon_file_and_shmem_in_bytes() -> None:
    assert parse_proc_status(STATUS) == (20000 * 1024, 9000 * 1024, 1000 * 1024)


def test_proc_status_without_the_rss_split_is_unknown() -> None:
    # kernels before 4.5, and zombies, have no RssAnon / RssFile lines
    assert parse_proc_status("Name:\tx\nVmRSS:\t 100 kB\n") is None
    assert parse_proc_status("RssAnon:\t x kB\nRssFile:\t 1 kB\n") is None


def _fake_proc(root: Path, pid: int, status: str) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "status").write_text(status)


def test_proc_reader_sums_the_tree_and_skips_a_process_gone_meanwhile(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, STATUS)
    _fake_proc(tmp_path, 11, "RssAnon:\t 1000 kB\nRssFile:\t 0 kB\n")
    reading = ProcMemoryPattern(str(tmp_path)).read([10, 11, 12])  # 12 exited before the read
    assert reading.anon_bytes == (20000 + 1000 + 1000) * 1024  # RssShmem joins anon
    assert reading.file_bytes == 9000 * 1024
    assert reading.faults is None  # fault counters are not read from /proc


def test_proc_reader_with_nothing_readable_says_absent_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = ProcMemoryPattern(str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="airflow_predictive.sampling.memstat"):
        assert reader.read([1, 2]) == MemoryPattern()
        assert reader.read([1]) == MemoryPattern()
    assert len([r for r in caplog.records if "RssAnon" in r.message]) == 1


def test_proc_reader_reads_this_process() -> None:
    reading = ProcMemoryPattern().read([os.getpid()])
    assert reading.anon_bytes is not None and reading.anon_bytes > 1 * MIB
    assert reading.file_bytes is not None and reading.file_bytes > 0  # the interpreter's mapped files


def test_cgroup_reader_parses_its_folder_and_a_missing_file_is_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "memory.stat").write_text(V2_STAT)
    assert CgroupMemoryPattern(str(tmp_path), v2=True).read().anon_bytes == 54 * MIB
    gone = CgroupMemoryPattern(str(tmp_path / "removed"), v2=False)
    with caplog.at_level(logging.DEBUG, logger="airflow_predictive.sampling.memstat"):
        assert gone.read() == MemoryPattern()
        assert gone.read() == MemoryPattern()
    assert len([r for r in caplog.records if "not readable" in r.message]) == 1
