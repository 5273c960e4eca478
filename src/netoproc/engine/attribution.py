"""Which socket a flow belongs to, given a socket table.

The order follows the kernel's own delivery: an exact connected socket
(local and remote endpoints), then a socket bound to the local address and
port (listeners, unconnected UDP), then one bound to the wildcard address on
that port: for IPv4 traffic the IPv4 wildcard before a dual-stack IPv6 one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from netoproc.model import (
    V4_MAPPED_PREFIX,
    FlowKey,
    ProcessRef,
    SocketInfo,
    UnknownReason,
    is_v4,
)

K = TypeVar("K")


class SocketIndex:
    def __init__(self, sockets: Iterable[SocketInfo] = ()) -> None:
        self.sockets = tuple(sockets)
        self.exact: dict[tuple[int, int, int, int, int], SocketInfo] = {}
        # unconnected sockets by (proto, local address, port); wildcards under 0 or ::ffff:0
        self.bound: dict[tuple[int, int, int], SocketInfo] = {}
        self.listening: set[tuple[int, int, int]] = set()  # (proto, pid, port)
        self.per_pid: dict[int, int] = {}  # sockets each process holds
        self.holders: set[ProcessRef] = set()  # processes holding any
        for sock in self.sockets:
            if sock.owner:
                self.per_pid[sock.owner.pid] = self.per_pid.get(sock.owner.pid, 0) + 1
                self.holders.add(sock.owner)
            if sock.state == "LISTEN" and sock.owner:
                self.listening.add((sock.proto, sock.owner.pid, sock.lport))
            if sock.connected:
                key = (sock.proto, sock.laddr, sock.lport, sock.raddr, sock.rport)
                self._keep(self.exact, key, sock)
            else:
                self._keep(self.bound, (sock.proto, sock.laddr, sock.lport), sock)

    @staticmethod
    def _keep(table: dict[K, SocketInfo], key: K, sock: SocketInfo) -> None:
        # Several sockets on one key (SO_REUSEPORT, shared listeners): prefer one
        # with a visible owner, then the lowest pid, so the choice is stable.
        old = table.get(key)
        if old is None or _rank(sock) < _rank(old):
            table[key] = sock

    def match(self, key: FlowKey) -> SocketInfo | None:
        sock = self.exact.get((key.proto, key.laddr, key.lport, key.raddr, key.rport))
        if sock is None or (sock.owner is None and sock.state != "TIME_WAIT"):
            # an accepted connection not yet accept()ed has no owner: its listener has
            sock = self._unconnected(key) or sock
        return sock

    def _unconnected(self, key: FlowKey) -> SocketInfo | None:
        bound = self.bound
        found = bound.get((key.proto, key.laddr, key.lport))
        if found is None and is_v4(key.laddr):
            found = bound.get((key.proto, V4_MAPPED_PREFIX, key.lport))
        return found or bound.get((key.proto, 0, key.lport))


def _rank(sock: SocketInfo) -> tuple[int, int]:
    return (0, sock.owner.pid) if sock.owner else (1, 0)


def reason_for(sock: SocketInfo | None) -> UnknownReason | None:
    """Why a flow matched to `sock` has no process, or None if it has one."""
    if sock is None:
        return UnknownReason.NO_SOCKET
    if sock.owner is not None:
        return None
    return UnknownReason.CLOSED if sock.state == "TIME_WAIT" else UnknownReason.NO_OWNER
