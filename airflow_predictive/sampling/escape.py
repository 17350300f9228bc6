"""Where the sidecar goes so it never lives in the task's cgroup (and never counts against its limit).

The sidecar is spawned from inside the task process, so it starts in the task's cgroup. Memory is
charged to the cgroup of the process that touches it first and stays there after a move, so the
sidecar must leave *before* it allocates anything: the launcher runs it through ``/bin/sh``, which
writes ``0`` (itself) into each target's ``cgroup.procs`` and then ``exec``s Python, so every page
the interpreter touches is charged outside the task's group.

Targets: the folder above the provider's ``airflow-predictive`` marker for each v1 controller
(where Airflow's own processes are); on v2 the nearest ancestor allowed to hold processes (one with
no ``cgroup.subtree_control`` controllers, or the root). Pure path arithmetic plus reads of
``cgroup.subtree_control``; stdlib only.
"""

from __future__ import annotations

import os

MARKER = "airflow-predictive"

#: the shell prologue: move itself into each cgroup.procs given before "--", then exec the rest
SHELL_PROLOGUE = (
    'while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do echo 0 > "$1" 2>/dev/null; shift; done; shift; exec "$@"'
)


def _above_marker(folder: str) -> str | None:
    parts = folder.rstrip("/").split("/")
    if MARKER not in parts:
        return None
    return "/".join(parts[: parts.index(MARKER)]) or "/"


def _may_hold_processes(folder: str) -> bool:
    parent = os.path.dirname(folder.rstrip("/"))
    if not os.path.exists(os.path.join(parent, "cgroup.controllers")):
        return True  # the hierarchy's root always may
    try:
        with open(os.path.join(folder, "cgroup.subtree_control")) as fh:
            return not fh.read().strip()
    except OSError:
        return True


def escape_targets(ref: str | None) -> list[str]:
    """The ``cgroup.procs`` files the sidecar writes itself into, for a task cgroup ``ref``."""
    if not ref:
        return []
    if ref.startswith("v2:"):
        folder = _above_marker(ref[3:])
        if folder is None:
            return []
        while not _may_hold_processes(folder):
            folder = os.path.dirname(folder.rstrip("/"))
        return [os.path.join(folder, "cgroup.procs")]
    if ref.startswith("v1:"):
        targets: list[str] = []
        for item in ref[3:].split(";"):
            _, _, folder = item.partition("=")
            above = _above_marker(folder) if folder else None
            procs = os.path.join(above, "cgroup.procs") if above else None
            if procs and procs not in targets:
                targets.append(procs)
        return targets
    above = _above_marker(ref)
    return [os.path.join(above, "cgroup.procs")] if above else []


def wrap(command: list[str], ref: str | None) -> list[str]:
    """``command`` run so that it leaves the task's cgroup first (unchanged without targets)."""
    targets = escape_targets(ref)
    if not targets or not os.path.exists("/bin/sh"):
        return command
    return ["/bin/sh", "-c", SHELL_PROLOGUE, "predictive-sampler", *targets, "--", *command]


def inside(ref: str | None, pid: int | None = None) -> bool:
    """Whether process ``pid`` (default: this one) is still in the task cgroup ``ref``."""
    if not ref:
        return False
    who = "self" if pid is None else str(pid)
    try:
        with open(f"/proc/{who}/cgroup") as fh:
            mine = fh.read()
    except OSError:
        return False
    folders = [ref[3:]] if ref.startswith("v2:") else [i.partition("=")[2] for i in ref[3:].split(";")]
    for line in mine.splitlines():
        path = line.split(":", 2)[-1]
        if any(f.endswith(path) and MARKER in path for f in folders if f):
            return True
    return False
