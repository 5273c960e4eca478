"""Linux interfaces: names, kinds, addresses, state and 64-bit counters.

Counters come from /proc/net/dev (through psutil), which the kernel keeps
64-bit; the kind is read from sysfs, whose root is a parameter for tests.
"""

from __future__ import annotations

import os
import socket

import psutil

from netoproc.model import InterfaceInfo

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun, wireguard
ARPHRD_TUNNELS = {768, 769, 776, 778, 823}  # ipip, ip6ip6, sit, gre, ip6gre


def interface_kind(name: str, sys_root: str = "/sys/class/net") -> str:
    """A friendly kind for an interface, from what sysfs says about it."""
    base = f"{sys_root}/{name}"

    def has(entry: str) -> bool:
        return os.path.exists(f"{base}/{entry}")

    try:
        with open(f"{base}/type") as f:
            hw_type = int(f.read().strip())
    except (OSError, ValueError):
        return "Unknown"
    if hw_type == ARPHRD_LOOPBACK:
        return "Loopback"
    if has("wireless") or has("phy80211"):
        return "Wi-Fi"
    if has("bridge"):
        return "Bridge"
    if has("tun_flags") or hw_type == ARPHRD_NONE:
        return "VPN"
    if hw_type in ARPHRD_TUNNELS:
        return "Tunnel"
    if hw_type == ARPHRD_ETHER:
        virtual = "/virtual/" in os.path.realpath(base)
        return "Virtual Ethernet" if virtual else "Ethernet"
    return "Other"


def read_interfaces(sys_root: str = "/sys/class/net") -> list[InterfaceInfo]:
    counters = psutil.net_io_counters(pernic=True)
    stats = psutil.net_if_stats()
    addresses = psutil.net_if_addrs()
    found = []
    for name, io in counters.items():
        addrs = addresses.get(name, [])
        found.append(
            InterfaceInfo(
                name=name,
                kind=interface_kind(name, sys_root),
                up=bool(stats[name].isup) if name in stats else False,
                ipv4=tuple(a.address for a in addrs if a.family == socket.AF_INET),
                ipv6=tuple(a.address for a in addrs if a.family == socket.AF_INET6),
                rx_bytes=io.bytes_recv,
                tx_bytes=io.bytes_sent,
                rx_packets=io.packets_recv,
                tx_packets=io.packets_sent,
                rx_errors=io.errin,
                tx_errors=io.errout,
            )
        )
    return found
