"""A tick's rows, made from its figures when a front end reads them.

The engine's tick works in arrays; what it hands over is those arrays (its
own copies, which later ticks cannot change) and each flow's attributes as
they were at the tick. The functions here turn them into the Snapshot's
ConnectionRow, TcpHealth and ProcessRow objects, the first time a front end
reads them (see snapshot.Rows): the Process view never pays for thousands of
connection rows it does not show, and the tick's cost no longer grows with
the objects people may never look at.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Set

import numpy as np
import numpy.typing as npt

from netoproc.engine.history import Histories
from netoproc.engine.tcp import TcpFigures
from netoproc.model import IPPROTO_TCP, FlowKey, ProcessRef, SocketInfo, UnknownReason
from netoproc.snapshot import ConnectionRow, ProcessRow, TcpHealth, Traffic

Owner = ProcessRef | None

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


@dataclasses.dataclass(frozen=True, slots=True)
class FlowFigures:
    """Every flow's counters at a tick, in the order of the flows, each from its
    owner's side."""

    rx_bytes: I64
    tx_bytes: I64
    rx_packets: I64
    tx_packets: I64
    rx_rate: F64
    tx_rate: F64
    first: F64
    last: F64
    outbound: npt.NDArray[np.int8]  # from the SYN: 1 its owner opened it, 0 the peer, -1 unknown
    closed: Bool
    slots: I64

    def total(self, i: int) -> Traffic:
        return Traffic(int(self.rx_bytes[i]), int(self.tx_bytes[i]), int(self.rx_packets[i]),
                       int(self.tx_packets[i]))  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class HealthFigures:
    """The TCP flows' health at a tick: `at` their places among the flows; the
    kernel's figures where it keeps the socket's, the packets' beside them."""

    at: I64
    packets: TcpFigures
    kernel: Bool  # the socket's tcp_info gave RTT (and retransmits, if kept)
    rtt_ms: F64
    jitter_ms: F64
    retransmits: I64
    kernel_retransmits: Bool
    retransmit_rate: F64
    retransmit_percent: F64  # NaN: nothing sent over the window


@dataclasses.dataclass(frozen=True, slots=True)
class FlowAttributes:
    """What the rest of the program said about each flow, as it was at the tick."""

    keys: list[FlowKey]  # from the owner's side (reversed for a far owner)
    owners: list[Owner]
    reasons: list[UnknownReason | None]
    sockets: list[SocketInfo | None]
    domains: list[str | None]
    listening: Set[tuple[int, int, int]]  # (proto, pid, port) of listening sockets


def connection_rows(
    flows: FlowAttributes, figures: FlowFigures, health: HealthFigures
) -> tuple[ConnectionRow, ...]:
    keys, owners, sockets = flows.keys, flows.owners, flows.sockets
    healths: list[TcpHealth | None] = [None] * len(keys)
    for i, row in zip(health.at.tolist(), tcp_health_rows(health), strict=True):
        healths[i] = row
    opened, listening = figures.outbound.tolist(), flows.listening
    states = [
        sock.state if sock is not None and sock.connected
        else "-" if key.proto != IPPROTO_TCP
        else "CLOSED" if closed else "ESTABLISHED" if outbound >= 0 else "-"
        for key, sock, closed, outbound in zip(keys, sockets, figures.closed.tolist(), opened,
                                               strict=True)
    ]  # fmt: skip
    directions = [
        ("Out" if outbound else "In") if outbound >= 0
        # no SYN seen: a connection to a port its process listens on came in
        else "In" if (key.proto, owner.pid if owner else -1, key.lport) in listening
        else "Out"
        for key, owner, outbound in zip(keys, owners, opened, strict=True)
    ]  # fmt: skip
    columns = (
        owners,
        [str(reason) if owner is None and reason else None
         for owner, reason in zip(owners, flows.reasons, strict=True)],
        [k.proto for k in keys], [k.iface for k in keys], [k.laddr for k in keys],
        [k.lport for k in keys], [k.raddr for k in keys], [k.rport for k in keys],
        states,
        directions,
        map(Traffic, figures.rx_bytes.tolist(), figures.tx_bytes.tolist(),
            figures.rx_packets.tolist(), figures.tx_packets.tolist()),
        figures.rx_rate.tolist(), figures.tx_rate.tolist(),
        figures.first.tolist(), figures.last.tolist(),
        [sock.fd if sock is not None and sock.owner == owner else None
         for sock, owner in zip(sockets, owners, strict=True)],
        flows.domains,
        [h.rtt_ms if h else None for h in healths],
        [h.jitter_ms if h else None for h in healths],
        [h.retransmits if h else None for h in healths],
        healths,
    )  # fmt: skip
    return tuple(map(ConnectionRow, *columns))  # in ConnectionRow's field order


def _maybe(values: F64) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]  # NaN: not measured


def tcp_health_rows(h: HealthFigures) -> list[TcpHealth]:
    p = h.packets
    columns = (
        ["kernel" if kernel else "packets" for kernel in h.kernel.tolist()],
        ["kernel" if kernel else "packets" for kernel in h.kernel_retransmits.tolist()],
        _maybe(h.rtt_ms), _maybe(h.jitter_ms), h.retransmits.tolist(),
        h.retransmit_rate.tolist(), _maybe(h.retransmit_percent), _maybe(p.rtt_ms),
        p.retransmits.tolist(), p.segments_sent.tolist(), p.peer_retransmits.tolist(),
        p.dup_acks.tolist(),
    )  # fmt: skip
    return list(map(TcpHealth, *columns))  # in TcpHealth's field order


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerFigures:
    """Every process with a row at a tick, and its figures, in the same order."""

    owners: list[Owner]
    totals: I64  # (owners, 4): Traffic's fields, in order
    rx_rate: F64
    tx_rate: F64
    sockets: list[int]
    connections: I64
    histories: Histories
    unknown_reasons: tuple[tuple[str, int], ...]  # the unknown row's
    folded: list[ProcessRow]  # exited processes folded by name, after the others
    unknown: int  # the unattributed row's place, -1 if none


def process_rows(o: OwnerFigures) -> tuple[ProcessRow, ...]:
    rx_history, tx_history = o.histories.tuples()
    columns = (
        o.owners, itertools.starmap(Traffic, o.totals.tolist()), o.rx_rate.tolist(),
        o.tx_rate.tolist(), o.sockets, o.connections.tolist(), rx_history, tx_history,
        [o.unknown_reasons if owner is None else () for owner in o.owners],
    )  # fmt: skip
    return (*map(ProcessRow, *columns), *o.folded)  # in ProcessRow's field order
