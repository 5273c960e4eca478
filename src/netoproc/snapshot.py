"""The frozen `Snapshot`: everything a front end may show, as of one tick.

The engine builds one per tick; the TUI and the snapshot formats only read
it. Filtering lives here too, so `--filter` means the same thing in both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar, overload

from netoproc.model import ProcessRef, SocketInfo, format_addr

TRAFFIC_COLUMNS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")  # Traffic's fields, in order


@dataclass(frozen=True, slots=True)
class Traffic:
    """IP-layer bytes and packets in each direction."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.rx_bytes + other.rx_bytes,
            self.tx_bytes + other.tx_bytes,
            self.rx_packets + other.rx_packets,
            self.tx_packets + other.tx_packets,
        )

    @property
    def bytes(self) -> int:
        return self.rx_bytes + self.tx_bytes

    def reversed(self) -> Traffic:
        """The same traffic seen from the other end."""
        return Traffic(self.tx_bytes, self.rx_bytes, self.tx_packets, self.rx_packets)

    @property
    def packets(self) -> int:
        return self.rx_packets + self.tx_packets


@dataclass(frozen=True, slots=True)
class TcpHealth:
    """A TCP connection's health. `rtt_ms` and `retransmits` are the kernel's
    own figures for the socket when it can be asked (their `*_source` says
    "kernel"), else the packets' ("packets"); the packet figures are kept
    beside them either way."""

    rtt_source: str
    retransmits_source: str
    rtt_ms: float | None
    jitter_ms: float | None  # standard deviation of RTT samples over the last 10 s
    retransmits: int  # segments the local socket sent again
    retransmit_rate: float  # per second, over the last 10 s
    retransmit_percent: float | None  # of the segments sent over the last 10 s
    packet_rtt_ms: float | None
    packet_retransmits: int
    segments_sent: int
    peer_retransmits: int  # segments the remote end sent again
    dup_acks: int


@dataclass(frozen=True, slots=True)
class ConnectionRow:
    """One flow: a local socket's conversation with one remote endpoint."""

    process: ProcessRef | None
    unknown_reason: str | None
    proto: int
    iface: str
    laddr: int
    lport: int
    raddr: int
    rport: int
    state: str
    direction: str  # "In" or "Out"
    total: Traffic
    rx_rate: float
    tx_rate: float
    first_seen: float
    last_seen: float
    fd: int | None = None
    domain: str | None = None
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    retransmits: int | None = None
    health: TcpHealth | None = None  # TCP only

    @property
    def remote_text(self) -> str:
        return format_addr(self.raddr)


EXITED_PID = -1  # the pid in a folded row's ProcessRef: never a real one


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """Totals for one process; `process` None is the unattributed ("unknown") row.

    A row with `exited` > 0 stands for that many processes of one name and
    user that went quiet long ago (a long run folds them together to stay
    bounded); it has no pid.
    """

    process: ProcessRef | None
    total: Traffic
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    sockets: int = 0
    connections: int = 0
    rx_history: tuple[float, ...] = ()
    tx_history: tuple[float, ...] = ()
    # For the unknown row: bytes per reason, largest first.
    unknown_reasons: tuple[tuple[str, int], ...] = ()
    exited: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and not self.exited else None

    @property
    def name(self) -> str:
        return self.process.name if self.process else "unknown"

    @property
    def user(self) -> str:
        return self.process.user if self.process else ""

    @property
    def group(self) -> str:
        """Its container or systemd unit ("" for none)."""
        return self.process.group if self.process else ""

    @property
    def exited_note(self) -> str:
        """What people read after a folded row's name: how many it stands for."""
        return f" ({self.exited:,} exited)" if self.exited else ""


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    """One interface card: identity, addresses, resolvers and traffic since start."""

    name: str
    kind: str
    up: bool
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    total: Traffic = Traffic()
    rx_errors: int = 0
    tx_errors: int = 0
    # bytes per minute, oldest first, the current (partial) minute last
    rx_history: tuple[float, ...] = ()
    tx_history: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsQueryRow:
    """One DNS question and its fate."""

    time: float
    process: ProcessRef | None
    name: str
    qtype: str
    response: str  # addresses, a CNAME target, NXDOMAIN, SERVFAIL, REFUSED, timeout, ...
    rcode: str  # NOERROR, NXDOMAIN, ..., or "timeout"
    latency_ms: float | None
    resolver: str
    iface: str
    transport: str = "UDP"


