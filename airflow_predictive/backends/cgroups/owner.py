"""Who made a task cgroup, written into its name, so a dead maker's empty groups can be removed.

Why: a group is removed by ``release`` when its task ends. A process that dies first (a scheduler
killed with SIGKILL, an executor that hung and was killed before it read its last results) leaves
its groups behind, and nothing else would ever remove them. Each group's name therefore ends with
its maker's tag, ``.p<pid>s<start>n<ns>`` (the pid, its start time in clock ticks since boot from
``/proc/<pid>/stat``: a reused pid has another start time, and the inode of its pid namespace:
containers that share a cgroup parent do not see each other's pids), and ``abandoned`` tells, from
a name alone, whether its maker is gone. Names without a tag (made by older versions, or by anyone
else) and names tagged in another pid namespace are never taken for abandoned.
"""

from __future__ import annotations

import os
import re

_TAG = re.compile(r"\.p(\d+)s(\d+)n(\d+)$")
_STARTS: dict[int, int | None] = {}


def start_ticks(pid: int) -> int | None:
    """``pid``'s start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``), None when
    no such process runs (or ``/proc`` cannot say)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_namespace() -> int | None:
    """The inode of this process's pid namespace (``/proc/self/ns/pid`` -> ``pid:[<inode>]``)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def own_tag() -> str:
    """This process's tag (computed once per pid: a forked child gets its own); empty when ``/proc``
    cannot say (the group is then never swept: its maker could not be told apart)."""
    pid = os.getpid()
    if pid not in _STARTS:
        _STARTS[pid] = start_ticks(pid)
    start, ns = _STARTS[pid], pid_namespace()
    return "" if start is None or ns is None else f".p{pid}s{start}n{ns}"


def maker(name: str) -> tuple[int, int, int] | None:
    """(pid, start ticks, pid namespace) of the process that made the group named ``name``; None
    without a tag."""
    m = _TAG.search(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def abandoned(name: str) -> bool:
    """True when ``name`` carries a tag of this pid namespace and the process it names no longer runs."""
    made_by = maker(name)
    if made_by is None:
        return False
    pid, start, ns = made_by
    return ns == pid_namespace() and start_ticks(pid) != start
