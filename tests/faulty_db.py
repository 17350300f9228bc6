"""Databases that misbehave, for recording's fault tests and its benchmark.

``HungServer``: accepts TCP connections and never answers (a stuck server, a black-holed proxy).
``refused_url``: a port nothing listens on. ``TableLock``: another PostgreSQL session holding an
ACCESS EXCLUSIVE lock on a table. ``Proxy``: a TCP relay to a real server that can be down first and
come back later (the database "returns").
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_url(kind: str = "postgresql+psycopg2") -> str:
    return f"{kind}://u:p@127.0.0.1:{free_port()}/db"


class HungServer:
    """Listens, accepts, reads nothing and answers nothing until closed."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://u:p@127.0.0.1:{self.port}/db"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in self._held:
            with contextlib.suppress(OSError):
                c.close()


@contextlib.contextmanager
def table_lock(url: str, table: str = "predictive_task_run") -> Iterator[Any]:
    """Hold ACCESS EXCLUSIVE on ``table`` from another session until the block exits."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    conn = engine.connect()
    tx = conn.begin()
    conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
    try:
        yield conn
    finally:
        tx.rollback()
        conn.close()
        engine.dispose()


class Proxy:
    """A TCP relay on ``port`` to ``target``; ``up()`` / ``down()`` switch it (down: refused)."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._sock: socket.socket | None = None
        self._pairs: list[socket.socket] = []

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def down(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        for s in self._pairs:
            with contextlib.suppress(OSError):
                s.close()
        self._pairs.clear()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._pairs += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
