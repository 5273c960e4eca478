"""Header layouts as data: one table per header, compiled once for both decoders.

Each layout yields a precompiled `struct.Struct` for the scalar decoder and a
numpy structured dtype for the columnar one, so the two read the same fields
at the same offsets by construction.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# struct format letter -> numpy base type (byte order added per layout)
_NUMPY_TYPES = {"B": "u1", "H": "u2", "I": "u4", "Q": "u8", "i": "i4"}


@dataclass(frozen=True)
class Layout:
    name: str
    fields: tuple[tuple[str, str], ...]
    byte_order: str = "!"  # network order unless the header says otherwise

    @cached_property
    def struct(self) -> struct.Struct:
        return struct.Struct(self.byte_order + "".join(fmt for _, fmt in self.fields))

    @property
    def size(self) -> int:
        return self.struct.size

    def unpack_named(self, buf: bytes, offset: int) -> dict[str, Any]:
        """Field values by name, for rare headers where clarity beats speed."""
        names = (name for name, _ in self.fields)
        return dict(zip(names, self.struct.unpack_from(buf, offset), strict=True))

    @cached_property
    def dtype(self) -> np.dtype[np.void]:
        order = "<" if self.byte_order == "<" else ">"
        parts = []
        for name, fmt in self.fields:
            if fmt.endswith("s"):
                parts.append((name, f"V{int(fmt[:-1])}"))
            elif fmt.endswith("x"):
                parts.append((name, f"V{int(fmt[:-1] or 1)}"))
            else:
                parts.append((name, order + _NUMPY_TYPES[fmt]))
        return np.dtype(parts)


ETHERNET = Layout("ethernet", (("dst", "6s"), ("src", "6s"), ("type", "H")))
VLAN_TAG = Layout("vlan", (("tci", "H"), ("type", "H")))
LINUX_SLL = Layout(
    "linux_sll",
    (("pkttype", "H"), ("hatype", "H"), ("halen", "H"), ("addr", "8s"), ("protocol", "H")),
)
LINUX_SLL2 = Layout(
    "linux_sll2",
    (
        ("protocol", "H"),
        ("reserved", "H"),
        ("ifindex", "I"),
        ("hatype", "H"),
        ("pkttype", "B"),
        ("halen", "B"),
        ("addr", "8s"),
    ),
)
IPV4 = Layout(
    "ipv4",
    (
        ("vihl", "B"),
        ("tos", "B"),
        ("total_length", "H"),
        ("ident", "H"),
        ("fragment", "H"),
        ("ttl", "B"),
        ("protocol", "B"),
        ("checksum", "H"),
        ("src", "I"),
        ("dst", "I"),
    ),
)
IPV6 = Layout(
    "ipv6",
    (
        ("vtcfl", "I"),
        ("payload_length", "H"),
        ("next_header", "B"),
        ("hop_limit", "B"),
        ("src_hi", "Q"),
        ("src_lo", "Q"),
        ("dst_hi", "Q"),
        ("dst_lo", "Q"),
    ),
)
IPV6_FRAGMENT = Layout(
    "ipv6_fragment",
    (("next_header", "B"), ("reserved", "B"), ("offset_flags", "H"), ("ident", "I")),
)
TCP = Layout(
    "tcp",
    (
        ("sport", "H"),
        ("dport", "H"),
        ("seq", "I"),
        ("ack", "I"),
        ("data_offset", "B"),
        ("flags", "B"),
        ("window", "H"),
        ("checksum", "H"),
        ("urgent", "H"),
    ),
)
UDP = Layout("udp", (("sport", "H"), ("dport", "H"), ("length", "H"), ("checksum", "H")))

# Darwin's PKTAP headers are the kernel's structs: capture/bpf_darwin.py declares them.

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})

# IPv6 headers that are followed by another header we must walk through.
IPV6_EXTENSION_HEADERS = frozenset({0, 43, 44, 51, 60, 135, 139, 140, 253, 254})
IPV6_HOP_BY_HOP = 0
IPV6_FRAGMENT_HEADER = 44
IPV6_AUTH_HEADER = 51
IPV6_JUMBO_OPTION = 0xC2
