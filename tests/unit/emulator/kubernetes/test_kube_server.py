"""The emulator's HTTP transport treats a client that went away as routine (no traceback on
stderr, the server keeps serving) and still reports real handler errors."""

from __future__ import annotations

import logging
import socket
import struct
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.emulator.kubernetes.emulator import Emulator

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    em = Emulator().start()
    yield em
    em.stop()


def _reset_mid_request(port: int) -> None:
    """Send half a request line, then close with RST (SO_LINGER 0): the server's read fails with
    ConnectionResetError, as when a client times out or a watch is torn down."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.2)  # the server's handler thread is now reading the rest of the headers
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_that_resets_its_connection_leaves_no_traceback_and_the_server_serves_on(
    emulator: Emulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_predictive.emulator.kubernetes.server"):
        _reset_mid_request(emulator.port)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("went away" in r.message for r in caplog.records):
            time.sleep(0.05)
    assert any("went away" in r.message for r in caplog.records)  # the reset reached the server
    assert "Traceback" not in capfd.readouterr().err
    with urllib.request.urlopen(f"{emulator.url}/version", timeout=5) as resp:
        assert resp.status == 200


def test_any_other_handler_error_still_prints_its_traceback(
    emulator: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    server = emulator._server
    assert server is not None
    try:
        raise ValueError("a bug in a handler")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug in a handler" in capfd.readouterr().err
