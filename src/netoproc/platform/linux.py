"""The Linux platform: owners from the kernel as sockets are used (eBPF, see
platform/owners.py), else sockets from sock_diag and their holders from /proc;
names from /proc, containers and units from cgroups (platform/cgroups.py);
address translation from conntrack (platform/conntrack.py).

With eBPF, the kernel names the process at each socket's first send or
receive, and the socket table only adds what the kernel keeps about sockets
(state, TCP figures, which fds hold them). Without it (an older kernel, no
CAP_BPF), two threads look owners up: the engine thread (lookups of new
flows, the full table) and the fast lane, which finds who holds the sockets
of just-opened flows the moment their first packet leaves (`prefetch`),
before a short-lived process can exit. Each has its own netlink socket and
its own map of /proc, so neither waits for the other's scans; they meet only
where the fast lane leaves its answers for `lookup`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable

from netoproc.ebpf import BpfUnavailable, missing_capabilities, unusable
from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    InterfaceInfo,
    NatEntry,
    OwnerSighting,
    SocketInfo,
)
from netoproc.platform import PlatformError
from netoproc.platform.cgroups import CgroupNames
from netoproc.platform.conntrack import Conntrack, ConntrackError
from netoproc.platform.interfaces import InterfaceReader
from netoproc.platform.owners import OwnerTracer
from netoproc.platform.processes import ProcessNames
from netoproc.platform.procfs import InodeOwners, ProcFacts
from netoproc.platform.resolvers import read_resolvers
from netoproc.platform.sockdiag import DiagSocket, SockDiag, SockDiagError

log = logging.getLogger("netoproc")

MAX_LOOKUPS = 512  # beyond this many new flows at once, one table dump is cheaper
MAX_PREFETCHED = 4096
PREFETCH_WAIT = 0.05  # seconds `lookup` waits for the fast lane's answer on the same flow

Tuple5 = tuple[int, int, int, int, int]  # proto, local addr, local port, remote addr, remote port
# what the fast lane saw of a socket: itself, its holder (pid, fd), the holder's (comm, uid)
Prefetched = tuple[DiagSocket, tuple[int, int], tuple[str, int] | None]


# What the fallback reads: other users' /proc/PID/fd links (docs in README, "Privileges")
FALLBACK_CAPABILITIES = (("CAP_DAC_READ_SEARCH", 2), ("CAP_SYS_PTRACE", 19))


def describe_owners(kernel_owners: bool) -> tuple[str, list[str]]:
    """The eBPF owner tracer if it can load here, the socket table and /proc as its
    fallback, and the capabilities this process lacks for them."""
    fallback = "/proc + sock_diag"
    lacking = missing_capabilities(FALLBACK_CAPABILITIES)
    if not kernel_owners:
        return f"{fallback} (the eBPF tracer turned off)", lacking
    why = unusable(core=True)
    if why:
        return f"{fallback} (no eBPF tracer: {why})", lacking
    return f"eBPF tracer; fallback: {fallback}", missing_capabilities() + lacking


class LinuxPlatform:
    def __init__(self, proc_root: str = "/proc", *, kernel_owners: bool = True) -> None:
        try:
            self._diag = SockDiag()
        except OSError as exc:
            raise PlatformError(f"cannot open sock_diag netlink socket: {exc.strerror}") from None
        self._owners = InodeOwners(proc_root)
        self._names = ProcessNames(ProcFacts(proc_root), CgroupNames(proc_root).of_pid)
        self._interfaces: InterfaceReader | None = None
        self._owners.rescan()
        # sockets no process holds (kernel sockets, or not yet accept()ed): known
        # after a full scan, so they do not trigger another one every tick
        self._unheld: set[int] = set()
        # the last table's sockets, so an unchanged one stays the same object: the
        # flows and the last snapshot hold the old table while the new one is made,
        # and two copies of every idle connection were ~10 % of the memory
        self._last_table: dict[SocketInfo, SocketInfo] = {}
        # the fast lane's own: it must never wait for a scan of the engine thread's
        self._fast_diag: SockDiag | None = None
        self._fast_owners = InodeOwners(proc_root)
        # the fast lane's answers, and the flows it is asking about right now
        self._settled = threading.Condition()
        self._prefetched: OrderedDict[Tuple5, Prefetched] = OrderedDict()
        self._prefetching: set[Tuple5] = set()
        self._conntrack: Conntrack | None = None
        self._no_conntrack = ""  # why the connection tracker cannot be asked, once known
        self._tracer: OwnerTracer | None = None
        self._why = "turned off (NETOP_EBPF=off)"
        if kernel_owners:
            try:
                self._tracer = OwnerTracer()
                self._tracer.start()
            except BpfUnavailable as exc:
                self._why = str(exc)

    def close(self) -> None:
        if self._conntrack is not None:
            self._conntrack.close()
        if self._tracer is not None:
            self._tracer.close()
        self._diag.close()
        if self._interfaces is not None:
            self._interfaces.close()
        if self._fast_diag is not None:
            self._fast_diag.close()

    def sightings(self) -> list[OwnerSighting]:
        return self._tracer.take() if self._tracer is not None else []

    def owner_source(self) -> tuple[str, str, int]:
        if self._tracer is None:
            return "sockets", self._why, 0
        return "eBPF", "", self._tracer.lost()

    @property
    def fast_lane(self) -> bool:
        return self._tracer is None

    def prefetch(self, flows: Iterable[Tuple5]) -> None:
        """Find who holds the sockets of flows that just opened, now; `lookup` uses
        the answers. Only what vanishes with the process is read here (the socket's
        holder, its comm and uid): every read lets the engine thread take the
        interpreter back, so the rest waits for `lookup`."""
        if self._fast_diag is None:
            self._fast_diag = SockDiag()  # belongs to the fast lane's thread
        flows = list(flows)
        with self._settled:
            self._prefetching.update(flows)
        seen: list[tuple[Tuple5, Prefetched]] = []
        try:
            found = []
            for flow in flows:
                try:
                    d = self._fast_diag.lookup(*flow)
                except (OSError, SockDiagError):
                    continue
                if d is not None and d.inode:
                    found.append((flow, d))
            if found:
                owners = self._fast_owners
                holders = owners.locate({d.inode for _, d in found})
                for flow, d in found:
                    if d.inode in holders:
                        pid, fd = holders[d.inode][0]
                        seen.append((flow, (d, (pid, fd), owners.glimpsed.get(pid))))
        finally:
            with self._settled:
                self._prefetched.update(seen)
                while len(self._prefetched) > MAX_PREFETCHED:
                    self._prefetched.popitem(last=False)
                self._prefetching.difference_update(flows)
                self._settled.notify_all()

    def lookup(self, keys: Iterable[FlowKey]) -> dict[FlowKey, SocketInfo | None] | None:
        """The sockets new flows belong to, asked one by one; None if there are too many
        (the caller should take a full `socket_table` instead)."""
        keys = list(keys)
        if len(keys) > MAX_LOOKUPS:
            return None
        flows = {
            key: (key.proto, key.laddr, key.lport, key.raddr, key.rport)
            for key in keys
            if key.proto in (IPPROTO_TCP, IPPROTO_UDP)
        }
        with self._settled:
            # the fast lane may be looking one of them up right now: its answer, taken
            # while the process lived, is better than ours, asked after it may have exited
            self._settled.wait_for(
                lambda: self._prefetching.isdisjoint(flows.values()), PREFETCH_WAIT
            )
            early = {
                key: self._prefetched.pop(flow)
                for key, flow in flows.items()
                if flow in self._prefetched
            }
        found: dict[FlowKey, DiagSocket | None] = {}
        for key, flow in flows.items():
            if key not in early:
                try:
                    found[key] = self._diag.lookup(*flow)
                except (OSError, SockDiagError):
                    found[key] = None
        self._owners.find(d.inode for d in found.values() if d is not None)
        answers: dict[FlowKey, SocketInfo | None] = {
            key: self._socket(*seen) for key, seen in early.items()
        }
        answers.update({key: self._socket(d) if d else None for key, d in found.items()})
        return answers

    def translations(self, keys: Iterable[FlowKey]) -> dict[FlowKey, NatEntry | None] | None:
        """Conntrack's entries for flows no socket here carries; None without
        conntrack (no nf_conntrack_netlink, no CAP_NET_ADMIN), which is not asked
        again."""
        if self._no_conntrack:
            return None
        found: dict[FlowKey, NatEntry | None] = {}
        try:
            if self._conntrack is None:
                self._conntrack = Conntrack()
            for key in keys:
                found[key] = self._conntrack.find(key)
        except (OSError, ConntrackError) as exc:
            self._no_conntrack = str(exc) or type(exc).__name__
            log.debug("conntrack unavailable: %s", self._no_conntrack)
            return None
        return found

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
        if any(not self._owners.holders(i) and i not in self._unheld for i in inodes):
            self._owners.rescan()
            self._unheld = {i for i in inodes if not self._owners.holders(i)}
        self._owners.forget_missing(inodes)
        last = self._last_table
        table = [last.get(sock, sock) for sock in map(self._socket, diag)]
        self._last_table = {sock: sock for sock in table}
        self._names.forget_except({s.owner.pid for s in table if s.owner})
        return table

    def interfaces(self) -> list[InterfaceInfo]:
        if self._interfaces is None:
            self._interfaces = InterfaceReader()
        try:
            return self._interfaces.read()
        except ValueError as exc:
            raise PlatformError(str(exc)) from None

    def resolvers(self) -> dict[str, tuple[str, ...]]:
        return read_resolvers()

    def _socket(
        self,
        d: DiagSocket,
        held: tuple[int, int] | None = None,
        glimpsed: tuple[str, int] | None = None,
    ) -> SocketInfo:
        """`d` with its owner: `held` (pid, fd) and `glimpsed` if the fast lane saw
        them, else what the map knows."""
        owner = fd = None
        if held is None and d.inode:
            held = self._owners.owner(d.inode)
        if held is not None:
            pid, fd = held
            owner = self._names.describe(pid, glimpsed or self._owners.glimpsed.get(pid))
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
