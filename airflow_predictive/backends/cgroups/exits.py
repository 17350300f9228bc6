"""How a task's process ended, from its exit status and its cgroup's memory counters.

Why it exists: "the task died" is not one thing. A non-zero exit with an OOM kill in the group is
OOM_KILLED (the caller should grow memory); a plain failure is FAILED (growing memory would not
help). Pure functions, so each rule has a test. They must never call an exit OOM without
evidence from the group (the kernel's ``oom_kill`` counter, or, on kernels without it, a SIGKILL
with the memory peak at the limit, marked as inferred).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from airflow_predictive.core.model.backend import ExitKind, TaskState

if TYPE_CHECKING:
    from airflow_predictive.backends.cgroups.group import CgroupReading

PAGE = 4096.0


def hit_limit_without_counter(reading: CgroupReading | None) -> bool:
    """On kernels without an ``oom_kill`` counter: did memory reach the limit (peak at the limit)?"""
    if reading is None or reading.oom_kills is not None:
        return False
    peak, limit = reading.memory_peak, reading.memory_limit
    return peak is not None and limit is not None and peak >= limit - 2 * PAGE


def classify_exit(rc: int, ooms: int, hit_limit_without_counter: bool = False) -> TaskState:
    """Exit of a process we started: OOM when the group saw an OOM kill and the task did not succeed.

    Kernels before 4.13 have no ``oom_kill`` counter: there a SIGKILL with the memory peak at the
    limit is reported as OOM_KILLED, and the reason says it was inferred.
    """
    code = 128 - rc if rc < 0 else rc  # -9 -> 137, as shells and Kubernetes report it
    if rc == 0:
        note = f" ({ooms} OOM kill(s) of child processes)" if ooms else ""
        return TaskState(ExitKind.SUCCEEDED, exit_code=0, reason=f"exited with 0{note}", oom_events=ooms)
    if ooms:
        return TaskState(
            ExitKind.OOM_KILLED,
            exit_code=code,
            reason=f"killed by the kernel OOM killer at the cgroup memory limit ({ooms} kill(s))",
            oom_events=ooms,
        )
    if rc == -signal.SIGKILL and hit_limit_without_counter:
        return TaskState(
            ExitKind.OOM_KILLED,
            exit_code=code,
            reason="SIGKILL with memory at the cgroup limit (inferred: this kernel has no oom_kill counter)",
            oom_events=1,
        )
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return TaskState(ExitKind.FAILED, exit_code=code, reason=f"killed by {name}")
    return TaskState(ExitKind.FAILED, exit_code=code, reason=f"exited with {rc}")
