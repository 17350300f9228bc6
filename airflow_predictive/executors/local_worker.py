"""The PredictiveLocalExecutor's worker loop: LocalExecutor's ``_run_worker`` plus a cgroup per task.

Why a copy of the loop: in Airflow 3 the LocalExecutor worker *becomes* the task's supervisor
and forks the task with a bare ``os.fork()`` (no command, no pre-exec hook), so the only place to
put the task's whole process tree in its cgroup is the worker, just before it forks. The worker
joins the task's group (prepared with the planned limits by the executor), and a watcher thread
moves the worker (the supervisor) back out as soon as the forked task process appears in the
group: the task and everything it starts stay under the limits and are recorded through that
group; the supervisor's own memory is not charged to the task (and the kernel's OOM killer, when
the task exceeds its limit, can only pick the task's processes, never the supervisor that reports
the failure). A workload without a group runs exactly as LocalExecutor runs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_predictive.backends.cgroups.hierarchy import parse_mountinfo, parse_proc_cgroup

if TYPE_CHECKING:
    import multiprocessing.sharedctypes
    from multiprocessing import Queue, SimpleQueue

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.002
WATCH_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class GroupedWorkload:
    """A workload and the cgroup its task process must run in (procs files to write pids into)."""

    workload: Any
    procs_files: tuple[str, ...]


def current_procs_files(pid: int | str = "self") -> tuple[str, ...]:
    """The cgroup.procs files of the cgroups ``pid`` is in now, for the hierarchies mounted here."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            paths = parse_proc_cgroup(fh.read())
        with open("/proc/self/mountinfo") as fh:
            mounts = parse_mountinfo(fh.read())
    except (OSError, ValueError):
        return ()
    out: list[str] = []
    for mount in mounts:
        if mount.fstype == "cgroup2":
            path = paths.get("")
        else:
            path = next((paths[c] for c in sorted(mount.controllers) if c in paths), None)
        if path is None:
            continue
        root = mount.root.rstrip("/")
        rel = path[len(root) :] if root and path.startswith(root) else path
        out.append(os.path.join(mount.path, rel.lstrip("/"), "cgroup.procs"))
    return tuple(dict.fromkeys(out))


def _write_pid(files: tuple[str, ...], pid: int) -> list[str]:
    failed = []
    for path in files:
        try:
            with open(path, "w") as fh:
                fh.write(str(pid))
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
    return failed


def pids_in(files: tuple[str, ...]) -> set[int]:
    out: set[int] = set()
    for path in files:
        with contextlib.suppress(OSError, ValueError), open(path) as fh:
            out.update(int(x) for x in fh.read().split())
    return out


class GroupJoin:
    """Join a group, then leave it as soon as the task process forked inside it appears."""

    def __init__(self, target: tuple[str, ...], home: tuple[str, ...]) -> None:
        self.target = target
        self.home = home
        self.pid = os.getpid()
        self._left = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GroupJoin:
        failed = _write_pid(self.target, self.pid)
        if failed:
            log.warning(
                "predictive: could not join the task cgroup (%s); the task runs outside it", "; ".join(failed)
            )
            _write_pid(self.home, self.pid)
            self._left.set()
            return self
        self._thread = threading.Thread(target=self._watch, name="predictive-cgroup-leave", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        while not self._left.is_set() and time.monotonic() < deadline:
            if pids_in(self.target) - {self.pid}:
                self.leave()
                return
            time.sleep(WATCH_INTERVAL_S)
        self.leave()

    def leave(self) -> None:
        if not self._left.is_set():
            self._left.set()
            _write_pid(self.home, self.pid)

    def __exit__(self, *exc: object) -> None:
        self.leave()


def run_predictive_worker(
    logger_name: str,
    input: SimpleQueue[Any],
    output: Queue[Any],
    unread_messages: multiprocessing.sharedctypes.Synchronized[int],
    team_conf: Any,
) -> None:
    """LocalExecutor's worker loop (airflow/executors/local_executor.py::_run_worker, 3.3.2) with
    ``GroupedWorkload`` items run inside their cgroup."""
    import signal

    import structlog
    from airflow.executors.base_executor import BaseExecutor, get_execution_api_server_url
    from airflow.executors.local_executor import _get_executor_process_title_prefix, setproctitle

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    slog = structlog.get_logger(logger_name)
    slog.info("Predictive worker starting up pid=%d", os.getpid())
    home = current_procs_files()
    prefix = _get_executor_process_title_prefix(getattr(team_conf, "team_name", None))
    while True:
        setproctitle(f"{prefix} <idle>", slog)
        try:
            item = input.get()
        except EOFError:
            break
        if item is None:
            return
        with unread_messages:
            unread_messages.value -= 1
        grouped = item if isinstance(item, GroupedWorkload) else None
        workload = grouped.workload if grouped is not None else item
        if workload.running_state is not None:
            output.put((workload.key, workload.running_state, None))
        join = GroupJoin(grouped.procs_files, home) if grouped is not None and grouped.procs_files else None
        try:
            with join if join is not None else contextlib.nullcontext():
                BaseExecutor.run_workload(
                    workload,
                    server=get_execution_api_server_url(team_conf),
                    proctitle=f"{prefix} {workload.display_name}",
                    subprocess_logs_to_stdout=True,
                )
            output.put((workload.key, workload.success_state, None))
        except Exception as e:
            slog.exception("Workload execution failed.", workload_type=type(workload).__name__)
            output.put((workload.key, workload.failure_state, e))
