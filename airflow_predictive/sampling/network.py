"""Network bytes/s of one process tree, measured from the tree's own TCP sockets.

psutil has no per-process byte counters, so this module reads the kernel's own per-socket
counters: the socket inodes a process holds are listed in ``/proc/<pid>/fd`` (``socket:[N]``),
and one sock_diag netlink dump (``SOCK_DIAG_BY_FAMILY`` with ``INET_DIAG_INFO``) returns each TCP
socket's ``tcp_info``, whose ``tcpi_bytes_received`` / ``tcpi_bytes_acked`` count the payload
bytes received and sent (acknowledged) on that socket. A task in its own network namespace is
measured from ``/proc/<pid>/net/dev`` instead (every non-loopback interface there is the task's).

Limits (see docs/sampler.md): TCP only (UDP has no byte counters in sock_diag), the last bytes of
a socket closed between two ticks are missed, sockets handed to processes outside the tree are
not seen. When no method works the reading is absent (``None``), never zero.

It must never raise into the sampler: every failure turns into an absent reading.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
TCP_LISTEN = 10
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ_V2 = struct.Struct("=BBBxI48x")  # family, protocol, ext, pad, states, inet_diag_sockid
_MSG_INODE = struct.Struct("=I")  # inet_diag_msg.idiag_inode sits at offset 68
_MSG_LEN = 72
_RTATTR = struct.Struct("=HH")
# struct tcp_info: tcpi_bytes_acked at 120, tcpi_bytes_received at 128 (Linux >= 4.1 / 4.2)
_TCPI_BYTES = struct.Struct("=QQ")
_TCPI_BYTES_OFFSET = 120


@dataclass(frozen=True, slots=True)
class SocketBytes:
    """Cumulative payload bytes of one TCP socket: received, and sent (acknowledged by the peer)."""

    rx: int
    tx: int


@dataclass(frozen=True, slots=True)
class NetRates:
    rx_bps: float
    tx_bps: float


class SockDiagUnavailable(OSError):
    """The sock_diag netlink interface cannot be used here (old kernel, seccomp, no permission)."""


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_diag_messages(data: bytes, out: dict[int, SocketBytes]) -> bool:
    """Parse one netlink datagram of inet_diag replies into ``out``; True once NLMSG_DONE is seen."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            return True  # corrupt: stop reading this dump rather than loop forever
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, pos + _NLMSGHDR.size)
            raise SockDiagUnavailable(-err, f"sock_diag refused the dump: {os.strerror(-err)}")
        body = pos + _NLMSGHDR.size
        if mtype == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _MSG_LEN:
            (inode,) = _MSG_INODE.unpack_from(data, body + 68)
            apos = body + _MSG_LEN
            end = pos + length
            while apos + _RTATTR.size <= end:
                alen, atype = _RTATTR.unpack_from(data, apos)
                if alen < _RTATTR.size:
                    break
                payload = apos + _RTATTR.size
                if (
                    atype == INET_DIAG_INFO
                    and inode
                    and alen - _RTATTR.size >= _TCPI_BYTES_OFFSET + _TCPI_BYTES.size
                ):
                    acked, received = _TCPI_BYTES.unpack_from(data, payload + _TCPI_BYTES_OFFSET)
                    out[inode] = SocketBytes(rx=received, tx=acked)
                apos += _align4(alen)
        pos += _align4(length)
    return False