@dataclass(frozen=True, slots=True)
class ResolverRow:
    """Statistics of one DNS server as used through one interface."""

    iface: str
    server: str
    queries: int
    failures: int  # answered with anything but NOERROR, or timed out
    avg_latency_ms: float | None
    configured: bool = True

    @property
    def fail_rate(self) -> float:
        return self.failures / self.queries if self.queries else 0.0


@dataclass(frozen=True, slots=True)
class DnsView:
    resolvers: tuple[ResolverRow, ...] = ()
    queries: tuple[DnsQueryRow, ...] = ()  # most recent last, bounded
    malformed: int = 0


ANY_PORT = -1  # a flood row's port when it stands for many ports (a scan)


@dataclass(frozen=True, slots=True)
class FloodRow:
    """Traffic folded into one row instead of a flow per remote: a flood or a scan.

    Keyed by interface, protocol and local port (`ANY_PORT` past as many rows as
    the engine keeps). `process` is the socket's owner when one was listening
    (half-open handshakes of a SYN flood), else None (`reason` says why).
    `sources` counts distinct remote addresses: exact while `sources_exact`,
    else a HyperLogLog estimate (about 1.6 % off). `ports` counts the distinct
    local ports folded here (1 for a row of one port).
    """

    iface: str
    proto: int
    lport: int
    reason: str
    process: ProcessRef | None
    total: Traffic
    rx_rate: float
    tx_rate: float
    sources: int
    sources_exact: bool
    ports: int
    first_seen: float
    last_seen: float

    @property
    def port_text(self) -> str:
        if self.lport == ANY_PORT:
            return f"{self.ports:,} ports"
        return f":{self.lport}" if self.proto in (6, 17) else ""


@dataclass(frozen=True, slots=True)
class CaptureHealth:
    """How complete the picture is."""

    packets: int = 0
    bytes: int = 0
    kernel_drops: int = 0
    queue_drops: int = 0
    malformed: int = 0
    not_ip: int = 0
    portless: int = 0
    unattributed_bytes: int = 0
    platform_errors: int = 0  # questions to the OS (sockets, interfaces) that failed for a moment
    # where owners come from: "eBPF" (the kernel names each socket's process as it is
    # used), "sockets" (the socket table and /proc, after the fact; `owners_why` says
    # why not eBPF), "capture" (the packets name their process: PKTAP) or "" (none)
    owners: str = ""
    owners_why: str = ""
    owner_events_lost: int = 0  # kernel owner events its ring buffer had no room for
    # how packets are counted: "kernel" (an eBPF filter sums most of them per flow where
    # they arrive, Linux), "packets" (each one in netoproc; `counting_why` says why not
    # in the kernel) or "" (a replayed file)
    counting: str = ""
    counting_why: str = ""
    counter_overflow: int = 0  # packets the kernel's full counter map left to the packet path
    # floods and scans folded into aggregate rows, largest first
    floods: tuple[FloodRow, ...] = ()
    # bounds reached, and how often: (what, count), e.g. ("flow table full", 12)
    limits: tuple[tuple[str, int], ...] = ()

    @property
    def folded_packets(self) -> int:
        return sum(row.total.packets for row in self.floods)

    @property
    def unattributed_share(self) -> float:
        return self.unattributed_bytes / self.bytes if self.bytes else 0.0

    @property
    def owners_text(self) -> str:
        return owner_source_text(self.owners, self.owners_why)


def counting_text(source: str, why: str) -> str:
    """How packets are counted, in a sentence (--verbose)."""
    if source == "kernel":
        return "packets counted in the kernel (eBPF), DNS and TCP control segments read whole"
    if source == "packets":
        return (
            f"every packet read by netoproc (kernel counting {why})"
            if why
            else ("every packet read by netoproc")
        )
    return "packets read from the file"


