"""Container logs of process-backed pods: captured with a timestamp per line, served like the kubelet.

Why it exists: the KubernetesPodOperator streams ``GET .../pods/{name}/log?follow=true&timestamps=true``
and parses ``<RFC3339Nano> <line>``. Each container instance (one per restart) writes to its own
file in the CRI format (``<ts> <stream> F <line>``, stdout and stderr interleaved as they came);
``read_lines`` answers the query parameters ``timestamps``, ``sinceSeconds`` / ``sinceTime``,
``tailLines`` and ``limitBytes``, and ``follow`` tails the file until the container has stopped.
A capture thread never raises into the kubelet: a broken pipe just ends the capture.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def _stamp(now: datetime | None = None) -> str:
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond * 1000:09d}Z"


def parse_stamp(text: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds (``...05.123456789Z``) -> aware datetime."""
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        return base.replace(microsecond=int((frac + "000000")[:6])) if frac else base
    except ValueError:
        return None


class LogCapture:
    """Reads a process's output pipe(s) and appends timestamped CRI lines to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        with open(path, "a"):
            pass

    def pipe(self, stream: str) -> int:
        """A new pipe whose write end the child gets; returns that write fd (close it after fork)."""
        read_fd, write_fd = os.pipe()
        t = threading.Thread(target=self._pump, args=(read_fd, stream), daemon=True, name="kube-log")
        t.start()
        self._threads.append(t)
        return write_fd

    def _pump(self, fd: int, stream: str) -> None:
        buf = b""
        try:
            with os.fdopen(fd, "rb", buffering=0) as src:
                while True:
                    chunk = src.read(65536)
                    if not chunk:
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    self._append(lines, stream, "F")
        except OSError:
            pass
        if buf:
            self._append([buf], stream, "P")

    def _append(self, lines: list[bytes], stream: str, tag: str) -> None:
        if not lines:
            return
        ts = _stamp()
        text = "".join(f"{ts} {stream} {tag} {ln.decode('utf-8', 'replace')}\n" for ln in lines)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(text)

    def join(self, timeout: float = 2.0) -> None:
        for t in self._threads:
            t.join(timeout)


@dataclass(frozen=True, slots=True)
class LogQuery:
    timestamps: bool = False
    since: datetime | None = None
    tail_lines: int | None = None
    limit_bytes: int | None = None


def _parse(line: str) -> tuple[str, str] | None:
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return None
    ts, text = parts[0], parts[3] if len(parts) == 4 else ""
    return ts, text


def _render(ts: str, text: str, query: LogQuery) -> str:
    return f"{ts} {text}\n" if query.timestamps else f"{text}\n"


def read_lines(path: str, query: LogQuery) -> str:
    """The whole (filtered) log of one container instance as the API returns it."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.readlines()
    except OSError:
        return ""
    rows = [r for r in (_parse(x) for x in raw) if r is not None]
    if query.since is not None:
        since = query.since
        rows = [r for r in rows if (parse_stamp(r[0]) or since) >= since]
    if query.tail_lines is not None:
        rows = rows[-query.tail_lines :] if query.tail_lines > 0 else []
    out = "".join(_render(ts, text, query) for ts, text in rows)
    if query.limit_bytes is not None:
        out = out.encode()[: query.limit_bytes].decode("utf-8", "ignore")
    return out


def follow(path: str, query: LogQuery, done: Callable[[], bool], poll_s: float = 0.05) -> Iterator[bytes]:
    """What ``read_lines`` returns, then every new line until ``done()`` and the file is drained."""
    first = read_lines(path, query)
    sent = 0
    try:
        with open(path, encoding="utf-8") as f:
            sent = len(f.readlines())
    except OSError:
        pass
    if first:
        yield first.encode()
    finished_at: float | None = None
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.readlines()
        except OSError:
            return
        complete = [x for x in raw[sent:] if x.endswith("\n")]
        if complete:
            sent += len(complete)
            rows = [r for r in (_parse(x) for x in complete) if r is not None]
            yield "".join(_render(ts, text, query) for ts, text in rows).encode()
            continue
        if done():
            # a last look after the capture threads had a moment to flush
            if finished_at is None:
                finished_at = time.monotonic()
            elif time.monotonic() - finished_at > 0.3:
                return
        yield b""  # keeps the generator responsive to client disconnects
        time.sleep(poll_s)