class SockDiag:
    """One netlink socket reused across ticks; ``dump()`` returns bytes per TCP socket inode."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._sock.settimeout(1.0)
        except OSError as exc:
            raise SockDiagUnavailable(exc.errno or errno.EPERM, f"no sock_diag socket: {exc}") from exc
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def dump(self) -> dict[int, SocketBytes]:
        out: dict[int, SocketBytes] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            self._dump_family(family, out)
        return out

    def _dump_family(self, family: int, out: dict[int, SocketBytes]) -> None:
        self._seq += 1
        states = 0xFFFFFFFF & ~(1 << TCP_LISTEN)
        req = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
        hdr = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        try:
            self._sock.sendto(hdr + req, (0, 0))
            while True:
                data = self._sock.recv(65536)
                if not data or parse_diag_messages(data, out):
                    return
        except SockDiagUnavailable:
            raise
        except OSError as exc:
            raise SockDiagUnavailable(exc.errno or errno.EIO, f"sock_diag dump failed: {exc}") from exc


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open (raises OSError when unreadable)."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def net_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def parse_net_dev(text: str) -> SocketBytes:
    """Sum rx/tx bytes of every interface but loopback in a ``/proc/<pid>/net/dev`` text."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        if name.strip() == "lo" or len(cols) < 9:
            continue
        rx += int(cols[0])
        tx += int(cols[8])
    return SocketBytes(rx=rx, tx=tx)


class _Counters:
    """Turns cumulative per-key byte counters into a rate, tolerating keys that come and go."""

    def __init__(self) -> None:
        self._last: dict[int, SocketBytes] | None = None
        self._last_t: float | None = None

    def rates(self, now: Mapping[int, SocketBytes], t: float) -> NetRates | None:
        last, last_t = self._last, self._last_t
        self._last, self._last_t = dict(now), t
        if last is None or last_t is None or t <= last_t:
            return None  # first reading: a baseline only
        rx = tx = 0
        for key, cur in now.items():
            prev = last.get(key)
            if prev is None:  # opened since the previous tick: everything it carried is new
                rx, tx = rx + cur.rx, tx + cur.tx
            else:
                rx += max(0, cur.rx - prev.rx)
                tx += max(0, cur.tx - prev.tx)
        dt = t - last_t
        return NetRates(rx_bps=rx / dt, tx_bps=tx / dt)


class TreeNetwork:
    """Network rates of a set of processes; ``read(pids, t)`` -> NetRates, or None when unmeasurable."""

    def __init__(self, root_pid: int) -> None:
        self._diag: SockDiag | None = None
        self._broken: str | None = None
        self._sockets = _Counters()
        self._netdev = _Counters()
        self._own_netns = False
        try:
            self._own_netns = net_namespace(root_pid) != net_namespace("self")
        except OSError:
            pass  # decided per tick below: unreadable fds mean absent anyway
        if not self._own_netns:
            try:  # probe once, so a tree without sockets reads 0 only where bytes are measurable
                self._diag = SockDiag()
                self._diag.dump()
            except SockDiagUnavailable as exc:
                self._give_up(f"sock_diag netlink is not usable ({exc.strerror})")

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def read(self, pids: Iterable[int], root_pid: int, t: float) -> NetRates | None:
        if self._broken is not None:
            return None
        try:
            if self._own_netns:
                with open(f"/proc/{root_pid}/net/dev") as fh:
                    return self._netdev.rates({0: parse_net_dev(fh.read())}, t)
            return self._read_sockets(pids, t)
        except SockDiagUnavailable as exc:
            self._give_up(f"sock_diag netlink is not usable ({exc.strerror})")
        except PermissionError as exc:
            self._give_up(f"cannot list the task's open sockets ({exc})")
        except (OSError, ValueError, struct.error) as exc:
            log.debug("predictive sampler: network reading skipped this tick: %s", exc)
        return None

    def _give_up(self, why: str) -> None:
        self._broken = why
        log.warning("predictive sampler: network usage is recorded as absent: %s", why)
        self.close()

    def _read_sockets(self, pids: Iterable[int], t: float) -> NetRates | None:
        inodes: set[int] = set()
        for pid in pids:
            try:
                inodes |= socket_inodes(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited mid-sample
        counters: dict[int, SocketBytes] = {}
        if inodes:
            if self._diag is None:
                self._diag = SockDiag()
            every = self._diag.dump()
            counters = {i: every[i] for i in inodes if i in every}
        return self._sockets.rates(counters, t)
