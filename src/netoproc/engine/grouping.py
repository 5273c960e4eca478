"""Per-batch flow grouping: packets oriented local → remote, then summed per flow.

This is the hot path's second half. Each packet is given its local and remote
endpoint from its direction; packets are grouped by (interface, protocol,
local, remote) with a 64-bit hash, sorted once; counters are summed with
`bincount`. Python then touches each flow once per batch, not each packet.

Packets whose direction the capture does not know (plain pcap files) are
oriented per conversation: an existing flow decides; otherwise the endpoint
that sent the conversation's first packet is the local one, except that the
receiver of a SYN-ACK is (it opened the connection). Conversations are told
apart by a 64-bit hash of their endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import CounterBatch, FlowColumns
from netoproc.decode.batch import PacketBatch
from netoproc.model import Direction

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]

_MULTIPLIERS = [
    np.uint64(m)
    for m in (
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0xD6E8FEB86659FD93,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
    )
]


@dataclass(frozen=True, slots=True)
class FlowGroups:
    """One entry per flow present in a batch (arrays of length `len(self)`)."""

    iface: I64
    proto: I64
    l_hi: U64
    l_lo: U64
    lport: I64
    r_hi: U64
    r_lo: U64
    rport: I64
    rx_bytes: I64
    tx_bytes: I64
    rx_packets: I64
    tx_packets: I64
    first_ts: npt.NDArray[np.float64]
    last_ts: npt.NDArray[np.float64]
    transport: Bool
    syn_out: Bool  # we sent a SYN without ACK: the connection is outbound
    syn_in: Bool
    closed: Bool  # FIN or RST seen
    pid: I64  # a pid the capture gave for the flow, else -1
    row_group: I64  # for every packet of the batch, the index of its flow here
    key_hash: U64  # hash of each flow's key, as the flow table indexes it

    def __len__(self) -> int:
        return len(self.iface)


def _mix(columns: list[npt.NDArray[np.uint64]]) -> U64:
    """A 64-bit hash per row: columns times odd constants, xor-ed, then mixed."""
    with np.errstate(over="ignore"):
        h = columns[0] * _MULTIPLIERS[0]
        for column, multiplier in zip(columns[1:], _MULTIPLIERS[1:], strict=False):
            h ^= (column * multiplier) ^ (column >> np.uint64(31))
        h ^= h >> np.uint64(29)
        h *= _MULTIPLIERS[1]
        h ^= h >> np.uint64(32)
    return h


SMALL = 64  # below this many rows a dict groups faster than arrays


def _group(columns: list[npt.NDArray[np.uint64]]) -> tuple[I64, I64, U64]:
    """(a row of each group, group of each row, hash of each group's key).

    Exact even if hashes collide. Groups are numbered in the order of the
    hashes, or of first appearance for small batches; nothing depends on which.
    """
    if len(columns[0]) <= SMALL:
        groups: dict[tuple[int, ...], int] = {}
        inverse_list = [
            groups.setdefault(row, len(groups))
            for row in zip(*(c.tolist() for c in columns), strict=True)
        ]
        inverse_small = np.asarray(inverse_list, np.int64)
        first_small = np.full(len(groups), len(inverse_list), np.int64)
        np.minimum.at(first_small, inverse_small, np.arange(len(inverse_list)))
        return first_small, inverse_small, _mix([c[first_small] for c in columns])
    hashes = _mix(columns)
    inverse = np.unique(hashes, return_inverse=True)[1].reshape(-1)
    first = _representatives(inverse)
    stacked = np.stack(columns, axis=1)
    if not (stacked == stacked[first[inverse]]).all():  # two keys share a hash: group exactly
        rows = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * len(columns))))
        _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
        first = first.astype(np.int64)
        return first, inverse.reshape(-1).astype(np.int64), hashes[first]
    return first, inverse.astype(np.int64), hashes[first]


def _representatives(inverse: I64) -> I64:
    """A row of each group (which one does not matter: they share the key)."""
    rows = np.empty(int(inverse.max()) + 1 if len(inverse) else 0, np.int64)
    rows[inverse] = np.arange(len(inverse))
    return rows


def _conversation_columns(
    iface: I64, proto: I64, s_hi: U64, s_lo: U64, sport: I64, d_hi: U64, d_lo: U64, dport: I64
) -> tuple[list[U64], Bool]:
    """A conversation's key columns, the same in both directions (its endpoints in a
    canonical order, "a" then "b"), and whether the source is "a"."""
    src_first = (s_hi < d_hi) | (
        (s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sport <= dport)))
    )
    a_hi, b_hi = np.where(src_first, s_hi, d_hi), np.where(src_first, d_hi, s_hi)
    a_lo, b_lo = np.where(src_first, s_lo, d_lo), np.where(src_first, d_lo, s_lo)
    a_port, b_port = np.where(src_first, sport, dport), np.where(src_first, dport, sport)
    ports = (a_port.astype(np.uint64) << np.uint64(16)) | b_port.astype(np.uint64)
    iface_proto = (iface.astype(np.uint64) << np.uint64(8)) | proto.astype(np.uint64)
    return [iface_proto, a_hi, a_lo, ports, b_hi, b_lo], src_first


def conversation_hashes(
    iface: I64, proto: I64, s_hi: U64, s_lo: U64, sport: I64, d_hi: U64, d_lo: U64, dport: I64
) -> tuple[U64, Bool]:
    """A hash per conversation, the same in both directions, and whether the
    source is its canonical first endpoint ("a")."""
    columns, src_first = _conversation_columns(iface, proto, s_hi, s_lo, sport, d_hi, d_lo, dport)
    return _mix(columns), src_first


SidesLookup = Callable[[U64], npt.NDArray[np.int8]]
Grouping = tuple[I64, I64]  # (a row of each group, group of each row)


def orient(batch: PacketBatch, sides: SidesLookup) -> tuple[npt.NDArray[np.int8], Grouping | None]:
    """Directions for every row, deciding UNKNOWN ones per conversation.

    `sides(hashes)` answers from existing flows, per conversation hash: 1 if
    its "a" endpoint is local, 0 if "b" is, -1 if the conversation is new.
    When every row was undecided, the conversations found are the batch's
    flows too (each has one local side), and their grouping is returned so
    `group` need not find them again.
    """
    direction = batch.direction.copy()
    unknown = np.flatnonzero(direction == Direction.UNKNOWN)
    if not len(unknown):
        return direction, None
    columns, src_first = _conversation_columns(
        batch.iface[unknown], batch.proto[unknown],
        batch.src_hi[unknown], batch.src_lo[unknown], batch.sport[unknown],
        batch.dst_hi[unknown], batch.dst_lo[unknown], batch.dport[unknown],
    )  # fmt: skip
    rep, inverse, conversations = _group(columns)
    first = np.full(len(rep), len(inverse), np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))  # the first packet decides
    known = sides(conversations)
    # a new conversation: its first sender is local, unless that packet is a
    # SYN-ACK, whose receiver opened the connection
    flags = batch.tcp_flags[unknown[first]]
    first_sender_local = (flags & (TCP_SYN | TCP_ACK)) != (TCP_SYN | TCP_ACK)
    local_is_a = np.where(known >= 0, known == 1, first_sender_local == src_first[first])
    tx = src_first == local_is_a[inverse]
    direction[unknown] = np.where(tx, Direction.TX, Direction.RX).astype(np.int8)
    return direction, ((rep, inverse) if len(unknown) == len(direction) else None)


def group(
    batch: PacketBatch, direction: npt.NDArray[np.int8], grouping: Grouping | None = None
) -> FlowGroups:
    """The batch's flows and each one's share; `grouping` from `orient` when it has one."""
    rx = direction == Direction.RX
    l_hi = np.where(rx, batch.dst_hi, batch.src_hi)
    l_lo = np.where(rx, batch.dst_lo, batch.src_lo)
    r_hi = np.where(rx, batch.src_hi, batch.dst_hi)
    r_lo = np.where(rx, batch.src_lo, batch.dst_lo)
    lport = np.where(rx, batch.dport, batch.sport)
    rport = np.where(rx, batch.sport, batch.dport)
    iface_proto = (batch.iface.astype(np.uint64) << np.uint64(8)) | batch.proto.astype(np.uint64)
    ports = (lport.astype(np.uint64) << np.uint64(16)) | rport.astype(np.uint64)
    columns = [iface_proto, l_hi, l_lo, ports, r_hi, r_lo]  # as key_hashes mixes them
    if grouping is None:
        first, inverse, key_hash = _group(columns)
    else:
        first, inverse = grouping
        key_hash = _mix([column[first] for column in columns])
    n_groups = len(first)

    def total(mask: Bool, weights: I64 | None = None) -> I64:
        w = None if weights is None else weights[mask]
        counts = np.bincount(inverse[mask], weights=w, minlength=n_groups)
        return np.rint(counts).astype(np.int64)

    def seen(mask: Bool) -> Bool:
        return np.bincount(inverse[mask], minlength=n_groups) > 0

    tx = ~rx
    flags = batch.tcp_flags
    syn = (flags & (TCP_SYN | TCP_ACK)) == TCP_SYN
    first_ts = np.full(n_groups, np.inf)
    np.minimum.at(first_ts, inverse, batch.ts)
    last_ts = np.full(n_groups, -np.inf)
    np.maximum.at(last_ts, inverse, batch.ts)
    pid = np.full(n_groups, -1, np.int64)
    has_pid = batch.pid >= 0
    if has_pid.any():
        np.maximum.at(pid, inverse[has_pid], batch.pid[has_pid])
    return FlowGroups(
        iface=batch.iface[first],
        proto=batch.proto[first],
        l_hi=l_hi[first],
        l_lo=l_lo[first],
        lport=lport[first],
        r_hi=r_hi[first],
        r_lo=r_lo[first],
        rport=rport[first],
        rx_bytes=total(rx, batch.ip_length),
        tx_bytes=total(tx, batch.ip_length),
        rx_packets=total(rx),
        tx_packets=total(tx),
        first_ts=first_ts,
        last_ts=last_ts,
        transport=batch.transport[first],
        syn_out=seen(tx & syn),
        syn_in=seen(rx & syn),
        closed=seen((flags & (TCP_FIN | TCP_RST)) != 0),
        pid=pid,
        row_group=inverse,
        key_hash=key_hash,
    )


def key_hashes(key: FlowColumns) -> U64:
    """Flow keys' hashes, as `group` makes them: the flow table's index."""
    iface_proto = (key.iface.astype(np.uint64) << np.uint64(8)) | key.proto.astype(np.uint64)
    ports = (key.lport.astype(np.uint64) << np.uint64(16)) | key.rport.astype(np.uint64)
    return _mix([iface_proto, key.l_hi, key.l_lo, ports, key.r_hi, key.r_lo])


def counted_groups(counts: CounterBatch) -> FlowGroups:
    """The kernel's per-flow counts (one row per flow already) as the engine's groups."""
    n, key = len(counts), counts.key
    none = np.zeros(n, np.bool_)
    return FlowGroups(
        iface=key.iface, proto=key.proto, l_hi=key.l_hi, l_lo=key.l_lo,
        lport=key.lport, r_hi=key.r_hi, r_lo=key.r_lo, rport=key.rport,
        rx_bytes=counts.rx_bytes, tx_bytes=counts.tx_bytes,
        rx_packets=counts.rx_packets, tx_packets=counts.tx_packets,
        first_ts=counts.first_ts, last_ts=counts.last_ts,
        transport=np.ones(n, np.bool_), syn_out=none, syn_in=none, closed=none,
        pid=np.full(n, -1, np.int64), row_group=np.zeros(0, np.int64),
        key_hash=key_hashes(key),
    )  # fmt: skip
