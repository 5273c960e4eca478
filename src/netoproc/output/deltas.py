"""What moved between two Snapshots: each row's traffic in the interval.

A Snapshot holds totals; the stream and the exporter need the interval's
increase, row by row, and sums that never go backwards while rows come and
go. `Deltas.step(snapshot)` gives each row of a snapshot its delta since the
previous one:

- a process, connection or interface seen for the first time: its total;
- a row whose total went down is a new one under the same key (a flow's
  ports used again, an interface that came back): its total, and the old
  one is gone;
- exited processes folded into their name's row (pid `-`): the pid rows that
  vanished hand their totals to that row, so folding adds nothing (the bytes
  were counted under the pid); what a folded row gains beyond them is new;
- the unattributed row counts from its highest total: bytes first counted as
  unknown and then given to their process (a lookup that finished late) are
  not taken back from `unknown`, and are counted once more under their
  process.

DNS queries are not cumulative: each finished one (answered or timed out) is
reported once, the tick it is first seen finished. The query log keeps the
last 1,000, so more than that finishing within one interval are not all seen.

With `--filter`, deltas are computed on the whole snapshot and then filtered
as `Snapshot.filtered` filters: a process kept by its name keeps its delta; a
process kept for some of its connections gets theirs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from netoproc.snapshot import (
    ConnectionRow,
    DnsQueryRow,
    InterfaceRow,
    ProcessRow,
    Snapshot,
    Traffic,
)

ZERO = Traffic()


def _less(a: Traffic, b: Traffic) -> bool:
    """Some counter of `a` is below `b`'s."""
    return (
        a.rx_bytes < b.rx_bytes
        or a.tx_bytes < b.tx_bytes
        or a.rx_packets < b.rx_packets
        or a.tx_packets < b.tx_packets
    )


def _minus(a: Traffic, b: Traffic) -> Traffic:
    """`a - b`, each counter at least zero."""
    return Traffic(
        max(0, a.rx_bytes - b.rx_bytes),
        max(0, a.tx_bytes - b.tx_bytes),
        max(0, a.rx_packets - b.rx_packets),
        max(0, a.tx_packets - b.tx_packets),
    )


def _max(a: Traffic, b: Traffic) -> Traffic:
    return Traffic(
        max(a.rx_bytes, b.rx_bytes),
        max(a.tx_bytes, b.tx_bytes),
        max(a.rx_packets, b.rx_packets),
        max(a.tx_packets, b.tx_packets),
    )


def process_key(row: ProcessRow) -> Hashable:
    if row.process is None:
        return None
    return (row.exited > 0, row.process.pid, row.process.name, row.process.user)


def connection_key(row: ConnectionRow) -> Hashable:
    # first_seen: a flow that ended and started again on the same ports is a new one
    return (row.iface, row.proto, row.laddr, row.lport, row.raddr, row.rport, row.first_seen)


def dns_key(row: DnsQueryRow) -> Hashable:
    return (row.time, row.name, row.qtype, row.resolver, row.iface, row.transport)


@dataclass(frozen=True, slots=True)
class Interval:
    """One tick's rows, each with what it moved since the previous tick."""

    snapshot: Snapshot
    seconds: float  # since the previous tick (the first: since the start)
    processes: tuple[tuple[ProcessRow, Traffic], ...]
    connections: tuple[tuple[ConnectionRow, Traffic], ...]
    interfaces: tuple[tuple[InterfaceRow, Traffic], ...]
    dns: tuple[DnsQueryRow, ...]  # queries that finished since the previous tick

    def filtered(self, pattern: str | None) -> Interval:
        """The rows `Snapshot.filtered(pattern)` keeps, with their deltas."""
        if not pattern:
            return self
        kept = self.snapshot.filtered(pattern)
        conn_delta = {id(row): delta for row, delta in self.connections}
        connections = tuple((c, conn_delta.get(id(c), ZERO)) for c in kept.connections)
        proc_delta = {id(row): delta for row, delta in self.processes}
        processes = []
        for row in kept.processes:
            if id(row) in proc_delta:  # kept by name: the row itself
                processes.append((row, proc_delta[id(row)]))
            else:  # kept for some connections: theirs
                mine = [d for c, d in connections if c.process == row.process]
                processes.append((row, sum(mine, ZERO)))
        queries = {id(q) for q in (kept.dns.queries if kept.dns else ())}
        return Interval(
            snapshot=kept,
            seconds=self.seconds,
            processes=tuple(processes),
            connections=connections,
            interfaces=self.interfaces,
            dns=tuple(q for q in self.dns if id(q) in queries),
        )


