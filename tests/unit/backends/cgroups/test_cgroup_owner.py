"""A group's maker tag: read from this machine's /proc, a dead maker is told from a live one."""

from __future__ import annotations

import os
import subprocess
import sys

from airflow_predictive.backends.cgroups import owner


def _exited_pid() -> tuple[int, int]:
    """(pid, start ticks) of a process that ran and is gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start = owner.start_ticks(proc.pid)
    assert start is not None
    proc.communicate(b"")
    return proc.pid, start


NS = owner.pid_namespace()


def test_own_tag_names_this_process_and_is_not_abandoned() -> None:
    tag = owner.own_tag()
    assert owner.maker(f"task-1a2b3c4d{tag}") == (os.getpid(), owner.start_ticks(os.getpid()), NS)
    assert not owner.abandoned(f"task-1a2b3c4d{tag}")


def test_a_group_whose_maker_exited_is_abandoned() -> None:
    pid, start = _exited_pid()
    assert owner.abandoned(f"dag-task--1-1-deadbeef.p{pid}s{start}n{NS}")


def test_a_reused_pid_with_another_start_time_is_abandoned() -> None:
    start = owner.start_ticks(os.getpid())
    assert start is not None
    assert owner.abandoned(f"task-1a2b3c4d.p{os.getpid()}s{start + 1}n{NS}")


def test_a_maker_in_another_pid_namespace_is_never_taken_for_dead() -> None:
    pid, start = _exited_pid()
    assert NS is not None
    assert not owner.abandoned(f"dag-task--1-1-deadbeef.p{pid}s{start}n{NS + 1}")


def test_a_name_without_a_tag_is_never_abandoned() -> None:
    for name in ("task-1a2b3c4d", "system.slice", "task.p12", "task.pxs1", "task.p1s2", "kubepods"):
        assert owner.maker(name) is None
        assert not owner.abandoned(name)


def test_a_command_name_with_spaces_and_parentheses_still_gives_the_start_time(tmp_path) -> None:
    script = tmp_path / "a (b) c"
    script.write_text("#!/bin/sh\nread x\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)], stdin=subprocess.PIPE)
    try:
        start = owner.start_ticks(proc.pid)
        with open("/proc/self/stat") as fh:
            mine = int(fh.read().rpartition(")")[2].split()[19])
        assert start is not None and start >= mine  # started after this test process
    finally:
        proc.communicate(b"\n")
