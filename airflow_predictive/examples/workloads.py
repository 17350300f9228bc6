"""Real, time-varying work with known shapes, parametrised so that runs differ like real workloads.

Each function does what it says for real (allocates and touches memory, burns CPU, writes and
reads files with the page cache dropped, moves bytes over loopback) and returns a small summary
of what it did, so tests can compare the recorded curves with the truth.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class PhaseReport:
    kind: str
    started_s: float  # monotonic time when the phase started
    ended_s: float
    amount: float  # MiB allocated / moved, or CPU seconds burnt

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def memory_ramp(target_mb: int, steps: int = 8, step_s: float = 0.5, hold_s: float = 2.0) -> PhaseReport:
    """Grow resident memory to ``target_mb`` MiB in ``steps`` equal steps, hold, then free it."""
    start = time.monotonic()
    chunk = max(1, target_mb // max(1, steps)) * MIB
    blocks: list[bytearray] = []
    allocated = 0
    while allocated + chunk <= target_mb * MIB:
        blocks.append(bytearray(b"\x01") * chunk)  # written byte by byte: resident, not lazily mapped
        allocated += chunk
        time.sleep(step_s)
    rest = target_mb * MIB - allocated
    if rest > 0:
        blocks.append(bytearray(b"\x01") * rest)
        allocated += rest
    time.sleep(hold_s)
    end = time.monotonic()
    del blocks
    return PhaseReport("memory", start, end, allocated / MIB)


def cpu_burn(seconds: float) -> PhaseReport:
    """Keep one core busy for ``seconds`` (pure Python arithmetic)."""
    start = time.monotonic()
    x = 0
    while time.monotonic() - start < seconds:
        for i in range(20_000):
            x = (x * 31 + i) % 1_000_003
    end = time.monotonic()
    return PhaseReport("cpu", start, end, end - start)


def idle(seconds: float) -> PhaseReport:
    start = time.monotonic()
    time.sleep(seconds)
    return PhaseReport("idle", start, time.monotonic(), 0.0)


def disk_write_read(size_mb: int, directory: str | None = None) -> PhaseReport:
    """Write ``size_mb`` MiB to a file (fsync), drop it from the page cache, read it back."""
    start = time.monotonic()
    block = os.urandom(MIB)
    fd, path = tempfile.mkstemp(prefix="predictive-disk-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            for _ in range(size_mb):
                fh.write(block)
                fh.flush()
            os.fsync(fh.fileno())
        with open(path, "rb") as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while fh.read(MIB):
                pass
    finally:
        os.unlink(path)
    return PhaseReport("disk", start, time.monotonic(), float(size_mb))


def network_loopback(size_mb: int, rate_mb_s: float = 50.0) -> PhaseReport:
    """Send ``size_mb`` MiB over a loopback TCP connection at about ``rate_mb_s``; a thread receives."""
    start = time.monotonic()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = [0]

    def receive() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 16):
                received[0] += len(data)

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    payload = os.urandom(MIB)
    with socket.create_connection(("127.0.0.1", port)) as client:
        for i in range(size_mb):
            client.sendall(payload)
            ahead = (i + 1) / rate_mb_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    t.join(timeout=30)
    server.close()
    return PhaseReport("network", start, time.monotonic(), received[0] / MIB)
