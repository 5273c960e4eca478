"""Classic BPF programs, assembled from a readable listing with labels.

The Linux capture attaches one to its packet socket: headers only for most
packets, whole packets to or from port 53 (the DNS observatory reads them),
nothing for non-IP frames. The program's return value is the snap length.
On a SOCK_DGRAM packet socket, offset 0 is the network header.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from netoproc.model import DNS_PORT

# opcodes (linux/bpf_common.h, linux/filter.h)
LD_H_ABS = 0x28
LD_B_ABS = 0x30
LD_H_IND = 0x48
LD_B_IND = 0x50
LDX_B_MSH = 0xB1
AND_K = 0x54
JEQ_K = 0x15
JSET_K = 0x45
RET_K = 0x06
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4

SOCK_FILTER = struct.Struct("=HBBI")

# Snap lengths: the largest IPv4 + TCP headers (60 + 60) and room for IPv6
# extension headers; whole packets are at most 256 KiB (a GSO super-packet).
HEADERS_V4 = 128
HEADERS_V6 = 256
WHOLE = 0x40000

Instruction = tuple[str | None, int, int, str | int, str | int]  # label, code, k, jt, jf


def assemble(listing: Sequence[Instruction]) -> bytes:
    """Encode instructions; jump targets may be labels (resolved relative)."""
    labels = {label: i for i, (label, *_rest) in enumerate(listing) if label}
    out = bytearray()
    for i, (_label, code, k, jt, jf) in enumerate(listing):

        def target(t: str | int, here: int = i) -> int:
            return labels[t] - here - 1 if isinstance(t, str) else t

        out += SOCK_FILTER.pack(code, target(jt), target(jf), k & 0xFFFFFFFF)
    return bytes(out)


def headers_and_dns(keep_dns: bool = True) -> bytes:
    """IP headers of every packet; all of a DNS packet when `keep_dns`."""
    dns = "whole" if keep_dns else "v4_headers"
    dns6 = "whole" if keep_dns else "v6_headers"
    listing: list[Instruction] = [
        (None, LD_H_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL, 0, 0),
        (None, JEQ_K, 0x0800, "v4", 0),
        (None, JEQ_K, 0x86DD, "v6", "drop"),
        ("v4", LD_B_ABS, 9, 0, 0),
        (None, JEQ_K, 17, "v4_ports", 0),
        (None, JEQ_K, 6, "v4_ports", "v4_headers"),
        ("v4_ports", LD_H_ABS, 6, 0, 0),
        (None, JSET_K, 0x1FFF, "v4_headers", 0),  # a later fragment has no ports
        (None, LDX_B_MSH, 0, 0, 0),
        (None, LD_H_IND, 0, 0, 0),
        (None, JEQ_K, DNS_PORT, dns, 0),
        (None, LD_H_IND, 2, 0, 0),
        (None, JEQ_K, DNS_PORT, dns, "v4_headers"),
        ("v6", LD_B_ABS, 6, 0, 0),
        (None, JEQ_K, 17, "v6_ports", 0),
        (None, JEQ_K, 6, "v6_ports", "v6_headers"),
        ("v6_ports", LD_H_ABS, 40, 0, 0),
        (None, JEQ_K, DNS_PORT, dns6, 0),
        (None, LD_H_ABS, 42, 0, 0),
        (None, JEQ_K, DNS_PORT, dns6, "v6_headers"),
        ("v4_headers", RET_K, HEADERS_V4, 0, 0),
        ("v6_headers", RET_K, HEADERS_V6, 0, 0),
        ("whole", RET_K, WHOLE, 0, 0),
        ("drop", RET_K, 0, 0, 0),
    ]
    return assemble(listing)


def first_packets() -> bytes:
    """Packets that open something worth attributing at once: outgoing TCP SYNs
    and outgoing DNS queries (headers only). Their senders may be gone by the
    time the ring hands the packets over."""
    listing: list[Instruction] = [
        (None, LD_H_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE, 0, 0),
        (None, JEQ_K, PACKET_OUTGOING, 0, "drop"),
        (None, LD_H_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL, 0, 0),
        (None, JEQ_K, 0x0800, "v4", 0),
        (None, JEQ_K, 0x86DD, "v6", "drop"),
        ("v4", LD_H_ABS, 6, 0, 0),
        (None, JSET_K, 0x1FFF, "drop", 0),
        (None, LDX_B_MSH, 0, 0, 0),
        (None, LD_B_ABS, 9, 0, 0),
        (None, JEQ_K, 17, "v4_udp", 0),
        (None, JEQ_K, 6, "v4_tcp", "drop"),
        ("v4_udp", LD_H_IND, 2, 0, 0),
        (None, JEQ_K, DNS_PORT, "keep", "drop"),
        ("v4_tcp", LD_B_IND, 13, 0, 0),
        (None, AND_K, 0x12, 0, 0),  # SYN without ACK
        (None, JEQ_K, 0x02, "keep", "drop"),
        ("v6", LD_B_ABS, 6, 0, 0),
        (None, JEQ_K, 17, "v6_udp", 0),
        (None, JEQ_K, 6, "v6_tcp", "drop"),
        ("v6_udp", LD_H_ABS, 42, 0, 0),
        (None, JEQ_K, DNS_PORT, "keep", "drop"),
        ("v6_tcp", LD_B_ABS, 53, 0, 0),
        (None, AND_K, 0x12, 0, 0),
        (None, JEQ_K, 0x02, "keep", "drop"),
        ("keep", RET_K, HEADERS_V4, 0, 0),
        ("drop", RET_K, 0, 0, 0),
    ]
    return assemble(listing)
