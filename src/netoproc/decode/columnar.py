"""The columnar decoder: a RecordBlock in, a PacketBatch out, with numpy.

Records are decoded as arrays: each header is gathered for all records at
once through its layout's dtype, and every sanity check is a mask. What the
fast path does not cover (VLAN stacks, PKTAP, fragments, IPv6 extension
headers, zero length fields, anything failing a check) is routed, record by
record, to the scalar decoder, which has the final word. Both write into the
same columns, so rows keep the order of their records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from netoproc.capture import records as lt
from netoproc.capture.records import RecordBlock, distinct, headers_at
from netoproc.decode.batch import COLUMNS, DecodeCounts, PacketBatch, empty_columns
from netoproc.decode.layouts import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPV4,
    IPV6,
    TCP,
    UDP,
    Layout,
)
from netoproc.decode.scalar import SLL_OUTGOING, Malformed, decode_record
from netoproc.model import (
    DNS_PORT,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    V4_MAPPED_PREFIX,
    Direction,
)

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]


def _window(buf: bytes, starts: I64, layout: Layout) -> npt.NDArray[np.void]:
    """The header `layout` at every start offset, as a structured array."""
    return headers_at(buf, starts, layout.dtype)


def _be16(data: U8, at: I64) -> I64:
    return (data[at].astype(np.int64) << 8) | data[at + 1]


def _be32(data: U8, at: I64) -> I64:
    return (_be16(data, at) << 16) | _be16(data, at + 2)


class _Links:
    """Link-stage results for every record of a block."""

    def __init__(self, block: RecordBlock) -> None:
        n = len(block)
        self.l3 = np.zeros(n, np.int64)
        self.ethertype = np.zeros(n, np.int64)
        self.slow = np.zeros(n, np.bool_)
        self.direction = block.direction.copy()
        self.iface = block.iface.copy()


LinkStage = Callable[[U8, RecordBlock, I64, _Links], None]


def _ethernet(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    off = block.offset[idx]
    ethertype = _be16(data, off + 12)
    # VLAN tags and everything not IP go record by record: rare, and the scalar decoder knows
    odd = (block.caplen[idx] < 14) | ((ethertype != ETHERTYPE_IPV4) & (ethertype != ETHERTYPE_IPV6))
    out.l3[idx] = off + 14
    out.ethertype[idx] = ethertype
    out.slow[idx[odd]] = True


def _sll(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    off = block.offset[idx]
    out.l3[idx] = off + 16
    out.ethertype[idx] = _be16(data, off + 14)
    out.direction[idx] = np.where(
        _be16(data, off) == SLL_OUTGOING, Direction.TX, Direction.RX
    ).astype(np.int8)
    out.slow[idx[block.caplen[idx] < 16]] = True


def _sll2(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    off = block.offset[idx]
    out.l3[idx] = off + 20
    out.ethertype[idx] = _be16(data, off)
    out.iface[idx] = _be32(data, off + 4)
    out.direction[idx] = np.where(data[off + 10] == SLL_OUTGOING, Direction.TX, Direction.RX)
    out.slow[idx[block.caplen[idx] < 20]] = True


def _null(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    # Host byte order of the capturing machine: take whichever reading is small.
    off = block.offset[idx]
    little = (
        data[off].astype(np.int64)
        | (data[off + 1].astype(np.int64) << 8)
        | (data[off + 2].astype(np.int64) << 16)
        | (data[off + 3].astype(np.int64) << 24)
    )
    family = np.where(little > 0xFFFF, _be32(data, off), little)
    _families(family, off + 4, block.caplen[idx] < 4, idx, out)


def _loop(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    off = block.offset[idx]
    _families(_be32(data, off), off + 4, block.caplen[idx] < 4, idx, out)


def _families(family: I64, l3: I64, short: Bool, idx: I64, out: _Links) -> None:
    out.l3[idx] = l3
    out.ethertype[idx] = np.select(
        [family == 2, np.isin(family, (10, 24, 28, 30))], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0
    )
    out.slow[idx[short]] = True


def _raw(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
    off = block.offset[idx]
    version = data[off] >> 4
    out.l3[idx] = off
    out.ethertype[idx] = np.select(
        [version == 4, version == 6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0
    )
    out.slow[idx[block.caplen[idx] < 1]] = True


def _fixed(ethertype: int) -> LinkStage:
    def stage(data: U8, block: RecordBlock, idx: I64, out: _Links) -> None:
        out.l3[idx] = block.offset[idx]
        out.ethertype[idx] = ethertype

    return stage


LINK_STAGES: dict[int, LinkStage] = {
    lt.LINKTYPE_NULL: _null,
    lt.LINKTYPE_ETHERNET: _ethernet,
    lt.LINKTYPE_RAW: _raw,
    lt.LINKTYPE_DLT_RAW_12: _raw,
    lt.LINKTYPE_DLT_RAW_14: _raw,
    lt.LINKTYPE_LOOP: _loop,
    lt.LINKTYPE_LINUX_SLL: _sll,
    lt.LINKTYPE_LINUX_SLL2: _sll2,
    lt.LINKTYPE_IPV4: _fixed(ETHERTYPE_IPV4),
    lt.LINKTYPE_IPV6: _fixed(ETHERTYPE_IPV6),
}


class _Fill:
    """Output columns for every record; `done` marks rows filled by the fast path."""

    def __init__(self, n: int) -> None:
        self.cols = empty_columns(n)
        for unknown in ("fragment_id", "pid", "tsval", "tsecr"):
            self.cols[unknown][:] = -1
        self.done = np.zeros(n, np.bool_)
        self.payload_offset = np.full(n, -1, np.int64)


def _transport(
    buf: bytes,
    rows: I64,
    proto: I64,
    l4: I64,
    l4_length: I64,
    captured: I64,
    fill: _Fill,
) -> Bool:
    """Fill ports and TCP fields of `rows`; return which of them the fast path settled.

    Unsettled rows may hold partial values: the scalar decoder rewrites them.
    """
    cols = fill.cols
    settled = np.ones(len(rows), np.bool_)
    tcp = proto == IPPROTO_TCP
    udp = proto == IPPROTO_UDP
    settled[tcp & ((l4_length < TCP.size) | (captured < TCP.size))] = False
    settled[udp & ((l4_length < UDP.size) | (captured < UDP.size))] = False

    t = np.flatnonzero(tcp & settled)
    if len(t):
        h = _window(buf, l4[t], TCP)
        header = (h["data_offset"].astype(np.int64) >> 4) * 4
        settled[t[(header < TCP.size) | (header > l4_length[t])]] = False
        r = rows[t]
        cols["sport"][r] = h["sport"]
        cols["dport"][r] = h["dport"]
        cols["seq"][r] = h["seq"]
        cols["ack"][r] = h["ack"]
        cols["tcp_flags"][r] = h["flags"]
        cols["window"][r] = h["window"]
        cols["payload_length"][r] = l4_length[t] - header
        fill.payload_offset[r] = np.where(header < captured[t], l4[t] + header, -1)
        options = np.flatnonzero(header > TCP.size)
        if len(options):
            start = l4[t][options]
            end = start + np.minimum(header[options], captured[t][options])
            tsval, tsecr = _timestamps(buf, start + TCP.size, end)
            cols["tsval"][r[options]] = tsval
            cols["tsecr"][r[options]] = tsecr

    u = np.flatnonzero(udp & settled)
    if len(u):
        h = _window(buf, l4[u], UDP)
        r = rows[u]
        cols["sport"][r] = h["sport"]
        cols["dport"][r] = h["dport"]
        cols["payload_length"][r] = l4_length[u] - UDP.size
        fill.payload_offset[r] = np.where(UDP.size < captured[u], l4[u] + UDP.size, -1)
    return settled


# NOP NOP TIMESTAMP(10): how Linux and most stacks lay out options on data segments
_COMMON_TS_PREFIX = 0x0101080A


def _timestamps(buf: bytes, pos: I64, end: I64) -> tuple[I64, I64]:
    """TSval/TSecr of TCP options in [pos, end) per row; -1 where absent.

    The common layout is read in one gather; the rest (SYNs, SACK blocks,
    odd stacks) walk their options in lockstep, one option per round.
    """
    data = np.frombuffer(buf, np.uint8)
    tsval = np.full(len(pos), -1, np.int64)
    tsecr = np.full(len(pos), -1, np.int64)
    common = (end - pos >= 12) & (_be32(data, pos) == _COMMON_TS_PREFIX)
    tsval[common] = _be32(data, pos[common] + 4)
    tsecr[common] = _be32(data, pos[common] + 8)
    walking = np.flatnonzero(~common & (pos < end))
    at = pos[walking]
    for _ in range(40):  # at most 40 bytes of options, each round moves at least one
        if not len(walking):
            break
        kind = data[at]
        length = data[at + 1].astype(np.int64)
        stamp = (kind == 8) & (length == 10) & (at + 10 <= end[walking])
        rows = walking[stamp]
        tsval[rows] = _be32(data, at[stamp] + 2)
        tsecr[rows] = _be32(data, at[stamp] + 6)
        step = np.where(kind == 1, 1, length)
        go_on = ~stamp & (kind != 0) & ((kind == 1) | ((length >= 2) & (at + 2 <= end[walking])))
        at = at + step
        go_on &= at < end[walking]
        walking, at = walking[go_on], at[go_on]
    return tsval, tsecr


def _ipv4(block: RecordBlock, rows: I64, links: _Links, fill: _Fill) -> None:
    start = links.l3[rows]
    avail = block.offset[rows] + block.caplen[rows] - start
    wire = block.wirelen[rows] - (start - block.offset[rows])
    h = _window(block.data, start, IPV4)
    vihl = h["vihl"].astype(np.int64)
    header = (vihl & 0x0F) * 4
    total = h["total_length"].astype(np.int64)
    ok = (
        (avail >= IPV4.size)
        & (vihl >> 4 == 4)
        & (header >= IPV4.size)
        & (header <= avail)
        & (total >= header)
        & (total <= wire)
        & ((h["fragment"] & 0x3FFF) == 0)
    )
    rows, start, avail, header, total = rows[ok], start[ok], avail[ok], header[ok], total[ok]
    proto = h["protocol"][ok].astype(np.int64)
    cols = fill.cols
    cols["proto"][rows] = proto
    cols["src_lo"][rows] = h["src"][ok].astype(np.uint64) | np.uint64(V4_MAPPED_PREFIX)
    cols["dst_lo"][rows] = h["dst"][ok].astype(np.uint64) | np.uint64(V4_MAPPED_PREFIX)
    cols["ip_length"][rows] = total
    l4 = start + header
    fill.done[rows] = _transport(block.data, rows, proto, l4, total - header, avail - header, fill)


def _ipv6(block: RecordBlock, rows: I64, links: _Links, fill: _Fill) -> None:
    start = links.l3[rows]
    avail = block.offset[rows] + block.caplen[rows] - start
    wire = block.wirelen[rows] - (start - block.offset[rows])
    h = _window(block.data, start, IPV6)
    payload = h["payload_length"].astype(np.int64)
    proto = h["next_header"].astype(np.int64)
    ok = (
        (avail >= IPV6.size)
        & ((h["vtcfl"] >> 28) == 6)
        & (payload > 0)
        & (IPV6.size + payload <= wire)
        & ((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP) | (proto == IPPROTO_ICMPV6))
    )
    rows, start, avail, payload, proto = rows[ok], start[ok], avail[ok], payload[ok], proto[ok]
    cols = fill.cols
    cols["proto"][rows] = proto
    for name in ("src_hi", "src_lo", "dst_hi", "dst_lo"):
        cols[name][rows] = h[name][ok]
    cols["ip_length"][rows] = IPV6.size + payload
    l4 = start + IPV6.size
    fill.done[rows] = _transport(block.data, rows, proto, l4, payload, avail - IPV6.size, fill)


_MASK64 = (1 << 64) - 1


# Below this many records, the scalar decoder is cheaper than the arrays' fixed cost.
SMALL_BLOCK = 32


def decode_block(
    block: RecordBlock, *, dns_payloads: bool = True, small: int = SMALL_BLOCK
) -> PacketBatch:
    """Decode a block: with arrays, or record by record when it has `small` records or fewer."""
    n = len(block)
    if n <= small:
        return _decode_each(block, dns_payloads)
    data = np.frombuffer(block.data, np.uint8)
    links = _Links(block)
    single = n == 0 or bool((block.linktype == block.linktype[0]).all())
    linktypes = block.linktype[:1] if single else distinct(block.linktype)
    for linktype in linktypes.tolist():
        idx = np.arange(n) if single else np.flatnonzero(block.linktype == linktype)
        stage = LINK_STAGES.get(linktype)
        if stage is None:
            links.slow[idx] = True
        else:
            stage(data, block, idx, links)

    fill = _Fill(n)
    fast = ~links.slow
    v4 = np.flatnonzero(fast & (links.ethertype == ETHERTYPE_IPV4))
    v6 = np.flatnonzero(fast & (links.ethertype == ETHERTYPE_IPV6))
    if len(v4):
        _ipv4(block, v4, links, fill)
    if len(v6):
        _ipv6(block, v6, links, fill)
    not_ip_fast = fast & (links.ethertype != ETHERTYPE_IPV4) & (links.ethertype != ETHERTYPE_IPV6)

    fill.cols["transport"][fill.done] = True
    slow_rows = np.flatnonzero(~fill.done & ~not_ip_fast)
    not_ip_fast_count = int(np.count_nonzero(not_ip_fast))
    return _finish(block, links, fill, slow_rows.tolist(), not_ip_fast_count, dns_payloads)


def _decode_each(block: RecordBlock, dns_payloads: bool) -> PacketBatch:
    """The scalar decoder for every record: for blocks too small to pay for arrays."""
    links = _Links(block)
    return _finish(block, links, _Fill(len(block)), range(len(block)), 0, dns_payloads)


def _finish(
    block: RecordBlock,
    links: _Links,
    fill: _Fill,
    slow_rows: Iterable[int],
    not_ip_fast: int,
    dns_payloads: bool,
) -> PacketBatch:
    """Decode `slow_rows` with the scalar decoder, then assemble the batch."""
    n = len(block)
    cols = fill.cols
    malformed = not_ip = portless = 0
    names = dict(block.process_names)
    for i in slow_rows:
        try:
            packet = decode_record(
                block.data,
                int(block.offset[i]),
                int(block.caplen[i]),
                int(block.wirelen[i]),
                int(block.linktype[i]),
            )
        except Malformed:
            malformed += 1
            continue
        if packet is None:
            not_ip += 1
            continue
        if packet.direction != Direction.UNKNOWN:
            links.direction[i] = packet.direction
        if packet.ifindex >= 0:
            links.iface[i] = packet.ifindex
        elif packet.ifname:
            links.iface[i] = block.interfaces.intern(packet.ifname)
        if packet.pid >= 0:
            cols["pid"][i] = packet.pid
            if packet.comm:
                names[packet.pid] = packet.comm
        cols["proto"][i] = packet.proto
        cols["src_hi"][i], cols["src_lo"][i] = packet.src >> 64, packet.src & _MASK64
        cols["dst_hi"][i], cols["dst_lo"][i] = packet.dst >> 64, packet.dst & _MASK64
        cols["sport"][i] = packet.sport
        cols["dport"][i] = packet.dport
        cols["ip_length"][i] = packet.ip_length
        cols["transport"][i] = packet.transport
        cols["tcp_flags"][i] = packet.tcp_flags
        cols["seq"][i] = packet.seq
        cols["ack"][i] = packet.ack
        cols["payload_length"][i] = packet.payload_length
        cols["fragment_id"][i] = packet.fragment_id
        cols["window"][i] = packet.window
        cols["tsval"][i] = packet.tsval
        cols["tsecr"][i] = packet.tsecr
        fill.payload_offset[i] = packet.payload_offset
        fill.done[i] = True
        portless += not packet.transport

    keep = np.flatnonzero(fill.done)
    cols["ts"][:] = block.ts
    cols["iface"][:] = links.iface
    cols["direction"][:] = links.direction
    pid = cols["pid"]  # a pid from the record's own header wins over the file's
    unset = pid < 0
    pid[unset] = block.pid[unset]

    dns: tuple[tuple[int, bytes], ...] = ()
    if dns_payloads:
        dns = _dns_payloads(block, cols, fill, keep)
    whole = len(keep) == n  # usually every record decodes: no copy then
    out = {name: cols[name] if whole else cols[name][keep] for name, _ in COLUMNS}
    return PacketBatch(
        **out,
        interfaces=block.interfaces,
        process_names=names,
        dns=dns,
        counts=DecodeCounts(
            records=n,
            malformed=malformed,
            not_ip=not_ip + not_ip_fast,
            portless=portless,
        ),
    )


def _dns_payloads(
    block: RecordBlock,
    cols: dict[str, npt.NDArray[Any]],
    fill: _Fill,
    keep: I64,
) -> tuple[tuple[int, bytes], ...]:
    on_53 = (cols["sport"][keep] == DNS_PORT) | (cols["dport"][keep] == DNS_PORT)
    has = on_53 & (fill.payload_offset[keep] >= 0) & (cols["payload_length"][keep] > 0)
    found = []
    data = block.data
    for row in np.flatnonzero(has).tolist():
        i = int(keep[row])
        start = int(fill.payload_offset[i])
        end = min(start + int(cols["payload_length"][i]), int(block.offset[i] + block.caplen[i]))
        found.append((row, data[start:end]))
    return tuple(found)