class Deltas:
    """Remembers the previous tick's totals, to give each row its delta."""

    def __init__(self) -> None:
        self._time: float | None = None
        self._processes: dict[Hashable, ProcessRow] = {}
        self._unknown_high = ZERO
        self._connections: dict[Hashable, Traffic] = {}
        self._interfaces: dict[str, Traffic] = {}
        self._dns_reported: set[Hashable] = set()

    def step(self, snapshot: Snapshot) -> Interval:
        seconds = snapshot.time - (self._time if self._time is not None else snapshot.started)
        self._time = snapshot.time
        return Interval(
            snapshot=snapshot,
            seconds=max(0.0, seconds),
            processes=self._step_processes(snapshot.processes),
            connections=self._step_connections(snapshot.connections),
            interfaces=self._step_interfaces(snapshot.interfaces),
            dns=self._step_dns(snapshot),
        )

    def _step_processes(self, rows: Sequence[ProcessRow]) -> tuple[tuple[ProcessRow, Traffic], ...]:
        before = self._processes
        now = {process_key(row): row for row in rows}
        # totals that left pid rows this tick, by (name, user): folded somewhere
        handed: dict[tuple[str, str], Traffic] = {}
        out: list[tuple[ProcessRow, Traffic] | None] = []
        folded: list[int] = []
        for key, gone in before.items():
            if gone.process is None or gone.exited:
                continue
            still = now.get(key)
            if still is None or _less(still.total, gone.total):
                group = (gone.process.name, gone.process.user)
                handed[group] = handed.get(group, ZERO) + gone.total
        for row in rows:
            key = process_key(row)
            old = before.get(key)
            if row.process is None:
                delta = _minus(row.total, self._unknown_high)
                self._unknown_high = _max(row.total, self._unknown_high)
                out.append((row, delta))
            elif row.exited:
                folded.append(len(out))
                out.append(None)  # after every pid row has handed its totals over
            elif old is None or _less(row.total, old.total):
                out.append((row, row.total))
            else:
                out.append((row, _minus(row.total, old.total)))
        # a folded row first takes what its own name handed over; the rest goes to "other"
        order = sorted(folded, key=lambda i: rows[i].name == "other")
        for i in order:
            row = rows[i]
            last = before.get(process_key(row))
            gained = _minus(row.total, last.total if last is not None else ZERO)
            assert row.process is not None
            group = (row.process.name, row.process.user)
            if row.name == "other" and row.user == "":
                pool = sum(handed.values(), ZERO)
                handed.clear()
            else:
                pool = handed.pop(group, ZERO)
            delta = _minus(gained, pool)
            leftover = _minus(pool, gained)
            if leftover.packets:
                handed[group] = leftover  # folded into "other" instead
            out[i] = (row, delta)
        self._processes = now
        return tuple(pair for pair in out if pair is not None)

    def _step_connections(
        self, rows: Sequence[ConnectionRow]
    ) -> tuple[tuple[ConnectionRow, Traffic], ...]:
        before, now = self._connections, {}
        out = []
        for row in rows:
            key = connection_key(row)
            old = before.get(key)
            if old is None or _less(row.total, old):
                out.append((row, row.total))
            else:
                out.append((row, _minus(row.total, old)))
            now[key] = row.total
        self._connections = now
        return tuple(out)

    def _step_interfaces(
        self, rows: tuple[InterfaceRow, ...]
    ) -> tuple[tuple[InterfaceRow, Traffic], ...]:
        before, now = self._interfaces, {}
        out = []
        for row in rows:
            old = before.get(row.name)
            if old is None or _less(row.total, old):
                out.append((row, row.total))
            else:
                out.append((row, _minus(row.total, old)))
            now[row.name] = row.total
        self._interfaces = now
        return tuple(out)

    def _step_dns(self, snapshot: Snapshot) -> tuple[DnsQueryRow, ...]:
        queries = snapshot.dns.queries if snapshot.dns else ()
        finished = [(dns_key(q), q) for q in queries if q.rcode]
        fresh = tuple(q for key, q in finished if key not in self._dns_reported)
        # only what the log still holds needs remembering
        self._dns_reported = {key for key, _ in finished}
        return fresh
