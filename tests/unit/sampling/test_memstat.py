"""Memory access patterns without a cgroup: /proc parsing, the tree reader, NULL on missing."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from airflow_predictive.sampling.memstat import MemoryPattern, ProcMemoryPattern, parse_proc_status

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

MIB = 1 << 20

STATUS = """Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
VmRSS:\t   30000 kB
RssAnon:\t   20000 kB
RssFile:\t    9000 kB
RssShmem:\t    1000 kB
VmSwap:\t       0 kB
"""


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
