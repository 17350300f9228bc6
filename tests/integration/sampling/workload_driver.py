"""Drives ``_workload.py`` (a real process that allocates, burns CPU and spawns children on command)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil

WORKLOAD = Path(__file__).with_name("_workload.py")


def prioritise(pid: int) -> None:
    """Let the workload's "busy" mean most of a core on a shared test machine.

    With CFS autogroups each session shares the CPUs equally whatever its processes' nice values,
    so the workload runs in its own session and that session's group gets a high weight (root
    only; elsewhere this is a no-op and the machine must simply not be saturated).
    """
    with contextlib.suppress(OSError, psutil.Error):
        psutil.Process(pid).nice(-19)
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write("-19")


class Workload:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKLOAD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        prioritise(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def do(self, command: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply[:1] == ["ok"], f"workload answered {reply!r} to {command!r}"
        return float(reply[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
