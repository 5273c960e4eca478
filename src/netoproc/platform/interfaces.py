"""Linux interfaces: names, kinds, addresses, state and 64-bit counters.

Each read is two rtnetlink dumps over a NETLINK_ROUTE socket kept open: the
links (RTM_GETLINK: index, name, flags and the kernel's 64-bit counters,
struct rtnl_link_stats64, the ones /proc/net/dev prints) and the addresses
(RTM_GETADDR). Layouts are the kernel's UAPI: linux/rtnetlink.h,
linux/if_link.h, linux/if_addr.h. The kind is read from sysfs once per
interface; its root is a parameter for tests.
"""

from __future__ import annotations

import os
import socket
import struct

from netoproc.model import InterfaceInfo

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534  # tun, wireguard
ARPHRD_TUNNELS = {768, 769, 776, 778, 823}  # ipip, ip6ip6, sit, gre, ip6gre

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME, IFLA_STATS64 = 3, 23
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
RT_SCOPE_LINK = 253

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, hardware type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
# rtnl_link_stats64 begins: rx/tx packets, rx/tx bytes, rx/tx errors
STATS64 = struct.Struct("=6Q")

Attributes = dict[int, bytes]
Message = tuple[tuple[int, ...], Attributes]  # the fixed header's fields, the attributes


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


def parse_dump(data: bytes, header: struct.Struct) -> tuple[list[Message], bool]:
    """The messages in one datagram of a dump, and whether the dump is done.

    Raises OSError for an error message (its errno), ValueError for a message
    that does not fit."""
    found: list[Message] = []
    at = 0
    while at + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, at)
        if length < NLMSG.size or at + length > len(data):
            raise ValueError("rtnetlink: truncated message")
        body, end = at + NLMSG.size, at + length
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            error = -struct.unpack_from("=i", data, body)[0]
            raise OSError(error, os.strerror(error))
        if kind in (RTM_NEWLINK, RTM_NEWADDR) and body + header.size <= end:
            attrs: Attributes = {}
            pos = body + header.size
            while pos + RTATTR.size <= end:
                size, kind_ = RTATTR.unpack_from(data, pos)
                if size < RTATTR.size or pos + size > end:
                    break
                attrs[kind_] = data[pos + RTATTR.size : pos + size]
                pos += (size + 3) & ~3
            found.append((header.unpack_from(data, body), attrs))
        at += (length + 3) & ~3
    return found, not data  # else the dump goes on in the next datagram


def _address(family: int, scope: int, raw: bytes, interface: str) -> str:
    text = socket.inet_ntop(family, raw)
    # as getnameinfo(3) writes it: a link-local address names its interface
    return f"{text}%{interface}" if family == socket.AF_INET6 and scope == RT_SCOPE_LINK else text


class InterfaceReader:
    """A NETLINK_ROUTE socket, and the kind of each interface met. One thread at a time."""

    def __init__(self, sys_root: str = "/sys/class/net") -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._seq = 0
        self._sys_root = sys_root
        self._kinds: dict[
            tuple[int, str], str
        ] = {}  # (index, name): a renamed one is looked at anew

    def close(self) -> None:
        self._sock.close()

    def _dump(self, request: int, header: struct.Struct) -> list[Message]:
        self._seq += 1
        body = bytes(header.size)  # family AF_UNSPEC, the rest zero: every interface
        flags = NLM_F_REQUEST | NLM_F_DUMP
        self._sock.send(NLMSG.pack(NLMSG.size + len(body), request, flags, self._seq, 0) + body)
        found: list[Message] = []
        done = False
        while not done:
            messages, done = parse_dump(self._sock.recv(1 << 16), header)
            found += messages
        return found

    def read(self) -> list[InterfaceInfo]:
        links = self._dump(RTM_GETLINK, IFINFOMSG)
        names = {index: attrs[IFLA_IFNAME].rstrip(b"\0").decode("utf-8", "backslashreplace")
                 for (_f, _t, index, _fl, _c), attrs in links if IFLA_IFNAME in attrs}  # fmt: skip
        v4: dict[int, list[str]] = {}
        v6: dict[int, list[str]] = {}
        for (family, _prefix, _flags, scope, index), attrs in self._dump(RTM_GETADDR, IFADDRMSG):
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or index not in names:
                continue
            into = v4 if family == socket.AF_INET else v6 if family == socket.AF_INET6 else None
            if into is not None:
                into.setdefault(index, []).append(_address(family, scope, raw, names[index]))
        found = []
        for (_family, _hw, index, flags, _change), attrs in links:
            name = names.get(index)
            if name is None:
                continue
            kind = self._kinds.get((index, name))
            if kind is None:
                kind = self._kinds[(index, name)] = interface_kind(name, self._sys_root)
            counters = attrs.get(IFLA_STATS64, b"")
            rx_packets, tx_packets, rx_bytes, tx_bytes, rx_errors, tx_errors = (
                STATS64.unpack_from(counters) if len(counters) >= STATS64.size else (0,) * 6
            )
            found.append(
                InterfaceInfo(
                    name=name,
                    kind=kind,
                    up=bool(flags & IFF_UP),
                    ipv4=tuple(v4.get(index, ())),
                    ipv6=tuple(v6.get(index, ())),
                    rx_bytes=rx_bytes,
                    tx_bytes=tx_bytes,
                    rx_packets=rx_packets,
                    tx_packets=tx_packets,
                    rx_errors=rx_errors,
                    tx_errors=tx_errors,
                )
            )
        if len(self._kinds) > 2 * len(found) + 64:  # interfaces come and go (containers)
            self._kinds = {k: v for k, v in self._kinds.items() if k in names.items()}
        return found


def read_interfaces(sys_root: str = "/sys/class/net") -> list[InterfaceInfo]:
    """The interfaces now, through a reader of their own."""
    reader = InterfaceReader(sys_root)
    try:
        return reader.read()
    finally:
        reader.close()
