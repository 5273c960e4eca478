"""Per-batch flow grouping: packets oriented local → remote, then summed per flow.

This is the hot path's second half. Each packet is given its local and remote
endpoint from its direction; packets are grouped by (interface, protocol,
local, remote) with a 64-bit hash, sorted once; counters are summed with
`bincount`. Python then touches each flow once per batch, not each packet.

Packets whose direction the capture does not know (plain pcap files) are
oriented per conversation: an existing flow decides; otherwise the endpoint
that sent the conversation's first packet is the local one, except that the
receiver of a SYN-ACK is (it opened the connection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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

    def __len__(self) -> int:
        return len(self.iface)


def _mix(columns: list[npt.NDArray[np.uint64]]) -> U64:
    h = np.zeros(len(columns[0]), np.uint64)
    with np.errstate(over="ignore"):
        for column, multiplier in zip(columns, _MULTIPLIERS, strict=False):
            h ^= column * multiplier
            h ^= h >> np.uint64(29)
        h *= _MULTIPLIERS[0]
        h ^= h >> np.uint64(32)
    return h


SMALL = 64  # below this many rows a dict groups faster than arrays


def _group(columns: list[npt.NDArray[np.uint64]]) -> tuple[I64, I64]:
    """(first row of each group, group of each row); exact even if hashes collide.

    Groups are numbered in the order of the hashes, or of first appearance for
    small batches; nothing depends on which.
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
        return first_small, inverse_small
    hashes = _mix(columns)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    for column in columns:
        if not np.array_equal(column, column[first][inverse]):
            stacked = np.ascontiguousarray(np.stack(columns, axis=1))
            rows = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * len(columns))))
            _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
            return first.astype(np.int64), inverse.reshape(-1).astype(np.int64)
    return first.astype(np.int64), inverse.astype(np.int64)


OrientationLookup = Callable[[int, int, int, int, int, int, int, int], bool | None]


def orient(batch: PacketBatch, local_is_src: OrientationLookup) -> npt.NDArray[np.int8]:
    """Directions for every row, deciding UNKNOWN ones per conversation.

    `local_is_src(iface, proto, src_hi, src_lo, sport, dst_hi, dst_lo, dport)`
    answers from existing flows: True if the source is a known local endpoint,
    False if the destination is, None if the conversation is new.
    """
    direction = batch.direction.copy()
    unknown = np.flatnonzero(direction == Direction.UNKNOWN)
    if not len(unknown):
        return direction
    s = (batch.src_hi[unknown], batch.src_lo[unknown], batch.sport[unknown].astype(np.uint64))
    d = (batch.dst_hi[unknown], batch.dst_lo[unknown], batch.dport[unknown].astype(np.uint64))
    # order the two endpoints so both directions of a conversation share a key
    src_first = (s[0] < d[0]) | (
        (s[0] == d[0]) & ((s[1] < d[1]) | ((s[1] == d[1]) & (s[2] <= d[2])))
    )
    a = [np.where(src_first, x, y) for x, y in zip(s, d, strict=True)]
    b = [np.where(src_first, y, x) for x, y in zip(s, d, strict=True)]
    iface = batch.iface[unknown].astype(np.uint64)
    proto = batch.proto[unknown].astype(np.uint64)
    first, inverse = _group([(iface << np.uint64(8)) | proto, *a, *b])
    flags = batch.tcp_flags[unknown]
    local_is_a = np.zeros(len(first), np.bool_)
    for g, row in enumerate(first.tolist()):
        i = int(unknown[row])
        known = local_is_src(
            int(batch.iface[i]), int(batch.proto[i]),
            int(batch.src_hi[i]), int(batch.src_lo[i]), int(batch.sport[i]),
            int(batch.dst_hi[i]), int(batch.dst_lo[i]), int(batch.dport[i]),
        )  # fmt: skip
        if known is None:  # a new conversation: its first sender is local...
            known = (int(flags[row]) & (TCP_SYN | TCP_ACK)) != (TCP_SYN | TCP_ACK)
        # ...unless that packet is a SYN-ACK, whose receiver opened the connection
        local_is_a[g] = known == bool(src_first[row])
    tx = src_first == local_is_a[inverse]
    direction[unknown] = np.where(tx, Direction.TX, Direction.RX).astype(np.int8)
    return direction


def group(batch: PacketBatch, direction: npt.NDArray[np.int8]) -> FlowGroups:
    rx = direction == Direction.RX
    l_hi = np.where(rx, batch.dst_hi, batch.src_hi)
    l_lo = np.where(rx, batch.dst_lo, batch.src_lo)
    r_hi = np.where(rx, batch.src_hi, batch.dst_hi)
    r_lo = np.where(rx, batch.src_lo, batch.dst_lo)
    lport = np.where(rx, batch.dport, batch.sport)
    rport = np.where(rx, batch.sport, batch.dport)
    iface_proto = (batch.iface.astype(np.uint64) << np.uint64(8)) | batch.proto.astype(np.uint64)
    ports = (lport.astype(np.uint64) << np.uint64(16)) | rport.astype(np.uint64)
    first, inverse = _group([iface_proto, l_hi, l_lo, ports, r_hi, r_lo])
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
    )
