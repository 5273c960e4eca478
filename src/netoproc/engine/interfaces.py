"""Interface traffic from the OS's cumulative counters: rates, totals since start,
and per-minute history for the interface cards.

Counters may wrap (32-bit counters on some systems) or restart (an interface
deleted and created again); either way the totals only ever grow by what the
interface really moved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netoproc.model import InterfaceInfo
from netoproc.snapshot import InterfaceRow, Traffic

HISTORY_MINUTES = 60
_WRAP_32 = 1 << 32


def counter_delta(old: int, new: int) -> int:
    """How much a cumulative counter grew; wrap- and restart-safe."""
    if new >= old:
        return new - old
    if _WRAP_32 // 2 <= old < _WRAP_32:  # a 32-bit counter went round
        return new + _WRAP_32 - old
    return new  # the counter restarted from zero


@dataclass
class _Interface:
    info: InterfaceInfo
    updated: float
    total: Traffic = field(default_factory=Traffic)
    rx_errors: int = 0
    tx_errors: int = 0
    rx_rate: float = 0.0
    tx_rate: float = 0.0
    minute: int = 0
    minute_rx: float = 0.0
    minute_tx: float = 0.0
    rx_minutes: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_MINUTES - 1))
    tx_minutes: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY_MINUTES - 1))

    def add(self, info: InterfaceInfo, now: float) -> None:
        old = self.info
        rx = counter_delta(old.rx_bytes, info.rx_bytes)
        tx = counter_delta(old.tx_bytes, info.tx_bytes)
        self.total += Traffic(
            rx,
            tx,
            counter_delta(old.rx_packets, info.rx_packets),
            counter_delta(old.tx_packets, info.tx_packets),
        )
        self.rx_errors += counter_delta(old.rx_errors, info.rx_errors)
        self.tx_errors += counter_delta(old.tx_errors, info.tx_errors)
        elapsed = now - self.updated
        if elapsed > 0:
            self.rx_rate, self.tx_rate = rx / elapsed, tx / elapsed
        minute = int(now // 60)
        if minute > self.minute:
            for _ in range(min(minute - self.minute, HISTORY_MINUTES)):
                self.rx_minutes.append(self.minute_rx)
                self.tx_minutes.append(self.minute_tx)
                self.minute_rx = self.minute_tx = 0.0
            self.minute = minute
        self.minute_rx += rx
        self.minute_tx += tx
        self.info, self.updated = info, now


class InterfaceStats:
    def __init__(self) -> None:
        self._interfaces: dict[str, _Interface] = {}

    def update(self, infos: Iterable[InterfaceInfo], now: float) -> None:
        """Take the OS's current counters; interfaces that vanished are dropped."""
        seen = set()
        for info in infos:
            seen.add(info.name)
            known = self._interfaces.get(info.name)
            if known is None:  # counting starts now, not at boot
                self._interfaces[info.name] = _Interface(info, now, minute=int(now // 60))
            else:
                known.add(info, now)
        for gone in set(self._interfaces) - seen:
            del self._interfaces[gone]

    def rows(self, dns_servers: Mapping[str, tuple[str, ...]]) -> tuple[InterfaceRow, ...]:
        rows = []
        for name, state in sorted(self._interfaces.items()):
            info = state.info
            rows.append(
                InterfaceRow(
                    name=name,
                    kind=info.kind,
                    up=info.up,
                    ipv4=info.ipv4,
                    ipv6=info.ipv6,
                    dns_servers=dns_servers.get(name, ()),
                    rx_rate=state.rx_rate,
                    tx_rate=state.tx_rate,
                    total=state.total,
                    rx_errors=state.rx_errors,
                    tx_errors=state.tx_errors,
                    rx_history=(*state.rx_minutes, state.minute_rx),
                    tx_history=(*state.tx_minutes, state.minute_tx),
                )
            )
        return tuple(rows)
