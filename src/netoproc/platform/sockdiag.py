"""Linux NETLINK_SOCK_DIAG: the kernel's TCP and UDP socket tables.

Pure builders and parsers for the wire format (uapi linux/inet_diag.h,
linux/sock_diag.h, linux/tcp.h) plus `SockDiag`, a thin socket wrapper.
Two questions are asked: a dump of every socket of a protocol and family,
and a lookup of the one socket the kernel itself would deliver a given
4-tuple to (connected, else bound, else wildcard: the kernel's own search,
which also answers with TIME_WAIT and not-yet-accepted sockets).

Addresses are returned in the 128-bit form of `model` (IPv4 mapped).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from netoproc.model import IPPROTO_TCP, V4_MAPPED_PREFIX, TcpKernelInfo, address, v4

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF

NLMSGHDR = struct.Struct("=IHHII")
# family, protocol, ext, pad, states, then inet_diag_sockid
REQ_V2 = struct.Struct("=BBBxI")
SOCKID = struct.Struct("!HH16s16s")  # ports and addresses are big-endian
SOCKID_TAIL = struct.Struct("=III")  # interface, cookie[2]
DIAG_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans
DIAG_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
DIAG_MSG_SIZE = DIAG_MSG.size + SOCKID.size + SOCKID_TAIL.size + DIAG_MSG_TAIL.size  # 72
RTATTR = struct.Struct("=HH")
# struct tcp_info: tcpi_rtt and tcpi_rttvar (µs) at 68/72, tcpi_total_retrans at 100
TCP_INFO_RTT = struct.Struct("=II")
TCP_INFO_RTT_AT = 68
TCP_INFO_TOTAL_RETRANS_AT = 100

TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}


class SockDiagError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DiagSocket:
    """One inet_diag_msg, addresses in 128-bit form."""

    family: int
    proto: int
    state: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    uid: int
    inode: int
    tcp: TcpKernelInfo | None = None

    @property
    def state_name(self) -> str:
        if self.proto != IPPROTO_TCP:
            # UDP reports TCP_ESTABLISHED when connected and TCP_CLOSE when not
            return "ESTABLISHED" if self.state == 1 else "UNCONN"
        return TCP_STATES.get(self.state, f"STATE{self.state}")


def _addr(family: int, raw: bytes) -> int:
    if family == socket.AF_INET:
        return v4(int.from_bytes(raw[:4], "big"))
    return address(int.from_bytes(raw, "big"))


def _addr_bytes(family: int, addr: int) -> bytes:
    if family == socket.AF_INET:
        return (addr & 0xFFFFFFFF).to_bytes(4, "big") + bytes(12)
    return addr.to_bytes(16, "big")


def family_of(addr: int) -> int:
    return socket.AF_INET if addr >> 32 == V4_MAPPED_PREFIX >> 32 else socket.AF_INET6


def dump_request(family: int, proto: int, seq: int = 1) -> bytes:
    ext = 1 << (INET_DIAG_INFO - 1) if proto == IPPROTO_TCP else 0
    body = (
        REQ_V2.pack(family, proto, ext, ALL_STATES)
        + SOCKID.pack(0, 0, bytes(16), bytes(16))
        + SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    )
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                           NLM_F_REQUEST | NLM_F_DUMP, seq, 0)  # fmt: skip
    return header + body


def lookup_request(
    proto: int, laddr: int, lport: int, raddr: int, rport: int, seq: int = 1
) -> bytes:
    """Ask for the socket the kernel would deliver this 4-tuple to.

    For TCP the request's source is the local side; UDP's handler passes the
    two sides to its lookup the other way round ("swapped for historical
    reasons" in net/ipv4/udp_diag.c), so they are swapped here.
    """
    family = family_of(laddr)
    ext = 1 << (INET_DIAG_INFO - 1) if proto == IPPROTO_TCP else 0
    if proto == IPPROTO_TCP:
        src, sport, dst, dport = laddr, lport, raddr, rport
    else:
        src, sport, dst, dport = raddr, rport, laddr, lport
    body = (
        REQ_V2.pack(family, proto, ext, ALL_STATES)
        + SOCKID.pack(sport, dport, _addr_bytes(family, src), _addr_bytes(family, dst))
        + SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    )
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
    return header + body


def parse_messages(data: bytes, proto: int) -> Iterator[DiagSocket | int]:
    """Sockets in a netlink reply buffer; yields NLMSG_DONE as 0 and errors as -errno."""
    pos = 0
    while pos + NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > len(data):
            raise SockDiagError("truncated netlink message")
        body = pos + NLMSGHDR.size
        if kind == NLMSG_DONE:
            yield 0
        elif kind == NLMSG_ERROR:
            yield struct.unpack_from("=i", data, body)[0] if length >= NLMSGHDR.size + 4 else -1
        elif kind == SOCK_DIAG_BY_FAMILY:
            yield parse_diag_msg(data, body, pos + length, proto)
        pos += (length + 3) & ~3
    if pos < len(data):  # bytes left over, too few for a header
        raise SockDiagError("truncated netlink header")


def parse_diag_msg(data: bytes, start: int, end: int, proto: int) -> DiagSocket:
    if end - start < DIAG_MSG_SIZE:
        raise SockDiagError("truncated inet_diag_msg")
    family, state, _timer, _retrans = DIAG_MSG.unpack_from(data, start)
    sport, dport, src, dst = SOCKID.unpack_from(data, start + DIAG_MSG.size)
    tail = start + DIAG_MSG.size + SOCKID.size + SOCKID_TAIL.size
    _expires, _rq, _wq, uid, inode = DIAG_MSG_TAIL.unpack_from(data, tail)
    tcp = None
    pos = start + DIAG_MSG_SIZE
    while pos + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, pos)
        if length < RTATTR.size or pos + length > end:
            break
        payload = pos + RTATTR.size
        size = length - RTATTR.size
        if kind == INET_DIAG_INFO and size >= TCP_INFO_TOTAL_RETRANS_AT + 4:
            rtt, rttvar = TCP_INFO_RTT.unpack_from(data, payload + TCP_INFO_RTT_AT)
            retrans = struct.unpack_from("=I", data, payload + TCP_INFO_TOTAL_RETRANS_AT)[0]
            tcp = TcpKernelInfo(rtt / 1000.0, rttvar / 1000.0, retrans)
        pos += (length + 3) & ~3
    return DiagSocket(
        family, proto, state, _addr(family, src), sport, _addr(family, dst), dport, uid, inode, tcp
    )


class SockDiag:
    """A NETLINK_SOCK_DIAG socket. Not thread-safe: one per thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _ask(self, request: bytes, proto: int, *, dump: bool) -> list[DiagSocket]:
        self._sock.send(request)
        found: list[DiagSocket] = []
        while True:
            data = self._sock.recv(1 << 16)
            for item in parse_messages(data, proto):
                if isinstance(item, DiagSocket):
                    found.append(item)
                elif item == 0 or item in (-errno.ENOENT, -errno.EOPNOTSUPP):
                    return found
                else:
                    raise SockDiagError(f"sock_diag: {errno.errorcode.get(-item, -item)}")
            if not dump or not data:
                return found

    def dump(self, family: int, proto: int) -> list[DiagSocket]:
        self._seq += 1
        request = dump_request(family, proto, self._seq)
        return self._ask(request, proto, dump=True)

    def lookup(
        self, proto: int, laddr: int, lport: int, raddr: int, rport: int
    ) -> DiagSocket | None:
        self._seq += 1
        request = lookup_request(proto, laddr, lport, raddr, rport, self._seq)
        found = self._ask(request, proto, dump=False)
        return found[0] if found else None
