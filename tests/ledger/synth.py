"""Synthetic Snapshots for the ledger's tests, benchmark and kill driver."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from netoproc.model import IPPROTO_TCP, ProcessRef, v4
from netoproc.snapshot import ConnectionRow, ProcessRow, Snapshot, Traffic


def conn(
    ref: ProcessRef | None,
    total: Traffic,
    *,
    raddr: int = v4(0xC0000201),
    rport: int = 443,
    lport: int = 40000,
    iface: str = "eth0",
    domain: str | None = None,
    first_seen: float = 0.0,
) -> ConnectionRow:
    return ConnectionRow(
        process=ref, unknown_reason=None if ref else "no local socket", proto=IPPROTO_TCP,
        iface=iface, laddr=v4(0x0A000001), lport=lport, raddr=raddr, rport=rport,
        state="ESTABLISHED", direction="Out", total=total, rx_rate=0.0, tx_rate=0.0,
        first_seen=first_seen, last_seen=first_seen, domain=domain,
    )  # fmt: skip


def snap(
    t: float,
    connections: list[ConnectionRow],
    retired: dict[ProcessRef | None, Traffic] | None = None,
    folded: list[ProcessRow] | None = None,
) -> Snapshot:
    """A snapshot whose process rows are what the engine makes: each owner's
    flows plus what its retired flows left behind; folded rows as given."""
    totals: dict[ProcessRef | None, Traffic] = dict(retired or {})
    for c in connections:
        totals[c.process] = totals.get(c.process, Traffic()) + c.total
    rows = [ProcessRow(process=ref, total=t) for ref, t in totals.items()]
    rows.extend(folded or [])
    return Snapshot(time=t, started=0.0, interval=1.0, processes=tuple(rows),
                    connections=tuple(connections))  # fmt: skip


@dataclass
class Desktop:
    """A busy machine: `flows` connections of `names` process names, each moving
    `per_tick` bytes a tick; flows end and new ones start (`churn` per tick)."""

    flows: int = 5000
    names: int = 1000
    remotes: int = 2000
    churn: int = 20
    per_tick: int = 1500
    _next: int = 0
    _live: list[tuple[int, ProcessRef, int, int, float]] = field(default_factory=list)
    _totals: dict[int, Traffic] = field(default_factory=dict)
    retired: dict[ProcessRef | None, Traffic] = field(default_factory=dict)

    def _new(self, t: float) -> tuple[int, ProcessRef, int, int, float]:
        n = self._next
        self._next += 1
        ref = ProcessRef(1000 + n % (self.names * 2), f"app-{n % self.names}", "alice")
        remote = random.Random(n).randrange(self.remotes)  # any name with any remote
        return (n, ref, remote, 1024 + n % 60000, t)

    def tick(self, t: float) -> Snapshot:
        if not self._live:
            self._live = [self._new(t) for _ in range(self.flows)]
        for _ in range(self.churn):
            n, ref, *_ = self._live.pop(0)
            self.retired[ref] = self.retired.get(ref, Traffic()) + self._totals.pop(n, Traffic())
            self._live.append(self._new(t))
        rows = []
        for n, ref, remote, lport, first in self._live:
            total = self._totals.get(n, Traffic()) + Traffic(self.per_tick, self.per_tick // 3,
                                                             2, 1)  # fmt: skip
            self._totals[n] = total
            rows.append(conn(ref, total, raddr=v4(0x0A800000 + remote), lport=lport,
                             domain=f"host{remote}.example.net", first_seen=first))  # fmt: skip
        return snap(t, rows, self.retired)
