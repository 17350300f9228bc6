"""Read the limits *in force* from where they are enforced, independently of any backend's code.

Used by the conformance suite's ``read_back`` fixtures: the cgroup a process really is in (found
through ``/proc/<pid>/cgroup`` and ``/proc/self/mountinfo``, not through the handle's ref) and
its limit files; a pod's ``status.containerStatuses[].resources`` as the cluster's API reports it
(what the kubelet actuated, not the spec the backend patched).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow_predictive.core.model.quantity import parse_quantity
from airflow_predictive.core.model.resources import ResourceVector

if TYPE_CHECKING:
    from airflow_predictive.core.model.backend import Handle

# memory.limit_in_bytes of an unlimited v1 group: PAGE_COUNTER_MAX * page size, about 2**63
_V1_UNLIMITED = 2**62


_Mount = tuple[str, str]  # (root of the hierarchy that is mounted, mount point)


def _mounts() -> tuple[dict[str, _Mount], _Mount | None]:
    """v1 controller -> mount, and the cgroup2 mount (None when absent)."""
    v1: dict[str, _Mount] = {}
    v2: _Mount | None = None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if len(extra) < 3:
                continue
            mount, fstype = (fields[3], fields[4]), extra[0]
            if fstype == "cgroup2" and v2 is None:
                v2 = mount
            elif fstype == "cgroup":
                for option in extra[2].split(","):
                    v1.setdefault(option, mount)
    return v1, v2


def _folder(mount: _Mount, path: str) -> str:
    """Where the cgroup ``path`` (as /proc/<pid>/cgroup names it) is under ``mount``."""
    root, point = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return os.path.join(point, path.lstrip("/"))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_limits(pid: int) -> ResourceVector | None:
    """The memory and CPU limits of the cgroup(s) ``pid`` is in; None when the process is gone."""
    lines = _read(f"/proc/{pid}/cgroup")
    if lines is None:
        return None
    v1_mounts, v2_mount = _mounts()
    memory: float | None = None
    cpu: float | None = None
    for line in lines.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and v2_mount is not None:  # the unified hierarchy
            folder = _folder(v2_mount, path)
            mem_text = _read(os.path.join(folder, "memory.max"))
            if mem_text is not None and mem_text != "max":
                memory = float(mem_text)
            cpu_text = _read(os.path.join(folder, "cpu.max"))
            if cpu_text is not None and not cpu_text.startswith("max"):
                quota, period = cpu_text.split()
                cpu = int(quota) / int(period)
            continue
        names = controllers.split(",")
        if "memory" in names and "memory" in v1_mounts:
            mem_text = _read(os.path.join(_folder(v1_mounts["memory"], path), "memory.limit_in_bytes"))
            if mem_text is not None and int(mem_text) < _V1_UNLIMITED:
                memory = float(mem_text)
        if "cpu" in names and "cpu" in v1_mounts:
            folder = _folder(v1_mounts["cpu"], path)
            quota_text = _read(os.path.join(folder, "cpu.cfs_quota_us"))
            period_text = _read(os.path.join(folder, "cpu.cfs_period_us"))
            if quota_text is not None and period_text is not None and int(quota_text) > 0:
                cpu = int(quota_text) / int(period_text)
    return ResourceVector(cpu_cores=cpu, memory_bytes=memory)


def cgroup_read_back(handle: Handle) -> ResourceVector | None:
    """``read_back`` for a backend that runs the task as a local process (``handle.pid``)."""
    return None if handle.pid is None else cgroup_limits(handle.pid)


def pod_limits(core: Any, handle: Handle, container: str | None = None) -> ResourceVector | None:
    """The limits the pod's status reports for its (first or named) container; None before it runs.

    ``core`` is a ``kubernetes.client.CoreV1Api`` on the cluster (here: the emulator's API).
    """
    namespace, _, name = handle.ref.partition("/")
    pod = core.read_namespaced_pod(name, namespace)
    statuses = pod.status.container_statuses or []
    chosen = [s for s in statuses if container is None or s.name == container]
    if not chosen or chosen[0].resources is None:
        return None
    limits = chosen[0].resources.limits or {}
    cpu = limits.get("cpu")
    memory = limits.get("memory")
    return ResourceVector(
        cpu_cores=None if cpu is None else parse_quantity(cpu),
        memory_bytes=None if memory is None else parse_quantity(memory),
    )


def fake_limits(fake: Any, handle: Handle) -> ResourceVector | None:
    """The limits the in-memory fake's simulated kernel enforces (what its OOM and throttling use)."""
    task = fake._tasks.get(handle.ref)
    if task is None or task.released or task.end is not None:
        return None
    if not fake.enforcing:
        return ResourceVector()
    return ResourceVector(
        cpu_cores=task.allocation.limits.cpu_cores, memory_bytes=task.allocation.limits.memory_bytes
    )
