"""The Linux platform: sockets from sock_diag, owners from /proc, names from psutil.

Two threads use it: the engine thread (lookups of new flows, the full table)
and the fast lane, which looks up just-opened flows the moment their first
packet leaves (`prefetch`), before a short-lived process can exit. Each has
its own netlink socket; the shared /proc and process-name caches are locked.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, FlowKey, InterfaceInfo, SocketInfo
from netoproc.platform import PlatformError
from netoproc.platform.interfaces import read_interfaces
from netoproc.platform.processes import ProcessNames
from netoproc.platform.procfs import InodeOwners
from netoproc.platform.resolvers import read_resolvers
from netoproc.platform.sockdiag import DiagSocket, SockDiag, SockDiagError

MAX_LOOKUPS = 512  # beyond this many new flows at once, one table dump is cheaper
MAX_PREFETCHED = 4096

Tuple5 = tuple[int, int, int, int, int]  # proto, local addr, local port, remote addr, remote port


class LinuxPlatform:
    def __init__(self, proc_root: str = "/proc") -> None:
        try:
            self._diag = SockDiag()
        except OSError as exc:
            raise PlatformError(f"cannot open sock_diag netlink socket: {exc.strerror}") from None
        self._owners = InodeOwners(proc_root)
        self._names = ProcessNames()
        self._owners.rescan()
        # sockets no process holds (kernel sockets, or not yet accept()ed): known
        # after a full scan, so they do not trigger another one every tick
        self._unheld: set[int] = set()
        self._lock = threading.Lock()  # guards the /proc and name caches
        self._prefetched: OrderedDict[Tuple5, SocketInfo] = OrderedDict()
        self._fast_diag: SockDiag | None = None

    def close(self) -> None:
        self._diag.close()
        if self._fast_diag is not None:
            self._fast_diag.close()

    def prefetch(self, flows: Iterable[Tuple5]) -> None:
        """Look up the sockets of flows that just opened, now; `lookup` uses the answers."""
        if self._fast_diag is None:
            self._fast_diag = SockDiag()  # belongs to the fast lane's thread
        found = []
        for flow in flows:
            try:
                d = self._fast_diag.lookup(*flow)
            except (OSError, SockDiagError):
                continue
            if d is not None and d.inode:
                found.append((flow, d))
        if not found:
            return
        with self._lock:
            self._owners.find(d.inode for _, d in found)
            answers = [(flow, self._socket(d)) for flow, d in found]
        for flow, info in answers:
            if info.owner is not None:
                self._prefetched[flow] = info
                if len(self._prefetched) > MAX_PREFETCHED:
                    self._prefetched.popitem(last=False)

    def lookup(self, keys: Iterable[FlowKey]) -> dict[FlowKey, SocketInfo | None] | None:
        """The sockets new flows belong to, asked one by one; None if there are too many
        (the caller should take a full `socket_table` instead)."""
        keys = list(keys)
        if len(keys) > MAX_LOOKUPS:
            return None
        found: dict[FlowKey, DiagSocket | None] = {}
        answers: dict[FlowKey, SocketInfo | None] = {}
        for key in keys:
            if key.proto not in (IPPROTO_TCP, IPPROTO_UDP):
                continue
            early = self._prefetched.pop(
                (key.proto, key.laddr, key.lport, key.raddr, key.rport), None
            )
            if early is not None:
                answers[key] = early
                continue
            try:
                found[key] = self._diag.lookup(
                    key.proto, key.laddr, key.lport, key.raddr, key.rport
                )
            except (OSError, SockDiagError):
                found[key] = None
        with self._lock:
            self._owners.find(d.inode for d in found.values() if d is not None)
            answers.update({key: self._socket(d) if d else None for key, d in found.items()})
        return answers

    def socket_table(self) -> list[SocketInfo]:
        """Every TCP and UDP socket, with owners."""
        diag: list[DiagSocket] = []
        for proto in (IPPROTO_TCP, IPPROTO_UDP):
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    diag += self._diag.dump(family, proto)
                except (OSError, SockDiagError):
                    continue  # e.g. IPv6 disabled: the rest still counts
        inodes = {d.inode for d in diag if d.inode}
        with self._lock:
            if any(not self._owners.holders(i) and i not in self._unheld for i in inodes):
                self._owners.rescan()
                self._unheld = {i for i in inodes if not self._owners.holders(i)}
            self._owners.forget_missing(inodes)
            table = [self._socket(d) for d in diag]
            self._names.forget_except({s.owner.pid for s in table if s.owner})
            return table

    def interfaces(self) -> list[InterfaceInfo]:
        return read_interfaces()

    def resolvers(self) -> dict[str, tuple[str, ...]]:
        return read_resolvers()

    def _socket(self, d: DiagSocket) -> SocketInfo:
        owner = fd = None
        held = self._owners.owner(d.inode) if d.inode else None
        if held is not None:
            owner = self._names.describe(held[0], self._owners.glimpsed.get(held[0]))
            fd = held[1]
        return SocketInfo(
            proto=d.proto,
            laddr=d.laddr,
            lport=d.lport,
            raddr=d.raddr,
            rport=d.rport,
            state=d.state_name,
            inode=d.inode,
            uid=d.uid,
            owner=owner,
            fd=fd if owner else None,
            tcp=d.tcp if d.proto == IPPROTO_TCP and d.state_name != "LISTEN" else None,
        )
