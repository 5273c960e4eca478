"""Packet and capture-file builders for tests: bytes from readable arguments.

Every builder returns the bytes of one header plus what it wraps, so packets
read inside out::

    ethernet(ipv4(TCP, tcp(40000, 443, flags=SYN), src="192.0.2.1", dst="192.0.2.2"))

Lengths and checksums are filled in unless a keyword overrides them (to build
broken packets). Layouts come from the protocol documents and, for Darwin's
PKTAP and Apple's pcapng blocks, from xnu's `bsd/net/pktap.h` and
tcpdump's `print-pktap.c`; never from netoproc's own tables.

Capture files: `pcap_file` writes classic pcap; the `pcapng_*` functions write
pcapng blocks, to be joined in order (`pcapng_shb` first).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

# IP protocol numbers
HOPOPT, ICMP, TCP, UDP, IPV6_IN_IP, ROUTING, FRAGMENT, GRE, AH, ICMPV6, NONE, DSTOPTS = (
    0, 1, 6, 17, 41, 43, 44, 47, 51, 58, 59, 60,
)  # fmt: skip
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_ARP = 0x0800, 0x86DD, 0x0806
VLAN_8021Q, VLAN_8021AD = 0x8100, 0x88A8
# Linux packet types (SLL / SLL2): to us, broadcast, multicast, to another host, sent by us
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
# Darwin PKTAP flags (xnu bsd/net/pktap.h)
PTH_FLAG_DIR_IN, PTH_FLAG_DIR_OUT, PTH_FLAG_PROC_DELEGATED = 0x1, 0x2, 0x4
PTH_FLAG_V2_HDR = 0x80000


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- transport ---------------------------------------------------------------


def tcp(
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    flags: int = ACK,
    seq: int = 1,
    ack: int = 0,
    window: int = 65535,
    options: bytes = b"",
    data_offset: int | None = None,
) -> bytes:
    """A TCP segment; `options` is padded with NOPs to a multiple of 4 bytes."""
    options += b"\x01" * (-len(options) % 4)
    words = (20 + len(options)) // 4 if data_offset is None else data_offset
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, words << 4, flags, window, 0, 0)
    return header + options + payload


def udp(sport: int, dport: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    size = 8 + len(payload) if length is None else length
    return struct.pack("!HHHH", sport, dport, size, 0) + payload


def icmp(type_: int = 8, code: int = 0, payload: bytes = b"\0\1\0\1") -> bytes:
    """ICMP or ICMPv6 (the same first bytes); the checksum is left zero."""
    return struct.pack("!BBH", type_, code, 0) + payload


# -- network -----------------------------------------------------------------


def ipv4(
    proto: int,
    body: bytes,
    *,
    src: str = "192.0.2.1",
    dst: str = "198.51.100.2",
    ident: int = 0x1234,
    df: bool = False,
    more_fragments: bool = False,
    offset: int = 0,
    ttl: int = 64,
    options: bytes = b"",
    total_length: int | None = None,
    ihl: int | None = None,
    version: int = 4,
) -> bytes:
    """An IPv4 packet. `offset` is in bytes (a multiple of 8); options are padded with EOL."""
    options += b"\0" * (-len(options) % 4)
    words = (20 + len(options)) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(body) if total_length is None else total_length
    frag = (0x4000 if df else 0) | (0x2000 if more_fragments else 0) | (offset // 8)
    header = struct.pack(
        "!BBHHHBBH4s4s", version << 4 | words, 0, total, ident, frag, ttl, proto, 0,
        _addr(src), _addr(dst),
    )  # fmt: skip
    header += options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def ipv6(
    proto: int,
    body: bytes,
    *,
    src: str = "2001:db8::1",
    dst: str = "2001:db8::2",
    ext: Sequence[tuple[int, bytes]] = (),
    payload_length: int | None = None,
    hop_limit: int = 64,
    flow: int = 0,
    version: int = 6,
) -> bytes:
    """An IPv6 packet; `ext` lists extension headers (from `hop_by_hop` etc.) in order.

    The next-header fields are chained here: each header's first byte names the
    one after it, the last names `proto`.
    """
    kinds = [kind for kind, _ in ext] + [proto]
    chain = b"".join(bytes([kinds[i + 1]]) + raw[1:] for i, (_, raw) in enumerate(ext))
    length = len(chain) + len(body) if payload_length is None else payload_length
    header = struct.pack("!IHBB", version << 28 | flow, length, kinds[0], hop_limit)
    return header + _addr(src) + _addr(dst) + chain + body


def _options_header(kind: int, options: bytes) -> tuple[int, bytes]:
    """A hop-by-hop or destination options header, padded with PadN to 8n bytes."""
    pad = -(2 + len(options)) % 8
    if pad == 1:
        options += b"\0"  # Pad1
    elif pad:
        options += bytes([1, pad - 2]) + bytes(pad - 2)
    raw = bytes([0, (2 + len(options)) // 8 - 1]) + options
    return kind, raw


def jumbo_option(length: int) -> bytes:
    """The Jumbo Payload option (RFC 2675); first in its header it sits at 4n+2 as required."""
    return struct.pack("!BBI", 0xC2, 4, length)


def router_alert() -> bytes:
    return struct.pack("!BBH", 5, 2, 0)


def hop_by_hop(options: bytes = b"") -> tuple[int, bytes]:
    return _options_header(HOPOPT, options)


def destination_options(options: bytes = b"") -> tuple[int, bytes]:
    return _options_header(DSTOPTS, options)


def routing(
    addresses: Sequence[str] = ("2001:db8::99",), routing_type: int = 0
) -> tuple[int, bytes]:
    """A routing header listing `addresses` (type 0 layout, as tcpdump's RT6 prints)."""
    data = b"".join(_addr(a) for a in addresses)
    head = struct.pack("!BBBBI", 0, len(data) // 8, routing_type, len(addresses), 0)
    return ROUTING, head + data


def fragment(offset: int = 0, *, more: bool = False, ident: int = 0xCAFE) -> tuple[int, bytes]:
    """An IPv6 fragment header; `offset` in bytes (a multiple of 8)."""
    return FRAGMENT, struct.pack("!BBHI", 0, 0, (offset // 8) << 3 | more, ident)


def authentication(icv: bytes = bytes(12), spi: int = 0x100) -> tuple[int, bytes]:
    """An authentication header (RFC 4302): its length counts 4-byte units, minus 2."""
    return AH, struct.pack("!BBHII", 0, (12 + len(icv)) // 4 - 2, 0, spi, 1) + icv


# -- link layers -------------------------------------------------------------


def _ethertype_of(packet: bytes) -> int:
    return ETHERTYPE_IPV6 if packet and packet[0] >> 4 == 6 else ETHERTYPE_IPV4


def ethernet(
    payload: bytes,
    *,
    ethertype: int | None = None,
    vlans: Sequence[int] = (),
    tpids: Sequence[int] | None = None,
    src: bytes = b"\x02\0\0\0\0\x01",
    dst: bytes = b"\x02\0\0\0\0\x02",
) -> bytes:
    """An Ethernet II frame with optional VLAN tags (VLAN ids, outermost first).

    The ethertype follows the IP version unless given; the outer tag of two or
    more is 802.1ad (QinQ) unless `tpids` says otherwise.
    """
    if tpids is None:
        tpids = [VLAN_8021AD] + [VLAN_8021Q] * (len(vlans) - 1) if len(vlans) > 1 else [VLAN_8021Q]
    types = [*tpids[: len(vlans)], _ethertype_of(payload) if ethertype is None else ethertype]
    tags = b"".join(struct.pack("!HH", vid, types[i + 1]) for i, vid in enumerate(vlans))
    return dst + src + struct.pack("!H", types[0]) + tags + payload


def sll(payload: bytes, *, pkttype: int = PACKET_HOST, protocol: int | None = None) -> bytes:
    """Linux cooked capture v1 (LINKTYPE_LINUX_SLL), 16 bytes."""
    proto = _ethertype_of(payload) if protocol is None else protocol
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\0\0\0\0\x01", proto) + payload


def sll2(
    payload: bytes, *, ifindex: int = 1, pkttype: int = PACKET_HOST, protocol: int | None = None
) -> bytes:
    """Linux cooked capture v2 (LINKTYPE_LINUX_SLL2), 20 bytes."""
    proto = _ethertype_of(payload) if protocol is None else protocol
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, 1, pkttype, 6, b"\x02\0\0\0\0\x01") + payload


AF_INET, AF_INET6_LINUX, AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN = 2, 10, 24, 28, 30


def null(payload: bytes, *, family: int | None = None, big_endian: bool = False) -> bytes:
    """BSD loopback (LINKTYPE_NULL): the address family in the capturing host's byte order."""
    fam = (
        (AF_INET6_DARWIN if payload[:1] and payload[0] >> 4 == 6 else AF_INET)
        if family is None
        else family
    )
    return fam.to_bytes(4, "big" if big_endian else "little") + payload


def loop(payload: bytes, *, family: int | None = None) -> bytes:
    """OpenBSD loopback (LINKTYPE_LOOP): the family in network byte order."""
    return null(payload, family=family, big_endian=True)


def _c_string(text: str, size: int) -> bytes:
    return text.encode()[: size - 1].ljust(size, b"\0")


def pktap_v1(
    frame: bytes,
    *,
    dlt: int = 1,
    ifname: str = "en0",
    flags: int = 0,
    pid: int = -1,
    comm: str = "",
    epid: int = -1,
    ecomm: str = "",
    length: int = 156,
    protocol_family: int = AF_INET,
) -> bytes:
    """A Darwin PKTAP v1 header (little-endian) in front of `frame`.

    Offsets as in tcpdump's print-pktap.c (the 108-byte base: pid at 52, comm
    at 56, epid at 84, ecomm at 88); current macOS writes 156 bytes, with more
    fields after those, zero here.
    """
    head = struct.pack(
        "<III24sIIIIi20sIHHi20s",
        length, 1, dlt, _c_string(ifname, 24), flags, protocol_family, 14 if dlt == 1 else 0, 0,
        pid, _c_string(comm, 17), 0, 0, 0, epid, _c_string(ecomm, 17),
    )  # fmt: skip
    assert len(head) == 108
    return head + bytes(length - 108) + frame


def pktap_v2(
    frame: bytes,
    *,
    dlt: int = 1,
    ifname: str | None = "en0",
    flags: int = 0,
    pid: int = -1,
    comm: str | None = None,
    epid: int = -1,
    ecomm: str | None = None,
) -> bytes:
    """A Darwin PKTAP v2 header: 40 fixed bytes, then NUL-terminated strings at offsets.

    `flags` gets PTH_FLAG_V2_HDR added. A string given as None is absent (offset 0).
    """
    strings = b""
    offsets = []
    for text in (ifname, comm, ecomm):
        if text is None:
            offsets.append(0)
            continue
        offsets.append(40 + len(strings))
        strings += text.encode() + b"\0"
    strings += b"\0" * (-len(strings) % 4)
    head = struct.pack(
        "<BBBBBBHHHHHIIIiiI",
        40 + len(strings), 0, 0, *offsets, dlt, 14 if dlt == 1 else 0, 0, 6, 0,
        AF_INET, 0, 0, pid, epid, flags | PTH_FLAG_V2_HDR,
    )  # fmt: skip
    assert len(head) == 40
    return head + strings + frame


# -- capture files -----------------------------------------------------------

T0 = 1_700_000_000.0


def pcap_file(
    frames: Sequence[bytes],
    linktype: int,
    *,
    ts: Sequence[float] | None = None,
    wirelen: Sequence[int] | None = None,
    big_endian: bool = False,
    nanosecond: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A classic pcap file; timestamps default to T0, T0 + 1, ...; wire lengths to caplen."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    scale = 10**9 if nanosecond else 10**6
    for i, frame in enumerate(frames):
        when = T0 + i if ts is None else ts[i]
        seconds = int(when)
        fraction = round((when - seconds) * scale)
        wire = len(frame) if wirelen is None else wirelen[i]
        out.append(struct.pack(order + "IIII", seconds, fraction, len(frame), wire) + frame)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def pcapng_option(code: int, value: bytes, *, big_endian: bool = False) -> bytes:
    return struct.pack(">HH" if big_endian else "<HH", code, len(value)) + _pad4(value)


def pcapng_block(block_type: int, body: bytes, *, big_endian: bool = False) -> bytes:
    """One block: type, total length, body (padded), total length again."""
    order = ">" if big_endian else "<"
    body = _pad4(body)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def _with_options(body: bytes, options: Sequence[tuple[int, bytes]], big_endian: bool) -> bytes:
    if not options:
        return body
    encoded = b"".join(pcapng_option(c, v, big_endian=big_endian) for c, v in options)
    return body + encoded + pcapng_option(0, b"", big_endian=big_endian)


def pcapng_shb(*, big_endian: bool = False) -> bytes:
    """A section header block: starts a section (interfaces and processes restart)."""
    order = ">" if big_endian else "<"
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return pcapng_block(0x0A0D0D0A, body, big_endian=big_endian)


def pcapng_idb(
    linktype: int,
    *,
    snaplen: int = 262144,
    name: str | bytes | None = None,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    big_endian: bool = False,
) -> bytes:
    """An interface description block; `tsresol` is the raw if_tsresol byte."""
    order = ">" if big_endian else "<"
    options: list[tuple[int, bytes]] = []
    if name is not None:
        options.append((2, name if isinstance(name, bytes) else name.encode()))
    if tsresol is not None:
        options.append((9, bytes([tsresol])))
    if tsoffset is not None:
        options.append((14, struct.pack(order + "q", tsoffset)))
    body = _with_options(struct.pack(order + "HHI", linktype, 0, snaplen), options, big_endian)
    return pcapng_block(1, body, big_endian=big_endian)


def pcapng_epb(
    interface: int,
    ticks: int,
    data: bytes,
    *,
    wirelen: int | None = None,
    flags: int | None = None,
    process: int | None = None,
    effective_process: int | None = None,
    big_endian: bool = False,
) -> bytes:
    """An enhanced packet block; `ticks` in the interface's time resolution.

    `flags` is epb_flags (bits 0-1: 1 inbound, 2 outbound); `process` and
    `effective_process` are Apple's options 0x8001 / 0x8003: indexes of this
    section's process information blocks, counted from 0.
    """
    order = ">" if big_endian else "<"
    options: list[tuple[int, bytes]] = []
    for code, value in ((2, flags), (0x8001, process), (0x8003, effective_process)):
        if value is not None:
            options.append((code, struct.pack(order + "I", value)))
    wire = len(data) if wirelen is None else wirelen
    head = struct.pack(order + "IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire)
    return pcapng_block(
        6, _with_options(head + _pad4(data), options, big_endian), big_endian=big_endian
    )


def pcapng_spb(data: bytes, *, wirelen: int | None = None, big_endian: bool = False) -> bytes:
    """A simple packet block: interface 0, no timestamp."""
    order = ">" if big_endian else "<"
    wire = len(data) if wirelen is None else wirelen
    return pcapng_block(3, struct.pack(order + "I", wire) + data, big_endian=big_endian)


def pcapng_pb(
    interface: int, ticks: int, data: bytes, *, wirelen: int | None = None, big_endian: bool = False
) -> bytes:
    """An (obsolete) packet block."""
    order = ">" if big_endian else "<"
    wire = len(data) if wirelen is None else wirelen
    head = struct.pack(
        order + "HHIIII", interface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire
    )
    return pcapng_block(2, head + data, big_endian=big_endian)


def pcapng_pib(pid: int, name: str | bytes | None = None, *, big_endian: bool = False) -> bytes:
    """Apple's process information block (0x80000001): pid, then option 2 = name."""
    if isinstance(name, str):
        name = name.encode()
    options = [] if name is None else [(2, name)]
    body = _with_options(struct.pack(">i" if big_endian else "<i", pid), options, big_endian)
    return pcapng_block(0x80000001, body, big_endian=big_endian)
