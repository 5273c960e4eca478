"""Small value types shared by every layer: directions, flow keys, processes, sockets.

Addresses are 128-bit integers. IPv4 addresses are held IPv4-mapped
(``::ffff:a.b.c.d``), so one representation serves both families, both
kernels' socket tables (dual-stack sockets report mapped addresses) and the
packet decoder's two 64-bit halves. Each is a 32-44 byte object; a host's
thousands of sockets and flows share a few addresses, so they are interned
(`address`): one object per value in use.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass
from typing import NamedTuple

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

DNS_PORT = 53  # the DNS observatory reads whole packets to or from this port

PROTO_NAMES = {
    IPPROTO_ICMP: "ICMP",
    IPPROTO_TCP: "TCP",
    IPPROTO_UDP: "UDP",
    IPPROTO_ICMPV6: "ICMPv6",
}

V4_MAPPED_PREFIX = 0xFFFF << 32
_V4_MASK = (1 << 32) - 1


class Direction(enum.IntEnum):
    """Which way a packet went, seen from the local host."""

    UNKNOWN = 0
    RX = 1
    TX = 2


class UnknownReason(enum.StrEnum):
    """Why traffic could not be given to a process."""

    PENDING = "not looked up yet"
    NO_SOCKET = "no local socket"
    CLOSED = "socket closed before lookup"
    NO_OWNER = "socket has no visible owner"
    NOT_SOCKET = "not socket traffic (ICMP or another protocol)"
    NO_PORTS = "fragment or truncated header without ports"
    NO_PROCESS_INFO = "capture carries no process information"
    FLOOD = "flood or scan: no local socket"
    NAT_NO_ENTRY = "no local socket, and no address translation for it (conntrack)"
    NAT_NO_OWNER = "address translated to a socket no process was seen using"
    NAT_NEEDS_EBPF = "address translated to another network namespace (needs eBPF)"
    NAT_UNASKED = (
        "no local socket; conntrack could not be asked (CAP_NET_ADMIN, nf_conntrack_netlink)"
    )
    TABLE_FULL = "flow table full"


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, f"IP{proto}")


_ADDRESSES: dict[int, int] = {}
ADDRESSES_KEPT = 1 << 16  # then the table starts again: a scan brings each address once


def address(addr: int) -> int:
    """The one object for this address value (threads may race: at worst, two)."""
    kept = _ADDRESSES.get(addr)
    if kept is None:
        if len(_ADDRESSES) >= ADDRESSES_KEPT:
            _ADDRESSES.clear()
        kept = _ADDRESSES[addr] = addr
    return kept


def v4(addr: int) -> int:
    """The 128-bit form of a 32-bit IPv4 address."""
    return address(V4_MAPPED_PREFIX | addr)


def is_v4(addr: int) -> bool:
    return addr >> 32 == 0xFFFF


def addr_from_bytes(raw: bytes) -> int:
    """A 4- or 16-byte network-order address as a 128-bit integer."""
    value = int.from_bytes(raw, "big")
    return v4(value) if len(raw) == 4 else address(value)


def format_addr(addr: int) -> str:
    if is_v4(addr):
        return socket.inet_ntop(socket.AF_INET, (addr & _V4_MASK).to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big"))


def parse_addr(text: str) -> int:
    """Parse a textual IPv4 or IPv6 address; raises ValueError."""
    try:
        return addr_from_bytes(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        return addr_from_bytes(socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        raise ValueError(f"not an IP address: {text!r}") from None


def format_endpoint(addr: int, port: int) -> str:
    text = format_addr(addr)
    return f"{text}:{port}" if is_v4(addr) else f"[{text}]:{port}"


class FlowKey(NamedTuple):
    """One flow: a local socket's view of a conversation on one interface."""

    iface: str
    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A process as shown to people: pid, short name and user, and its `group`:
    the container or systemd unit it runs in (`docker/web`, `nginx.service`;
    "" for none or not known). A process the kernel reports in another cgroup
    is another ProcessRef from then on, so each group keeps the traffic it saw."""

    pid: int
    name: str
    user: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class OwnerSighting:
    """A process seen using a socket, as the kernel told it (Linux eBPF): the
    socket's endpoints then, and who sent or received through it.

    `foreign`: the socket lives in another network namespace than netoproc's
    (a container behind a veth), so its local endpoint is a remote one here.
    """

    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    process: ProcessRef
    foreign: bool = False
    cgroup: int = 0

    @property
    def connected(self) -> bool:
        return self.rport != 0 or self.raddr not in (0, V4_MAPPED_PREFIX)


@dataclass(frozen=True, slots=True)
class NatEntry:
    """A connection the kernel translates (a conntrack entry, Linux): its tuples
    (source address, source port, destination address, destination port) as the
    initiator sent it (`orig`) and as the responder answers it (`reply`)."""

    proto: int
    orig: tuple[int, int, int, int]
    reply: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class TcpKernelInfo:
    """Connection health as the kernel's TCP stack reports it.

    `total_retrans` is None where the kernel keeps no such count for other
    processes' sockets (macOS pcblist_n).
    """

    rtt_ms: float
    rttvar_ms: float
    total_retrans: int | None


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """A socket from the operating system's socket table, with its owner if known.

    `state` is a TCP state name, or "UNCONN" for unconnected UDP. A zero
    remote address and port mean the socket is not connected.
    """

    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    state: str
    inode: int = 0
    uid: int = -1
    owner: ProcessRef | None = None
    fd: int | None = None
    tcp: TcpKernelInfo | None = None

    @property
    def connected(self) -> bool:
        return self.rport != 0 or self.raddr not in (0, V4_MAPPED_PREFIX)


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """An interface as the OS reports it now: identity, state and 64-bit counters.

    Counters are cumulative since the interface appeared; the engine turns
    them into rates and totals since netoproc started.
    """

    name: str
    kind: str  # "Ethernet", "Wi-Fi", "Loopback", "VPN", "Bridge", "Virtual", "Tunnel", ...
    up: bool
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
