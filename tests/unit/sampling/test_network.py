"""Network bytes of a process from its own TCP sockets (sock_diag), parsers, and the absent fallback."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
from typing import TYPE_CHECKING

import pytest

from airflow_predictive.sampling import network
from airflow_predictive.sampling.network import (
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    SockDiagUnavailable,
    SocketBytes,
    TreeNetwork,
    parse_diag_messages,
    parse_net_dev,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    client = socket.create_connection(srv.getsockname())
    server, _ = srv.accept()
    srv.close()
    yield client, server
    client.close()
    server.close()


def _transfer(sender: socket.socket, receiver: socket.socket, n: int) -> None:
    sender.sendall(b"x" * n)
    got = 0
    while got < n:
        got += len(receiver.recv(1 << 20))


def test_counts_the_bytes_this_process_sends_and_receives_over_tcp(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    net = TreeNetwork(os.getpid())
    assert net.read([os.getpid()], os.getpid(), t=0.0) is None  # baseline
    _transfer(client, server, 3_000_000)
    _transfer(server, client, 50_000)
    rates = net.read([os.getpid()], os.getpid(), t=2.0)
    assert rates is not None
    # both ends live in this process: each direction is received once and sent once
    assert rates.rx_bps == pytest.approx(3_050_000 / 2.0, rel=0.01)
    assert rates.tx_bps == pytest.approx(3_050_000 / 2.0, rel=0.01)


def test_a_process_without_sockets_has_zero_network_when_measurable() -> None:
    net = TreeNetwork(os.getpid())
    sleeper = subprocess.Popen(["sleep", "30"])  # close_fds: it holds no socket
    try:
        assert net.read([sleeper.pid], os.getpid(), t=0.0) is None
        rates = net.read([sleeper.pid], os.getpid(), t=1.0)
        assert rates is not None and rates.rx_bps == 0.0 and rates.tx_bps == 0.0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_network_is_absent_when_sock_diag_is_unusable(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    def refuse(self: object) -> None:
        raise SockDiagUnavailable(13, "denied by seccomp")

    monkeypatch.setattr(network.SockDiag, "__init__", refuse)
    net = TreeNetwork(os.getpid())
    with caplog.at_level(logging.WARNING):
        readings = [net.read([os.getpid()], os.getpid(), t=float(t)) for t in range(3)]
    assert readings == [None, None, None]  # absent, never zero
    assert sum("network usage is recorded as absent" in r.message for r in caplog.records) == 1


def _diag_reply(inode: int, acked: int, received: int) -> bytes:
    tcp_info = bytearray(232)
    struct.pack_into("=QQ", tcp_info, 120, acked, received)
    attr = struct.pack("=HH", 4 + len(tcp_info), network.INET_DIAG_INFO) + bytes(tcp_info)
    msg = bytearray(72)
    struct.pack_into("=I", msg, 68, inode)
    body = bytes(msg) + attr
    return struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def test_parses_inet_diag_replies_and_stops_at_done() -> None:
    data = _diag_reply(77, 1000, 2000) + struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)
    out: dict[int, SocketBytes] = {}
    assert parse_diag_messages(data, out) is True
    assert out == {77: SocketBytes(rx=2000, tx=1000)}


def test_truncated_reply_is_ignored_not_fatal() -> None:
    out: dict[int, SocketBytes] = {}
    data = _diag_reply(77, 1000, 2000)
    assert parse_diag_messages(data[:50], out) is True  # length field points past the data
    assert out == {}


def test_netlink_error_reply_raises_unavailable() -> None:
    data = struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, 1, 0, -1) + bytes(16)
    with pytest.raises(SockDiagUnavailable):
        parse_diag_messages(data, {})


def test_parses_net_dev_without_loopback() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
        "    lo: 999999 10 0 0 0 0 0 0 999999 10 0 0 0 0 0 0\n"
        "  eth0: 1500 10 0 0 0 0 0 0 700 5 0 0 0 0 0 0\n"
        "  eth1: 500 1 0 0 0 0 0 0 300 2 0 0 0 0 0 0\n"
    )
    assert parse_net_dev(text) == SocketBytes(rx=2000, tx=1000)


def test_socket_closed_between_ticks_is_dropped_and_new_one_counted_in_full() -> None:
    counters = network._Counters()
    assert counters.rates({1: SocketBytes(100, 100)}, 0.0) is None
    rates = counters.rates({2: SocketBytes(40, 60)}, 1.0)
    assert rates is not None and rates.rx_bps == 40.0 and rates.tx_bps == 60.0
