"""Floods and scans folded into aggregate rows, so no table grows with the attacker.

A SYN flood from spoofed sources, a UDP flood from random ports, an ICMP
flood or a port scan makes nearly every packet a new flow. Kept one by one,
each costs a flow, TCP state, a socket lookup and a row at every tick, and
memory and CPU grow with the packet rate. Here such traffic is folded into
one aggregate per (interface, protocol, local port) instead, with its
packets, bytes and a count of distinct remote addresses: every byte still
lands in some row, so totals stay exact.

A new flow is a *candidate* for folding when it carries nothing a local
socket would keep a flow for, judged on its packets in the batch:
- TCP whose packets are all handshake or refusal: SYNs arriving, SYN-ACKs,
  RSTs (a SYN flood, half-open or refused, a SYN scan, backscatter); a SYN
  we send opens a connection of ours and never folds;
- TCP or UDP that only arrives (we sent nothing but RSTs) on a local port no
  socket of the last full socket table uses (a scan, a UDP flood);
- other protocols (ICMP floods and the port-unreachables they cause).
Candidates are folded only *under pressure*: from the moment they arrive
faster than `PRESSURE_PER_SECOND` a second (a bucket that drains at that
rate overflows, so a burst of more than that many also counts, wherever
the second's boundary falls) until `CALM_SECONDS` pass without an
overflow. In normal traffic
every flow keeps its row; a listener opened since the last socket table
(read every 5 s) loses at most the handshake of its first connections to
the aggregate, never their data. A listening socket's half-open
handshakes fold into a row owned by its process, so its totals stay exact.

Hard bounds, whatever the traffic: at most `max_flows` flows (new ones past
it fold into "flow table full" rows, owned by the socket bound on their
port when there is one); at most `MAX_AGGREGATES` rows of one port, then one
row per interface, protocol and kind for all other ports (a scan), then one
catch-all; owner lookups limited to `LOOKUPS_PER_SECOND` with bursts of
`LOOKUP_BURST` (the flows left over stay pending until the next full socket
table). Every bound reached is counted and shown (`limits`).

Distinct sources: exact (a set of 64-bit hashes of the remote address) up
to `EXACT_SOURCES`, then a HyperLogLog of 2**12 registers, about 1.6 % off.

`fold_counted` does the same for rows of per-flow counters (a source that
counts in the kernel and passes up no packets), and `fold_rows` takes plain
columns (interface, protocol, ports, remote address, counters): any such
source folds through the same aggregates and the same bounds.

Like the rest of the engine: no I/O, no clock; time is the packets'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import distinct
from netoproc.decode.batch import PacketBatch
from netoproc.engine.attribution import SocketIndex, reason_for
from netoproc.engine.grouping import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, FlowGroups
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, Direction, FlowKey, ProcessRef, UnknownReason
from netoproc.snapshot import ANY_PORT, FloodRow, Traffic

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]

MAX_FLOWS = 20_000  # a tick over a full table: ~40 ms, ~0.25 s more to read every row
PRESSURE_PER_SECOND = 200  # candidate flows a second before folding starts
CALM_SECONDS = 30.0  # folding stops after this long below the bound
MAX_AGGREGATES = 128  # rows of one port; past them, one row per (iface, proto, kind)
EXACT_SOURCES = 1024
HLL_BITS = 12
LOOKUPS_PER_SECOND = 2000
LOOKUP_BURST = 512
MAX_FAMILIES = 64  # (interface, protocol, kind) with a table of rows by port (256 KiB each)

FLOOD, TABLE_FULL = 0, 1  # kinds of aggregate
_HANDSHAKE_FLAGS = TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN
_M64 = (1 << 64) - 1
_ALL_INTERFACES = ""


def _hash(hi: U64, lo: U64) -> U64:
    """A well-mixed 64-bit hash of 128-bit addresses (splitmix64's finaliser)."""
    with np.errstate(over="ignore"):
        h = hi * np.uint64(0x9E3779B97F4A7C15) ^ lo
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


class DistinctCount:
    """Distinct 64-bit hashes: exact up to `exact`, then a HyperLogLog estimate."""

    __slots__ = ("_exact", "_limit", "_registers")

    def __init__(self, exact: int = EXACT_SOURCES) -> None:
        self._limit = exact
        self._exact: set[int] | None = set()
        self._registers = np.zeros(1 << HLL_BITS, np.uint8)

    def add(self, hashes: U64) -> None:
        if not len(hashes):
            return
        if self._exact is not None:
            self._exact.update(hashes.tolist())
            if len(self._exact) > self._limit:
                self._exact = None
        index = (hashes >> np.uint64(64 - HLL_BITS)).astype(np.int64)
        rest = hashes << np.uint64(HLL_BITS)
        # the rank is the position of the first 1 bit: 64 - exponent + 1 (frexp: rest = m * 2**e)
        exponent = np.frexp(rest.astype(np.float64))[1]
        rank = np.where(rest == 0, 64 - HLL_BITS + 1, 65 - exponent)
        rank = np.minimum(rank, 64 - HLL_BITS + 1).astype(np.uint8)
        np.maximum.at(self._registers, index, rank)

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        m = len(self._registers)
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / float(np.sum(np.ldexp(1.0, -self._registers.astype(np.int64))))
        zeros = int(np.count_nonzero(self._registers == 0))
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # linear counting for small sets
        return round(estimate)


class _Aggregate:
    __slots__ = ("counters", "first_seen", "iface", "kind", "last_seen", "lport", "owner",
                 "ports", "proto", "reason", "sources", "tick")  # fmt: skip

    def __init__(self, iface: str, proto: int, lport: int, kind: int) -> None:
        self.iface, self.proto, self.lport, self.kind = iface, proto, lport, kind
        self.owner: ProcessRef | None = None
        self.reason: UnknownReason | None = (
            UnknownReason.TABLE_FULL if kind == TABLE_FULL else UnknownReason.FLOOD
        )
        self.counters = [0, 0, 0, 0]  # rx bytes, tx bytes, rx packets, tx packets (Traffic's order)
        self.tick = [0, 0]  # rx, tx bytes since the last tick
        self.first_seen = math.inf
        self.last_seen = -math.inf
        self.sources = DistinctCount()
        self.ports: Bool | None = np.zeros(1 << 16, np.bool_) if lport == ANY_PORT else None


class _Family:
    """The aggregates of one (interface, protocol, kind), found by local port."""

    __slots__ = ("iface", "kind", "proto", "targets")

    def __init__(self, iface: str, proto: int, kind: int) -> None:
        self.iface, self.proto, self.kind = iface, proto, kind
        socket_proto = proto in (IPPROTO_TCP, IPPROTO_UDP)
        self.targets: npt.NDArray[np.int32] | None = (
            np.full(1 << 16, -1, np.int32) if socket_proto else None
        )


class Contribution(NamedTuple):
    """An aggregate's share of a tick, for the process rows."""

    owner: ProcessRef | None
    total: Traffic
    rx_rate: float
    tx_rate: float
    reason: str | None


def keep_groups(groups: FlowGroups, keep: Bool) -> FlowGroups:
    """`groups` without the flows where `keep` is False; their packets' group is -1."""
    kept = np.flatnonzero(keep)
    renumber = np.full(len(groups) + 1, -1, np.int64)  # the extra -1 keeps -1 as -1
    renumber[kept] = np.arange(len(kept))
    columns: dict[str, Any] = {}
    for f in dataclasses.fields(groups):
        value = getattr(groups, f.name)
        columns[f.name] = renumber[value] if f.name == "row_group" else value[kept]
    return FlowGroups(**columns)


class Floods:
    def __init__(
        self,
        *,
        max_flows: int = MAX_FLOWS,
        pressure_per_second: int = PRESSURE_PER_SECOND,
        calm_seconds: float = CALM_SECONDS,
        max_aggregates: int = MAX_AGGREGATES,
        lookups_per_second: float = LOOKUPS_PER_SECOND,
        lookup_burst: int = LOOKUP_BURST,
    ) -> None:
        self.max_flows = max_flows
        self.pressure_per_second = pressure_per_second
        self.calm_seconds = calm_seconds
        self.max_aggregates = max_aggregates
        self.lookups_per_second = lookups_per_second
        self.lookup_burst = lookup_burst
        self._aggregates: list[_Aggregate] = []
        self._by_key: dict[tuple[str, int, int, int], int] = {}
        # (iface id, proto, kind) packed in an int -> its rows by port
        self._families: dict[int, _Family] = {}
        self._level = 0.0  # candidates in the bucket, which drains at pressure_per_second
        self._level_at = -math.inf
        self._pressure_until = -math.inf
        self._tokens = float(lookup_burst)
        self._tokens_at: float | None = None
        self._socket_ports: I64 = np.zeros(0, np.int64)
        self._ports_of: SocketIndex | None = None
        self.table_full = 0  # flows folded because the table was full
        self.deferred_lookups = 0
        self.merged = 0  # flows folded into an all-ports row because the port rows ran out

    # packets --------------------------------------------------------------------

    def under_pressure(self, now: float) -> bool:
        return now < self._pressure_until

    def fold(
        self,
        groups: FlowGroups,
        slots: I64,
        batch: PacketBatch,
        direction: npt.NDArray[np.int8],
        sockets: SocketIndex,
        flows: int,
    ) -> tuple[FlowGroups, I64]:
        """Fold the batch's new flows that look like a flood (under pressure) or do not
        fit in the table; returns the groups and slots left to make flows of (the
        packets of folded flows have group -1)."""
        if not (slots == -1).any():
            return groups, slots
        fresh = (slots == -1) & (groups.pid < 0)
        candidate = fresh & self._candidates(groups, batch, direction, sockets)
        folded = self._fold(groups, slots, candidate, sockets, flows, batch.interfaces.name)
        if folded is None:
            return groups, slots
        return keep_groups(groups, ~folded), slots[~folded]

    def fold_counted(
        self,
        groups: FlowGroups,
        slots: I64,
        sockets: SocketIndex,
        flows: int,
        iface_name: Callable[[int], str],
    ) -> tuple[FlowGroups, I64, Bool]:
        """The same for per-flow counts (a counter source without packets, such as
        in-kernel maps: one row per flow, no TCP flags to judge by). Candidates are
        TCP or UDP flows that only arrived, on a port no socket uses. Returns the
        groups and slots left, and which of the given rows they are."""
        if not (slots == -1).any():
            return groups, slots, np.ones(len(groups), np.bool_)
        used = np.isin((groups.proto << 16) | groups.lport, self._used_ports(sockets))
        socket_proto = (groups.proto == IPPROTO_TCP) | (groups.proto == IPPROTO_UDP)
        candidate = (
            (slots == -1) & (groups.pid < 0) & socket_proto & (groups.tx_packets == 0) & ~used
        )
        folded = self._fold(groups, slots, candidate, sockets, flows, iface_name)
        if folded is None:
            return groups, slots, np.ones(len(groups), np.bool_)
        return keep_groups(groups, ~folded), slots[~folded], ~folded

    def _fold(
        self,
        groups: FlowGroups,
        slots: I64,
        candidate: Bool,
        sockets: SocketIndex,
        flows: int,
        names: Callable[[int], str],
    ) -> Bool | None:
        """Fold the candidates (under pressure) and what does not fit in the table;
        returns which groups were folded, or None."""
        now = float(groups.last_ts.max())
        self._count_pressure(now, int(np.count_nonzero(candidate)))
        kind = np.full(len(groups), -1, np.int64)
        if self.under_pressure(now):
            kind[candidate] = FLOOD
        room = max(0, self.max_flows - flows)
        making = np.flatnonzero((slots == -1) & (kind < 0))
        if len(making) > room:
            full = making[room:]
            kind[full] = TABLE_FULL
            self.table_full += len(full)
        folded: Bool = kind >= 0
        if not folded.any():
            return None
        at = np.flatnonzero(folded)
        self.fold_rows(
            iface=groups.iface[at],
            iface_name=names,
            proto=groups.proto[at],
            lport=groups.lport[at],
            kind=kind[at],
            r_hi=groups.r_hi[at],
            r_lo=groups.r_lo[at],
            traffic=(groups.rx_bytes[at], groups.tx_bytes[at],
                     groups.rx_packets[at], groups.tx_packets[at]),
            first_seen=groups.first_ts[at],
            last_seen=groups.last_ts[at],
            owner_of=lambda i: self._owner(sockets, groups, int(at[i]), names),
        )  # fmt: skip
        return folded

    def _candidates(
        self,
        groups: FlowGroups,
        batch: PacketBatch,
        direction: npt.NDArray[np.int8],
        sockets: SocketIndex,
    ) -> Bool:
        n, row_group = len(groups), groups.row_group
        flags = batch.tcp_flags & _HANDSHAKE_FLAGS
        tcp = batch.proto == IPPROTO_TCP
        rst = tcp & ((flags & TCP_RST) != 0)
        sent = direction != Direction.RX
        # a SYN that arrives, any SYN-ACK, any RST; never a SYN we send (a connection of ours)
        handshake = tcp & (((flags == TCP_SYN) & ~sent) | (flags == TCP_SYN | TCP_ACK) | rst)
        other_packets = np.bincount(row_group[~handshake], minlength=n) > 0
        sent_more_than_rst = np.bincount(row_group[sent & ~rst], minlength=n) > 0
        socket_proto = (groups.proto == IPPROTO_TCP) | (groups.proto == IPPROTO_UDP)
        used: Bool = np.isin((groups.proto << 16) | groups.lport, self._used_ports(sockets))
        candidate: Bool = (
            ((groups.proto == IPPROTO_TCP) & ~other_packets)
            | (socket_proto & groups.transport & ~sent_more_than_rst & ~used)
            | ~socket_proto
        )
        return candidate

    def _used_ports(self, sockets: SocketIndex) -> I64:
        """(proto << 16 | port) of every local port a socket of the table uses."""
        if self._ports_of is not sockets:
            self._ports_of = sockets
            self._socket_ports = distinct(
                np.fromiter(((s.proto << 16) | s.lport for s in sockets.sockets), np.int64)
            )
        return self._socket_ports

    def _count_pressure(self, now: float, candidates: int) -> None:
        drained = max(0.0, now - self._level_at) * self.pressure_per_second
        self._level = max(0.0, self._level - drained) + candidates
        self._level_at = max(self._level_at, now)  # a clock stepping back drains nothing
        if self._level > self.pressure_per_second:
            self._pressure_until = max(self._pressure_until, now + self.calm_seconds)

    @staticmethod
    def _owner(
        sockets: SocketIndex, groups: FlowGroups, i: int, names: Callable[[int], str]
    ) -> tuple[ProcessRef | None, UnknownReason | None]:
        proto = int(groups.proto[i])
        if proto not in (IPPROTO_TCP, IPPROTO_UDP):
            return None, None
        key = FlowKey(
            names(int(groups.iface[i])), proto,
            (int(groups.l_hi[i]) << 64) | int(groups.l_lo[i]), int(groups.lport[i]),
            (int(groups.r_hi[i]) << 64) | int(groups.r_lo[i]), int(groups.rport[i]),
        )  # fmt: skip
        sock = sockets.match(key)
        if sock is None:
            return None, None
        return sock.owner, reason_for(sock)

    def fold_rows(
        self,
        *,
        iface: I64,
        iface_name: Callable[[int], str],
        proto: I64,
        lport: I64,
        kind: I64,
        r_hi: U64,
        r_lo: U64,
        traffic: tuple[I64, I64, I64, I64],
        first_seen: npt.NDArray[np.float64],
        last_seen: npt.NDArray[np.float64],
        owner_of: Callable[[int], tuple[ProcessRef | None, UnknownReason | None]],
    ) -> None:
        """Add flows' counters to their aggregates, one row per flow (columns of equal
        length; `iface` as ids that `iface_name` names). `traffic` is (rx bytes, tx
        bytes, rx packets, tx packets); `owner_of(i)` names the socket's owner (or why
        none) for row i when its aggregate is new. Python works once per distinct
        (interface, protocol, port, kind) and per aggregate, never per row."""
        if not len(iface):
            return
        socket_proto = (proto == IPPROTO_TCP) | (proto == IPPROTO_UDP)
        port = np.where(socket_proto, lport, 0)
        families = (iface << 9) | ((proto & 0xFF) << 1) | kind
        keys, first, inverse = np.unique(families, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        target = np.empty(len(iface), np.int64)
        for j, (key, row) in enumerate(zip(keys.tolist(), first.tolist(), strict=True)):
            rows = np.flatnonzero(inverse == j) if len(keys) > 1 else np.arange(len(iface))
            name = iface_name(int(iface[row]))
            family = self._families.get(key)
            if family is None or family.iface != name:
                family = _Family(name, int(proto[row]), int(kind[row]))
                if len(self._families) < MAX_FAMILIES:
                    self._families[key] = family
            target[rows] = self._route(family, port[rows], rows, owner_of)
        order = np.argsort(target, kind="stable")
        hashes = _hash(r_hi, r_lo)[order]
        sorted_target = target[order]
        bounds = np.flatnonzero(np.diff(sorted_target)) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(order)]))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            aggregate = self._aggregates[int(sorted_target[start])]
            rows = order[start:end]
            for column in range(4):
                aggregate.counters[column] += int(traffic[column][rows].sum())
            aggregate.tick[0] += int(traffic[0][rows].sum())
            aggregate.tick[1] += int(traffic[1][rows].sum())
            aggregate.first_seen = min(aggregate.first_seen, float(first_seen[rows].min()))
            aggregate.last_seen = max(aggregate.last_seen, float(last_seen[rows].max()))
            aggregate.sources.add(hashes[start:end])
            if aggregate.ports is not None:
                aggregate.ports[port[rows]] = True

    def _route(
        self,
        family: _Family,
        ports: I64,
        rows: I64,
        owner_of: Callable[[int], tuple[ProcessRef | None, UnknownReason | None]],
    ) -> I64:
        """The aggregate of each of a family's rows, by local port: Python only for a
        port not met before while port rows remain; past them, one array operation."""
        if family.targets is None:  # not TCP or UDP: one row for the family
            found = self._aggregate(family.iface, family.proto, 0, family.kind, int(rows[0]),
                                    owner_of)  # fmt: skip
            return np.full(len(rows), found, np.int64)
        targets = family.targets[ports]
        new = np.flatnonzero(targets < 0)
        if len(new):
            fresh, at = np.unique(ports[new], return_index=True)
            for port, row in zip(fresh.tolist(), rows[new[at]].tolist(), strict=True):
                if len(self._by_key) >= self.max_aggregates:
                    break
                family.targets[port] = self._aggregate(family.iface, family.proto, port,
                                                       family.kind, row, owner_of)  # fmt: skip
            rest = fresh[family.targets[fresh] < 0]
            if len(rest):
                family.targets[rest] = self._aggregate(family.iface, family.proto, ANY_PORT,
                                                       family.kind, -1, owner_of)  # fmt: skip
            targets = family.targets[ports]
        merged = np.asarray([a.lport == ANY_PORT for a in self._aggregates])[targets]
        self.merged += int(np.count_nonzero(merged))
        return targets.astype(np.int64)

    def _aggregate(
        self,
        iface: str,
        proto: int,
        port: int,
        kind: int,
        row: int,
        owner_of: Callable[[int], tuple[ProcessRef | None, UnknownReason | None]],
    ) -> int:
        key = (iface, proto, port, kind)
        found = self._by_key.get(key)
        if found is not None:
            return found
        if len(self._by_key) >= self.max_aggregates:
            key = (iface, proto, ANY_PORT, kind)
            found = self._by_key.get(key)
            if found is not None:
                return found
            if len(self._by_key) >= 2 * self.max_aggregates:  # bounded whatever comes
                key = (_ALL_INTERFACES, -1, ANY_PORT, kind)
                found = self._by_key.get(key)
                if found is not None:
                    return found
        aggregate = _Aggregate(*key)
        if key[2] != ANY_PORT:
            owner, reason = owner_of(row)
            if owner is not None:
                aggregate.owner, aggregate.reason = owner, None
            elif reason is not None and reason is not UnknownReason.NO_SOCKET:
                aggregate.reason = reason
        self._by_key[key] = len(self._aggregates)
        self._aggregates.append(aggregate)
        return len(self._aggregates) - 1

    # lookups ----------------------------------------------------------------------

    def allow_lookups(self, keys: list[FlowKey], now: float) -> list[FlowKey]:
        """The flows that may be looked up now (a token bucket on packet time); the
        others stay pending until the next full socket table, and are counted."""
        if self._tokens_at is not None and now > self._tokens_at:
            self._tokens = min(
                float(self.lookup_burst),
                self._tokens + (now - self._tokens_at) * self.lookups_per_second,
            )
        if self._tokens_at is None or now > self._tokens_at:
            self._tokens_at = now
        allowed = keys[: max(0, int(self._tokens))]
        self._tokens -= len(allowed)
        self.deferred_lookups += len(keys) - len(allowed)
        return allowed

    # ticks ------------------------------------------------------------------------

    def tick(self, elapsed: float) -> tuple[list[Contribution], tuple[FloodRow, ...]]:
        """Each aggregate's share of the tick, and the rows to show (most packets first)."""
        shares: list[Contribution] = []
        rows: list[FloodRow] = []
        for aggregate in self._aggregates:
            total = Traffic(*aggregate.counters)
            rx_rate, tx_rate = aggregate.tick[0] / elapsed, aggregate.tick[1] / elapsed
            aggregate.tick = [0, 0]
            reason = str(aggregate.reason) if aggregate.owner is None and aggregate.reason else None
            shares.append(Contribution(aggregate.owner, total, rx_rate, tx_rate, reason))
            rows.append(
                FloodRow(
                    iface=aggregate.iface,
                    proto=aggregate.proto,
                    lport=aggregate.lport,
                    reason=str(aggregate.reason) if aggregate.reason else "listening socket",
                    process=aggregate.owner,
                    total=total,
                    rx_rate=rx_rate,
                    tx_rate=tx_rate,
                    sources=aggregate.sources.count(),
                    sources_exact=aggregate.sources.exact,
                    ports=int(aggregate.ports.sum()) if aggregate.ports is not None else 1,
                    first_seen=aggregate.first_seen,
                    last_seen=aggregate.last_seen,
                )
            )
        rows.sort(key=lambda r: -r.total.packets)
        return shares, tuple(rows)

    def limits(self) -> Iterator[tuple[str, int]]:
        if self.table_full:
            yield f"flow table full ({self.max_flows:,}): flows folded", self.table_full
        if self.deferred_lookups:
            yield "owner lookups deferred to the socket table", self.deferred_lookups
        if self.merged:
            yield f"flood rows past {self.max_aggregates} ports: folded together", self.merged
