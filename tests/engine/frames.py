"""Minimal raw-IP frame builders, a batch factory and socket rows for the engine tests.

Frames are raw IP (LINKTYPE_RAW) so every byte of a frame is an IP-layer
byte: a packet's size is what the test says it is. Batches go through the
real record block and columnar decoder, as captured packets do.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from netoproc.capture.records import LINKTYPE_RAW, InterfaceTable, build_block
from netoproc.decode.batch import PacketBatch
from netoproc.decode.columnar import decode_block
from netoproc.model import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Direction,
    ProcessRef,
    SocketInfo,
    TcpKernelInfo,
    parse_addr,
)

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IPV4_HEADER, IPV6_HEADER, TCP_HEADER, UDP_HEADER, ICMP_HEADER = 20, 40, 20, 8, 8
TCP4, UDP4, TCP6 = IPV4_HEADER + TCP_HEADER, IPV4_HEADER + UDP_HEADER, IPV6_HEADER + TCP_HEADER
ETH0, LO = 1, 2
INTERFACES = {ETH0: "eth0", LO: "lo"}
RX, TX, UNKNOWN = Direction.RX, Direction.TX, Direction.UNKNOWN


def tcp(sport: int, dport: int, flags: int = ACK, payload: int = 0) -> tuple[int, bytes]:
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    return IPPROTO_TCP, header + bytes(payload)


def udp(sport: int, dport: int, payload: int = 0) -> tuple[int, bytes]:
    return IPPROTO_UDP, struct.pack("!HHHH", sport, dport, UDP_HEADER + payload, 0) + bytes(payload)


def icmp_echo(payload: int = 0) -> tuple[int, bytes]:
    return IPPROTO_ICMP, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + bytes(payload)


def ip(src: str, dst: str, segment: tuple[int, bytes], *, ident: int = 0, frag: int = 0) -> bytes:
    """An IPv4 or IPv6 packet (by the address family) carrying `segment`.

    `frag` is the IPv4 flags+offset field (0x2000: more fragments; offset in 8-byte units).
    IPv6 fragments are not needed by the tests.
    """
    proto, body = segment
    if ipaddress.ip_address(src).version == 4:
        total = IPV4_HEADER + len(body)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            ident,
            frag,
            64,
            proto,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
        return header + body
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(body),
        proto,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + body


@dataclass(frozen=True)
class Pkt:
    frame: bytes
    ts: float = 0.0
    direction: int = UNKNOWN
    iface: int = ETH0
    pid: int = -1


def batch(*packets: Pkt, names: Mapping[int, str] | None = None) -> PacketBatch:
    block = build_block(
        [p.frame for p in packets],
        ts=[p.ts for p in packets],
        linktype=LINKTYPE_RAW,
        interfaces=InterfaceTable(INTERFACES),
        iface=[p.iface for p in packets],
        direction=[int(p.direction) for p in packets],
        pid=[p.pid for p in packets],
        process_names=names,
    )
    return decode_block(block)


def addr(text: str) -> int:
    return parse_addr(text)


def sock(
    proto: int,
    local: str,
    lport: int,
    remote: str | None = None,
    rport: int = 0,
    state: str = "ESTABLISHED",
    *,
    pid: int | None = None,
    name: str = "",
    fd: int | None = None,
    tcp_info: TcpKernelInfo | None = None,
) -> SocketInfo:
    """A socket-table row; `remote` None is an unconnected socket."""
    return SocketInfo(
        proto=proto,
        laddr=parse_addr(local),
        lport=lport,
        raddr=parse_addr(remote) if remote else 0,
        rport=rport,
        state=state,
        owner=ProcessRef(pid, name or f"p{pid}") if pid is not None else None,
        fd=fd,
        tcp=tcp_info,
    )