def owner_source_text(source: str, why: str) -> str:
    """Where process owners come from, in a sentence (--verbose)."""
    if source == "eBPF":
        return "process owners from eBPF: the kernel names each socket's process as it is used"
    if source == "sockets":
        return f"process owners from the socket table and /proc (fallback: eBPF {why})"
    if source == "capture":
        return "process owners from the capture (PKTAP)"
    return "no process owners"


R = TypeVar("R")


class Rows(Sequence[R]):
    """A tick's rows, made from its figures the first time they are read.

    The engine leaves a tick's figures as arrays of their own and each flow's
    attributes as they were, and says how many rows there are; a front end that
    never reads them (the Process view does not read the connections) never
    pays for thousands of row objects. Made once, then the same objects for
    every reader, whichever thread reads first.
    """

    __slots__ = ("_lock", "_make", "_n", "_rows")

    def __init__(self, n: int, make: Callable[[], tuple[R, ...]]) -> None:
        self._n, self._make = n, make
        self._rows: tuple[R, ...] | None = None
        self._lock = threading.Lock()

    def _all(self) -> tuple[R, ...]:
        rows = self._rows
        if rows is None:
            with self._lock:
                if self._rows is None:
                    self._rows = self._make()
                    assert len(self._rows) == self._n
                    del self._make  # and what the figures held
                rows = self._rows
        return rows

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[R, ...]: ...
    def __getitem__(self, index: int | slice) -> R | tuple[R, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[R]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rows | tuple):  # as the tuple of rows it stands for
            return len(self) == len(other) and self._all() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, object]) -> tuple[R, ...]:
        return self._all()  # immutable rows: a copy is the rows themselves

    def __repr__(self) -> str:
        return f"Rows({self._all()!r})"


@dataclass(frozen=True, slots=True)
class Snapshot:
    time: float
    started: float
    interval: float
    processes: Sequence[ProcessRow] = ()
    connections: Sequence[ConnectionRow] = ()
    sockets: tuple[SocketInfo, ...] = ()
    interfaces: tuple[InterfaceRow, ...] = ()
    dns: DnsView | None = None  # None when DNS observation is off (--no-dns)
    health: CaptureHealth = field(default_factory=CaptureHealth)

    def filtered(self, pattern: str | None) -> Snapshot:
        """Keep what matches `pattern` (case-insensitive substring).

        A process whose name or group (container, unit) matches keeps all its
        traffic; otherwise only its
        connections whose remote address or domain matches are kept, and its
        totals become theirs. DNS queries are kept when their process, name or
        answer matches; resolver statistics are not filtered.
        """
        if not pattern:
            return self
        needle = pattern.lower()
        by_name = {
            row.process
            for row in self.processes
            if needle in row.name.lower() or needle in row.group.lower()
        }
        kept: list[ConnectionRow] = []
        matched: dict[ProcessRef | None, list[ConnectionRow]] = {}
        for conn in self.connections:
            if conn.process in by_name:
                kept.append(conn)
            elif needle in conn.remote_text.lower() or (
                conn.domain and needle in conn.domain.lower()
            ):
                kept.append(conn)
                matched.setdefault(conn.process, []).append(conn)
        rows = [row for row in self.processes if row.process in by_name]
        for process, conns in matched.items():
            total = sum((c.total for c in conns), Traffic())
            rows.append(
                ProcessRow(
                    process=process,
                    total=total,
                    rx_rate=sum(c.rx_rate for c in conns),
                    tx_rate=sum(c.tx_rate for c in conns),
                    sockets=len({(c.proto, c.laddr, c.lport) for c in conns}),
                    connections=len(conns),
                )
            )
        dns = self.dns
        if dns is not None:
            queries = tuple(
                q
                for q in dns.queries
                if needle in q.name.lower()
                or needle in q.response.lower()
                or (q.process is not None and needle in q.process.name.lower())
                or (q.process is not None and needle in q.process.group.lower())
            )
            dns = replace(dns, queries=queries)
        return replace(self, processes=tuple(rows), connections=tuple(kept), dns=dns)

    def by_traffic(self) -> list[ProcessRow]:
        """Processes with traffic, most bytes first (ties by pid, then name and user)."""
        rows = [row for row in self.processes if row.total.packets]
        rows.sort(key=lambda r: (-r.total.bytes, r.pid is None, r.pid or 0, r.name, r.user))
        return rows
