"""Start and stop the sampler sidecar from inside a task process (the listener calls these).

``launch_recorder`` (what the listener uses) spawns the sidecar in ``--control`` mode and hands it
the try's record on its stdin without waiting for anything: the task's start pays one
fork/exec and a pipe write (milliseconds), never a database round trip. ``RecorderHandle.end`` /
``.leg_ended`` write one more line at the task's end and return at once; the sidecar records it.
The sidecar is run through ``sampling.escape.wrap`` so that it leaves the task's cgroup before
the interpreter allocates anything.

Older API, kept for the ``--run-pk`` mode:
``start_sidecar`` spawns ``python -m airflow_predictive.sampling.sidecar`` in its own session
(so a kill of the task's process group spares it), with stdin/stdout closed and stderr in a log
file, and waits at most ``timeout`` seconds for it to say it is sampling. ``stop_sidecar`` asks it
to take a last sample, flush and exit.

Neither may ever raise or block the task for longer than its timeout: every failure is one clear
warning and ``None`` / a status, and the task goes on unsampled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import airflow_predictive
from airflow_predictive.sampling.escape import wrap

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_predictive.core.model.runs import LegEnd, Outcome, RunRecord
    from airflow_predictive.sampling.control import Message

log = logging.getLogger(__name__)

SIDECAR_MODULE = "airflow_predictive.sampling.sidecar"
URL_ENV = "AIRFLOW_PREDICTIVE_SAMPLER_URL"


@dataclass(frozen=True, slots=True)
class SidecarHandle:
    """A running sidecar: its process, the run it samples and where it logs."""

    run_pk: int
    target_pid: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class StopStatus(StrEnum):
    STOPPED = "stopped"  # flushed and exited after our SIGTERM
    ALREADY_EXITED = "already_exited"  # it had ended on its own (target gone, error)
    TIMED_OUT = "timed_out"  # still running after the timeout; left to finish on its own
    ERROR = "error"


def default_log_path(run_pk: int) -> Path:
    return Path(tempfile.gettempdir()) / "airflow-predictive" / f"sidecar-run{run_pk}-{os.getpid()}.log"


def sidecar_command(
    run_pk: int,
    pid: int,
    *,
    interval: float,
    flush: float,
    cgroup: str | None,
    gpu: str,
    ready_fd: int,
    grace: float,
    started_at: float | None,
) -> list[str]:
    cmd = [
        sys.executable, "-m", SIDECAR_MODULE,
        "--run-pk", str(run_pk), "--pid", str(pid), "--url-env", URL_ENV,
        "--interval", repr(float(interval)), "--flush", repr(float(flush)),
        "--gpu", gpu, "--ready-fd", str(ready_fd), "--grace", repr(float(grace)),
    ]  # fmt: skip
    if cgroup:
        cmd += ["--cgroup", cgroup]
    if started_at is not None:
        cmd += ["--started-at", repr(float(started_at))]
    return cmd


def _child_env(url: str | None) -> dict[str, str]:
    """The task's environment plus the database URL (never on the command line, where `ps` shows
    it), with this package importable even when it is not installed."""
    env = dict(os.environ)
    env[URL_ENV] = url or ""
    root = str(Path(airflow_predictive.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _spawn(
    cmd: list[str], log_path: Path, url: str | None, *, stdin: int, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """The sidecar process: its own session (spared by a kill of the task's process group), its
    stderr appended to ``log_path``, the URL in its environment only."""
    with open(log_path, "ab") as err:
        return subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=err,
            pass_fds=pass_fds,
            start_new_session=True,
            env=_child_env(url),
            close_fds=True,
        )


def _tail(path: Path, limit: int = 600) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:].replace("\n", " | ")


def start_sidecar(
    run_pk: int,
    pid: int,
    url: str,
    *,
    interval: float = 1.0,
    flush: float = 5.0,
    cgroup: str | None = None,
    gpu: str = "auto",
    timeout: float = 2.0,
    log_path: str | Path | None = None,
    grace: float = 10.0,
    started_at: float | None = None,
) -> SidecarHandle | None:
    """Spawn the sidecar for ``run_pk`` sampling ``pid``; None (and one warning) on any failure."""
    proc: subprocess.Popen[bytes] | None = None
    read_fd = write_fd = -1
    try:
        path = Path(log_path) if log_path else default_log_path(run_pk)
        path.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        cmd = sidecar_command(
            run_pk, pid, interval=interval, flush=flush, cgroup=cgroup, gpu=gpu,
            ready_fd=write_fd, grace=grace, started_at=started_at,
        )  # fmt: skip
        proc = _spawn(cmd, path, url, stdin=subprocess.DEVNULL, pass_fds=(write_fd,))
        os.close(write_fd)
        write_fd = -1
        deadline = time.monotonic() + max(0.0, timeout)
        if _wait_ready(read_fd, deadline):
            return SidecarHandle(run_pk=run_pk, target_pid=pid, process=proc, log_path=path)
        try:  # the pipe closed (it is exiting) or the time is up: collect its exit code if any
            code: int | None = proc.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            proc.kill()
            proc.wait(timeout=1.0)
            why = f"it did not report ready within {timeout:g}s"
        else:
            why = f"it exited with code {code}"
        log.warning(
            "predictive: resource sampler for run %s not started (%s); the task runs unsampled. "
            "Sampler log %s: %s",
            run_pk, why, path, _tail(path),
        )  # fmt: skip
        return None
    except Exception as exc:
        log.warning("predictive: cannot start the resource sampler for run %s (%s); the task runs unsampled",
                    run_pk, exc)  # fmt: skip
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
        return None
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _wait_ready(fd: int, deadline: float) -> bool:
    """True once the sidecar wrote 'ready'; False when it closed the pipe or the deadline passed."""
    got = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False  # the sidecar closed the pipe without saying ready: it failed
        got += chunk
        if b"ready" in got:
            return True


def stop_sidecar(handle: SidecarHandle | None, timeout: float = 5.0) -> StopStatus:
    """Ask the sidecar to take a last sample, flush and exit; wait at most ``timeout`` seconds."""
    if handle is None:
        return StopStatus.ERROR
    proc = handle.process
    try:
        if proc.poll() is not None:
            return StopStatus.ALREADY_EXITED
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            log.warning(
                "predictive: resource sampler of run %s did not exit within %gs; it finishes on its own",
                handle.run_pk, timeout,
            )  # fmt: skip
            return StopStatus.TIMED_OUT
        return StopStatus.STOPPED
    except Exception as exc:
        log.warning("predictive: cannot stop the resource sampler of run %s (%s)", handle.run_pk, exc)
        return StopStatus.ERROR


@dataclass
class RecorderHandle:
    """A sidecar recording one leg of a try; the listener talks to it through ``control``."""

    target_pid: int
    process: subprocess.Popen[bytes]
    log_path: Path
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: Message, *, close: bool = False) -> bool:
        """Write one control line (never blocks: a few hundred bytes into an empty pipe)."""
        from airflow_predictive.sampling.control import encode

        with self._lock:  # a STORE line may come from the lookup's thread
            if self.closed or self.process.stdin is None:
                return False
            try:
                self.process.stdin.write(encode(message))
                self.process.stdin.flush()
                return True
            except (OSError, ValueError) as exc:  # the sidecar died: its log says why
                log.warning("predictive: the resource sampler is gone (%s); log %s: %s", exc, self.log_path,
                            _tail(self.log_path))  # fmt: skip
                return False
            finally:
                if close:
                    self._close()

    def end(self, outcome: Outcome, at: datetime, exit_code: int | None, note: str | None) -> bool:
        """The try's outcome, with the caller's own RSS and peak RSS when it is the task process."""
        from airflow_predictive.sampling.control import EndMessage, own_memory

        rss, hwm = own_memory() if os.getpid() == self.target_pid else (None, None)
        return self.send(EndMessage(outcome, at, exit_code, note, rss, hwm), close=True)

    def leg_ended(self, reason: LegEnd, at: datetime) -> bool:
        from airflow_predictive.sampling.control import LegMessage

        return self.send(LegMessage(reason, at), close=True)

    def give_store(self, url: str | None, why: str = "") -> bool:
        """The store URL for a sidecar launched without one (``url`` None: there is none)."""
        from airflow_predictive.sampling.control import StoreMessage

        return self.send(StoreMessage(url, why))

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        self.closed = True
        if self.process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()


def recorder_command(
    pid: int,
    *,
    interval: float,
    flush: float,
    cgroup: str | None,
    gpu: str,
    grace: float,
    timeout: float,
    catch_up: float,
    store_later: bool = False,
) -> list[str]:
    cmd = [
        sys.executable, "-m", SIDECAR_MODULE, "--control", "--pid", str(pid), "--url-env", URL_ENV,
        "--interval", repr(float(interval)), "--flush", repr(float(flush)), "--gpu", gpu,
        "--grace", repr(float(grace)), "--timeout", repr(float(timeout)), "--catch-up", repr(float(catch_up)),
    ]  # fmt: skip
    if cgroup:
        cmd += ["--cgroup", cgroup]
    if store_later:
        cmd.append("--store-later")
    return wrap(cmd, cgroup)


def launch_recorder(
    record: RunRecord,
    pid: int,
    url: str | None,
    *,
    interval: float = 1.0,
    flush: float = 5.0,
    cgroup: str | None = None,
    gpu: str = "auto",
    grace: float = 2.0,
    timeout: float = 1.0,
    catch_up: float = 300.0,
    log_path: str | Path | None = None,
) -> RecorderHandle | None:
    """Spawn the recording sidecar for ``record`` sampling ``pid``; None (one warning) on failure.
    ``url`` None: the caller gives it later (``RecorderHandle.give_store``)."""
    from airflow_predictive.sampling.control import StartMessage

    try:
        ident = record.identity
        name = f"{ident.key.dag_id}.{ident.key.task_id}.{ident.key.map_index}.{ident.try_number}"
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:150]
        path = (
            Path(log_path)
            if log_path
            else Path(tempfile.gettempdir()) / "airflow-predictive" / (f"sampler-{safe}-{os.getpid()}.log")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = recorder_command(
            pid, interval=interval, flush=flush, cgroup=cgroup, gpu=gpu, grace=grace,
            timeout=timeout, catch_up=catch_up, store_later=url is None,
        )  # fmt: skip
        proc = _spawn(cmd, path, url, stdin=subprocess.PIPE)
        handle = RecorderHandle(target_pid=pid, process=proc, log_path=path)
        from datetime import UTC, datetime

        from airflow_predictive.sampling.control import own_memory

        rss = own_memory()[0] if pid == os.getpid() else None
        if not handle.send(StartMessage(record, datetime.now(UTC), rss)):
            return None
        return handle
    except Exception as exc:
        log.warning("predictive: cannot start the resource sampler (%s); the task runs unrecorded", exc)
        return None
