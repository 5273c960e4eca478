"""The scalar decoder: one record at a time, every header and every odd case.

It is the reference for the columnar decoder (both must agree on every record
the fast path accepts) and the slow path for what the fast path leaves out:
VLAN stacks, PKTAP, IPv4 fragments and TSO lengths, IPv6 extension headers
and jumbograms, and anything that fails a sanity check.

`decode_record` returns a `Packet`, None for frames that are not IP, and
raises `Malformed` when headers contradict themselves or their lengths.
A record whose capture stops before the transport ports is not malformed:
it is returned with `transport` False and counted, without ports. One whose
capture holds the ports but not the whole TCP or UDP header gets its ports
(`transport` True) and no TCP fields; its payload length assumes the
shortest header.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import NamedTuple

from netoproc.capture import bpf_darwin as k
from netoproc.capture import records as lt
from netoproc.decode.layouts import (
    ETHERNET,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPV4,
    IPV6,
    IPV6_AUTH_HEADER,
    IPV6_EXTENSION_HEADERS,
    IPV6_FRAGMENT,
    IPV6_FRAGMENT_HEADER,
    IPV6_HOP_BY_HOP,
    IPV6_JUMBO_OPTION,
    LINUX_SLL,
    LINUX_SLL2,
    TCP,
    UDP,
    VLAN_ETHERTYPES,
    VLAN_TAG,
)
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, V4_MAPPED_PREFIX, Direction

MAX_VLAN_TAGS = 8
MAX_IPV6_HEADERS = 16
V1_SIZE = ctypes.sizeof(k.PktapHeader)
# Every v1 field read here lies below this (the end of pth_ecomm); the live capture's
# array path wants the whole 108-byte first header and leaves shorter ones to this.
V1_FIELDS_END = k.PktapHeader.pth_ecomm.offset + k.PktapHeader.pth_ecomm.size
V2_SIZE = ctypes.sizeof(k.PktapV2Header)
SLL_OUTGOING = 4
TCP_OPTION_END, TCP_OPTION_NOP, TCP_OPTION_TIMESTAMP = 0, 1, 8

# Address family values a DLT_NULL / DLT_LOOP header may carry.
_NULL_FAMILIES = {2: ETHERTYPE_IPV4, 10: ETHERTYPE_IPV6, 24: ETHERTYPE_IPV6, 28: ETHERTYPE_IPV6}
_NULL_FAMILIES[30] = ETHERTYPE_IPV6  # Darwin AF_INET6


class Malformed(Exception):
    """A record whose headers contradict themselves or their lengths."""


class Link(NamedTuple):
    """Where the network header is and what the link layer told us."""

    l3: int
    ethertype: int
    direction: int = Direction.UNKNOWN
    ifindex: int = -1
    ifname: str | None = None
    pid: int = -1
    comm: str | None = None


class Packet(NamedTuple):
    direction: int
    ifindex: int
    ifname: str | None
    pid: int
    comm: str | None
    proto: int
    src: int
    dst: int
    sport: int
    dport: int
    ip_length: int
    transport: bool  # ports (for TCP/UDP) were read
    tcp_flags: int
    seq: int
    ack: int
    payload_length: int
    payload_offset: int  # where the transport payload starts in the buffer, -1 if not captured
    fragment_id: int  # -1 unless the packet is an IP fragment
    window: int = 0  # TCP receive window, unscaled
    tsval: int = -1  # TCP timestamp option (RFC 7323), -1 when absent or not captured
    tsecr: int = -1


LinkDecoder = Callable[[bytes, int, int], Link]
_PORTS = struct.Struct("!HH")
_MIN_HEADER = {IPPROTO_TCP: TCP.size, IPPROTO_UDP: UDP.size}


def _ethernet(buf: bytes, off: int, end: int) -> Link:
    if end - off < ETHERNET.size:
        raise Malformed("truncated Ethernet header")
    ethertype = ETHERNET.struct.unpack_from(buf, off)[2]
    pos = off + ETHERNET.size
    tags = 0
    while ethertype in VLAN_ETHERTYPES:
        tags += 1
        if tags > MAX_VLAN_TAGS or pos + VLAN_TAG.size > end:
            raise Malformed("truncated or endless VLAN tags")
        ethertype = VLAN_TAG.struct.unpack_from(buf, pos)[1]
        pos += VLAN_TAG.size
    return Link(pos, ethertype)


def _null(buf: bytes, off: int, end: int) -> Link:
    if end - off < 4:
        raise Malformed("truncated loopback header")
    family = int.from_bytes(buf[off : off + 4], "little")
    if family > 0xFFFF:  # written in the other byte order
        family = int.from_bytes(buf[off : off + 4], "big")
    return Link(off + 4, _NULL_FAMILIES.get(family, 0))


def _loop(buf: bytes, off: int, end: int) -> Link:
    if end - off < 4:
        raise Malformed("truncated loopback header")
    return Link(off + 4, _NULL_FAMILIES.get(int.from_bytes(buf[off : off + 4], "big"), 0))


def _raw(buf: bytes, off: int, end: int) -> Link:
    if end <= off:
        raise Malformed("empty raw IP record")
    version = buf[off] >> 4
    return Link(off, ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else 0)


def _ipv4_only(buf: bytes, off: int, end: int) -> Link:
    return Link(off, ETHERTYPE_IPV4)


def _ipv6_only(buf: bytes, off: int, end: int) -> Link:
    return Link(off, ETHERTYPE_IPV6)


def _sll(buf: bytes, off: int, end: int) -> Link:
    if end - off < LINUX_SLL.size:
        raise Malformed("truncated Linux cooked header")
    pkttype, _hatype, _halen, _addr, protocol = LINUX_SLL.struct.unpack_from(buf, off)
    direction = Direction.TX if pkttype == SLL_OUTGOING else Direction.RX
    return Link(off + LINUX_SLL.size, protocol, direction)


def _sll2(buf: bytes, off: int, end: int) -> Link:
    if end - off < LINUX_SLL2.size:
        raise Malformed("truncated Linux cooked v2 header")
    protocol, _mbz, ifindex, _hatype, pkttype, _halen, _addr = LINUX_SLL2.struct.unpack_from(
        buf, off
    )
    direction = Direction.TX if pkttype == SLL_OUTGOING else Direction.RX
    return Link(off + LINUX_SLL2.size, protocol, direction, ifindex)


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _pktap(buf: bytes, off: int, end: int) -> Link:
    """Darwin PKTAP, v1 or v2: the process and interface of each packet, then its frame.

    The headers are capture/bpf_darwin.py's, declared once from xnu; the live
    capture reads the same fields with arrays (capture/darwin.py: pktap_block)
    and is tested against this, which also reads PKTAP capture files.
    """
    if end - off < V2_SIZE:
        raise Malformed("truncated PKTAP header")
    flags = int.from_bytes(buf[off + k.PTH_FLAGS_AT : off + k.PTH_FLAGS_AT + 4], "little")
    if flags & k.PTH_FLAG_V2_HDR:
        v2 = k.PktapV2Header.from_buffer_copy(buf, off)
        length, dlt, pid, epid = v2.pth_length, v2.pth_dlt, v2.pth_pid, v2.pth_e_pid
        if length < V2_SIZE or off + length > end:
            raise Malformed("PKTAP v2 header length")

        def string_at(at: int) -> str | None:
            return _c_string(buf[off + at : off + length]) if 0 < at < length else None

        ifname = string_at(v2.pth_ifname_offset)
        comm, ecomm = string_at(v2.pth_comm_offset), string_at(v2.pth_e_comm_offset)
    else:
        length = int.from_bytes(buf[off : off + 4], "little")
        if length < V1_FIELDS_END or off + length > end:
            raise Malformed("PKTAP header length")
        # a kernel writes a prefix of today's header: only fields below pth_length are read
        v1 = k.PktapHeader.from_buffer_copy(bytes(buf[off : off + length]).ljust(V1_SIZE, b"\0"))
        dlt, pid, epid = v1.pth_dlt, v1.pth_pid, v1.pth_epid
        ifname, comm, ecomm = (_c_string(v1.pth_ifname), _c_string(v1.pth_comm),
                               _c_string(v1.pth_ecomm))  # fmt: skip
    if flags & k.PTH_FLAG_PROC_DELEGATED and epid > 0:
        pid, comm = epid, ecomm  # the app a daemon acted for
    direction = (
        Direction.RX
        if flags & k.PTH_FLAG_DIR_IN
        else Direction.TX
        if flags & k.PTH_FLAG_DIR_OUT
        else Direction.UNKNOWN
    )
    inner = _PKTAP_INNER.get(dlt)
    if inner is None:
        return Link(off + length, 0, direction, -1, ifname, pid if pid >= 0 else -1, comm)
    link = inner(buf, off + length, end)
    return Link(link.l3, link.ethertype, direction, -1, ifname, pid if pid >= 0 else -1, comm)


LINK_DECODERS: dict[int, LinkDecoder] = {
    lt.LINKTYPE_NULL: _null,
    lt.LINKTYPE_ETHERNET: _ethernet,
    lt.LINKTYPE_RAW: _raw,
    lt.LINKTYPE_DLT_RAW_12: _raw,
    lt.LINKTYPE_DLT_RAW_14: _raw,
    lt.LINKTYPE_LOOP: _loop,
    lt.LINKTYPE_LINUX_SLL: _sll,
    lt.LINKTYPE_LINUX_SLL2: _sll2,
    lt.LINKTYPE_IPV4: _ipv4_only,
    lt.LINKTYPE_IPV6: _ipv6_only,
    lt.LINKTYPE_PKTAP: _pktap,
    lt.LINKTYPE_USER2_PKTAP: _pktap,
}
# The frame inside a PKTAP record is named by a DLT value, not a LINKTYPE.
_PKTAP_INNER: dict[int, LinkDecoder] = {0: _null, 1: _ethernet, 12: _raw}


def decode_record(buf: bytes, off: int, caplen: int, wirelen: int, linktype: int) -> Packet | None:
    link_decoder = LINK_DECODERS.get(linktype)
    if link_decoder is None:
        return None
    end = off + caplen
    link = link_decoder(buf, off, end)
    wire_l3 = wirelen - (link.l3 - off)
    if link.ethertype == ETHERTYPE_IPV4:
        return _ipv4(buf, link, end, wire_l3)
    if link.ethertype == ETHERTYPE_IPV6:
        return _ipv6(buf, link, end, wire_l3)
    return None


def _ipv4(buf: bytes, link: Link, end: int, wire_l3: int) -> Packet:
    l3 = link.l3
    if end - l3 < IPV4.size:
        raise Malformed("truncated IPv4 header")
    vihl, _tos, total, ident, fragment, _ttl, proto, _sum, src, dst = IPV4.struct.unpack_from(
        buf, l3
    )
    header = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or header < IPV4.size:
        raise Malformed("bad IPv4 version or header length")
    if l3 + header > end:
        raise Malformed("truncated IPv4 options")
    if total == 0 and proto in (IPPROTO_TCP, IPPROTO_UDP):
        total = wire_l3  # TSO / BIG TCP: the length field is left for the NIC (as tcpdump)
    if total < header or total > wire_l3:
        raise Malformed("IPv4 total length disagrees with the packet")
    offset = fragment & 0x1FFF
    fragment_id = ident if offset or fragment & 0x2000 else -1
    src, dst = V4_MAPPED_PREFIX | src, V4_MAPPED_PREFIX | dst
    if offset:
        return _portless(link, proto, src, dst, total, fragment_id)
    return _transport(buf, link, proto, src, dst, total, l3 + header, end, fragment_id)


def _ipv6(buf: bytes, link: Link, end: int, wire_l3: int) -> Packet:
    l3 = link.l3
    if end - l3 < IPV6.size:
        raise Malformed("truncated IPv6 header")
    vtcfl, payload, next_header, _hlim, s_hi, s_lo, d_hi, d_lo = IPV6.struct.unpack_from(buf, l3)
    if vtcfl >> 28 != 6:
        raise Malformed("bad IPv6 version")
    src, dst = (s_hi << 64) | s_lo, (d_hi << 64) | d_lo
    pos = l3 + IPV6.size
    jumbo: int | None = None
    fragment_id = -1
    later_fragment = False
    truncated = False
    first_header = next_header
    for _ in range(MAX_IPV6_HEADERS):
        if next_header not in IPV6_EXTENSION_HEADERS:
            break
        if pos + 8 > end:
            truncated = True
            break
        if next_header == IPV6_FRAGMENT_HEADER:
            nxt, _r, offset_flags, ident = IPV6_FRAGMENT.struct.unpack_from(buf, pos)
            fragment_id = ident
            later_fragment = offset_flags >> 3 != 0
            length = IPV6_FRAGMENT.size
        elif next_header == IPV6_AUTH_HEADER:
            nxt, length = buf[pos], (buf[pos + 1] + 2) * 4
        else:
            nxt, length = buf[pos], (buf[pos + 1] + 1) * 8
            if next_header == IPV6_HOP_BY_HOP and pos == l3 + IPV6.size:
                jumbo = _jumbo_option(buf, pos + 2, min(pos + length, end))
        pos += length
        next_header = nxt
        if later_fragment:
            break
    else:
        if next_header in IPV6_EXTENSION_HEADERS:
            raise Malformed("too many IPv6 extension headers")
    if payload == 0:
        if jumbo is not None:
            total = IPV6.size + jumbo
        elif first_header == IPV6_HOP_BY_HOP:
            raise Malformed("IPv6 jumbogram without a jumbo payload option")
        elif first_header in (IPPROTO_TCP, IPPROTO_UDP) and wire_l3 > 0xFFFF:
            total = wire_l3  # BIG TCP without the hop-by-hop header (as tcpdump)
        else:
            total = IPV6.size  # an empty payload: any extension header is malformed below
    else:
        total = IPV6.size + payload
    if total > wire_l3 or pos - l3 > total:
        raise Malformed("IPv6 payload length disagrees with the packet")
    if later_fragment or truncated:
        return _portless(link, next_header, src, dst, total, fragment_id)
    return _transport(buf, link, next_header, src, dst, total, pos, end, fragment_id)


def tcp_timestamps(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """TSval and TSecr from the TCP options between `pos` and `end`, or (-1, -1)."""
    while pos < end:
        kind = buf[pos]
        if kind == TCP_OPTION_END:
            break
        if kind == TCP_OPTION_NOP:
            pos += 1
            continue
        if pos + 2 > end or buf[pos + 1] < 2:
            break
        length = buf[pos + 1]
        if kind == TCP_OPTION_TIMESTAMP and length == 10 and pos + 10 <= end:
            return int.from_bytes(buf[pos + 2 : pos + 6], "big"), int.from_bytes(
                buf[pos + 6 : pos + 10], "big"
            )
        pos += length
    return -1, -1


def _jumbo_option(buf: bytes, pos: int, end: int) -> int | None:
    while pos < end:
        kind = buf[pos]
        if kind == 0:  # Pad1
            pos += 1
            continue
        if pos + 2 > end:
            return None
        length = buf[pos + 1]
        if kind == IPV6_JUMBO_OPTION and length == 4 and pos + 6 <= end:
            return int.from_bytes(buf[pos + 2 : pos + 6], "big")
        pos += 2 + length
    return None


def _portless(link: Link, proto: int, src: int, dst: int, total: int, fragment_id: int) -> Packet:
    return Packet(
        link.direction, link.ifindex, link.ifname, link.pid, link.comm,
        proto, src, dst, 0, 0, total, False, 0, 0, 0, 0, -1, fragment_id,
    )  # fmt: skip


def _transport(
    buf: bytes,
    link: Link,
    proto: int,
    src: int,
    dst: int,
    total: int,
    l4: int,
    end: int,
    fragment_id: int,
) -> Packet:
    l4_length = total - (l4 - link.l3)
    captured = end - l4
    sport = dport = flags = seq = ack = 0
    payload_length, payload_offset = 0, -1
    if proto in (IPPROTO_TCP, IPPROTO_UDP) and _PORTS.size <= captured < _MIN_HEADER[proto]:
        if l4_length < _MIN_HEADER[proto]:
            raise Malformed("transport header longer than its packet")
        sport, dport = _PORTS.unpack_from(buf, l4)  # ports captured, the rest of the header not
        return Packet(
            link.direction, link.ifindex, link.ifname, link.pid, link.comm,
            proto, src, dst, sport, dport, total, True, 0, 0, 0,
            l4_length - _MIN_HEADER[proto], -1, fragment_id,
        )  # fmt: skip
    if proto == IPPROTO_TCP:
        if l4_length < TCP.size:
            raise Malformed("TCP segment shorter than its header")
        if captured < TCP.size:
            return _portless(link, proto, src, dst, total, fragment_id)
        sport, dport, seq, ack, data_offset, flags, window, _c, _u = TCP.struct.unpack_from(buf, l4)
        header = (data_offset >> 4) * 4
        if header < TCP.size or header > l4_length:
            raise Malformed("bad TCP header length")
        payload_length = l4_length - header
        payload_offset = l4 + header if l4 + header < end else -1
        tsval, tsecr = tcp_timestamps(buf, l4 + TCP.size, min(l4 + header, end))
        return Packet(
            link.direction, link.ifindex, link.ifname, link.pid, link.comm,
            proto, src, dst, sport, dport, total, True, flags, seq, ack,
            payload_length, payload_offset, fragment_id, window, tsval, tsecr,
        )  # fmt: skip
    if proto == IPPROTO_UDP:
        if l4_length < UDP.size:
            raise Malformed("UDP datagram shorter than its header")
        if captured < UDP.size:
            return _portless(link, proto, src, dst, total, fragment_id)
        sport, dport, _length, _sum = UDP.struct.unpack_from(buf, l4)
        payload_length = l4_length - UDP.size
        payload_offset = l4 + UDP.size if l4 + UDP.size < end else -1
    return Packet(
        link.direction, link.ifindex, link.ifname, link.pid, link.comm,
        proto, src, dst, sport, dport, total, True, flags, seq, ack,
        payload_length, payload_offset, fragment_id,
    )  # fmt: skip
