"""macOS interface counters: the `net.link.generic.ifalldata` sysctl, parsed.

`{CTL_NET, PF_LINK, NETLINK_GENERIC, IFMIB_IFALLDATA, 0, IFDATA_GENERAL}`
returns one `struct ifmibdata` per interface with full 64-bit counters
(`if_data64`), unlike getifaddrs and NET_RT_IFLIST2, which third-party
programs get truncated to 32 bits and rounded to 1 KiB (docs/MACOS.md §6).

Layouts (xnu-11417.101.15): `struct ifmibdata` and the MIB numbers in
`bsd/net/if_mib.h`; `struct if_data64` (`#pragma pack(4)`, `timeval32` on
LP64) in `bsd/net/if_var.h`; filled by `make_ifmibdata` in
`bsd/net/if_mib.c`, which writes an all-zero record for an interface that
is detaching. `IFF_*` in `bsd/net/if.h`, `IFT_*` in `bsd/net/if_types.h`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from netoproc.platform.darwin_structs import KernelDataError, Packed4, Struct

CTL_NET = 4
PF_LINK = 18
NETLINK_GENERIC = 0
IFMIB_IFALLDATA = 3
IFDATA_GENERAL = 1
IFALLDATA_MIB = (CTL_NET, PF_LINK, NETLINK_GENERIC, IFMIB_IFALLDATA, 0, IFDATA_GENERAL)
IFNAMSIZ = 16
IFF_UP = 0x1


class IfData64(Packed4):
    _fields_ = (
        ("ifi_type", ctypes.c_uint8),
        ("ifi_typelen", ctypes.c_uint8),
        ("ifi_physical", ctypes.c_uint8),
        ("ifi_addrlen", ctypes.c_uint8),
        ("ifi_hdrlen", ctypes.c_uint8),
        ("ifi_recvquota", ctypes.c_uint8),
        ("ifi_xmitquota", ctypes.c_uint8),
        ("ifi_unused1", ctypes.c_uint8),
        ("ifi_mtu", ctypes.c_uint32),
        ("ifi_metric", ctypes.c_uint32),
        *(
            (name, ctypes.c_uint64)
            for name in (
                "ifi_baudrate", "ifi_ipackets", "ifi_ierrors", "ifi_opackets", "ifi_oerrors",
                "ifi_collisions", "ifi_ibytes", "ifi_obytes", "ifi_imcasts", "ifi_omcasts",
                "ifi_iqdrops", "ifi_noproto",
            )
        ),
        ("ifi_recvtiming", ctypes.c_uint32),
        ("ifi_xmittiming", ctypes.c_uint32),
        ("ifi_lastchange_sec", ctypes.c_int32),  # struct timeval32
        ("ifi_lastchange_usec", ctypes.c_int32),
    )  # fmt: skip


class IfMibData(Struct):
    _fields_ = (
        ("ifmd_name", ctypes.c_char * IFNAMSIZ),
        ("ifmd_pcount", ctypes.c_uint),
        ("ifmd_flags", ctypes.c_uint),
        ("ifmd_snd_len", ctypes.c_uint),
        ("ifmd_snd_maxlen", ctypes.c_uint),
        ("ifmd_snd_drops", ctypes.c_uint),
        ("ifmd_filler", ctypes.c_uint * 4),
        ("ifmd_data", IfData64),
    )


@dataclass(frozen=True, slots=True)
class IfCounters:
    name: str
    up: bool
    iftype: int  # IFT_*
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errors: int
    tx_errors: int


def parse_ifalldata(buf: bytes) -> list[IfCounters]:
    """Every attached interface in an `ifalldata` buffer."""
    size = ctypes.sizeof(IfMibData)
    if len(buf) % size:
        raise KernelDataError(f"ifalldata: {len(buf)} bytes is not a whole number of {size}")
    found = []
    for i, mib in enumerate((IfMibData * (len(buf) // size)).from_buffer_copy(buf)):
        if not mib.ifmd_name:
            continue  # detaching: the kernel wrote an empty record
        if len(mib.ifmd_name) == IFNAMSIZ:  # snprintf always leaves a NUL
            raise KernelDataError(f"ifalldata: record {i} has no terminated interface name")
        data = mib.ifmd_data
        found.append(
            IfCounters(
                name=mib.ifmd_name.decode("utf-8", "backslashreplace"),
                up=bool(mib.ifmd_flags & IFF_UP),
                iftype=data.ifi_type,
                rx_bytes=data.ifi_ibytes,
                tx_bytes=data.ifi_obytes,
                rx_packets=data.ifi_ipackets,
                tx_packets=data.ifi_opackets,
                rx_errors=data.ifi_ierrors,
                tx_errors=data.ifi_oerrors,
            )
        )
    return found
