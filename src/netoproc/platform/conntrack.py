"""Address translation as the kernel's connection tracker records it (Linux, read-only).

A flow seen on an interface behind NAT carries translated addresses: a
container behind a masquerading bridge leaves the uplink from the host's
address, and a published port arrives at the host's address. The kernel's
conntrack entry for it holds both tuples: the original (as its initiator
sent it) and the reply (as its responder sees it), from which the engine
finds the socket that really carries the flow (engine/owners.py:
`translated`).

`Conntrack.find` asks ctnetlink for one flow's entry (IPCTNL_MSG_CT_GET with
a tuple: the kernel looks it up by either direction), over a NETLINK_NETFILTER
socket of this network namespace; nothing is ever written. Messages are built
and parsed here with struct, from the kernel's UAPI layout
(linux/netfilter/nfnetlink_conntrack.h).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

from netoproc.model import FlowKey, NatEntry, addr_from_bytes, is_v4

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3

NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big-endian, 0 here)
NLA = struct.Struct("=HH")  # nlattr: length, type
MSG_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
RECV_BYTES = 65536
Tuple = tuple[int, int, int, int]  # source address, source port, destination address, port


class ConntrackError(Exception):
    """A message from the kernel that is not what ctnetlink sends."""


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    header = NLA.pack(NLA.size + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return header + payload + b"\0" * (-len(payload) % 4)


def _tuple_attr(kind: int, proto: int, t: Tuple) -> bytes:
    src, sport, dst, dport = t
    if is_v4(src):
        ips = _attr(CTA_IP_V4_SRC, (src & 0xFFFFFFFF).to_bytes(4, "big")) + _attr(
            CTA_IP_V4_DST, (dst & 0xFFFFFFFF).to_bytes(4, "big")
        )
    else:
        ips = _attr(CTA_IP_V6_SRC, src.to_bytes(16, "big")) + _attr(
            CTA_IP_V6_DST, dst.to_bytes(16, "big")
        )
    ports = (
        _attr(CTA_PROTO_NUM, bytes([proto]))
        + _attr(CTA_PROTO_SRC_PORT, sport.to_bytes(2, "big"))
        + _attr(CTA_PROTO_DST_PORT, dport.to_bytes(2, "big"))
    )
    return _attr(kind, _attr(CTA_TUPLE_IP, ips, True) + _attr(CTA_TUPLE_PROTO, ports, True), True)


def get_request(seq: int, proto: int, t: Tuple, reply: bool) -> bytes:
    """IPCTNL_MSG_CT_GET for the entry whose original (or reply) tuple is `t`."""
    family = socket.AF_INET if is_v4(t[0]) else socket.AF_INET6
    body = NFGEN.pack(family, 0, 0) + _tuple_attr(
        CTA_TUPLE_REPLY if reply else CTA_TUPLE_ORIG, proto, t
    )
    return NLMSG.pack(NLMSG.size + len(body), MSG_TYPE, NLM_F_REQUEST, seq, 0) + body


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in `data`; stops at a short one."""
    offset = 0
    while offset + NLA.size <= len(data):
        length, kind = NLA.unpack_from(data, offset)
        if length < NLA.size or offset + length > len(data):
            raise ConntrackError(f"attribute of length {length} at {offset} overruns the message")
        yield kind & NLA_TYPE_MASK, data[offset + NLA.size : offset + length]
        offset += (length + 3) & ~3


def _tuple(data: bytes) -> tuple[int, Tuple] | None:
    """(protocol, tuple) of a CTA_TUPLE_* attribute; None if it has no ports."""
    src = dst = None
    proto = sport = dport = -1
    for kind, payload in _attrs(data):
        if kind == CTA_TUPLE_IP:
            for ip_kind, ip in _attrs(payload):
                if ip_kind in (CTA_IP_V4_SRC, CTA_IP_V6_SRC) and len(ip) in (4, 16):
                    src = addr_from_bytes(ip)
                elif ip_kind in (CTA_IP_V4_DST, CTA_IP_V6_DST) and len(ip) in (4, 16):
                    dst = addr_from_bytes(ip)
        elif kind == CTA_TUPLE_PROTO:
            for p_kind, value in _attrs(payload):
                if p_kind == CTA_PROTO_NUM and len(value) >= 1:
                    proto = value[0]
                elif p_kind == CTA_PROTO_SRC_PORT and len(value) >= 2:
                    sport = int.from_bytes(value[:2], "big")
                elif p_kind == CTA_PROTO_DST_PORT and len(value) >= 2:
                    dport = int.from_bytes(value[:2], "big")
    if src is None or dst is None or proto < 0 or sport < 0 or dport < 0:
        return None
    return proto, (src, sport, dst, dport)


def parse_entry(body: bytes) -> NatEntry | None:
    """The entry in a ctnetlink message's body (after the nlmsghdr); None if it
    lacks either tuple or ports."""
    if len(body) < NFGEN.size:
        raise ConntrackError(f"message of {len(body)} bytes has no nfgenmsg")
    orig = reply = None
    for kind, payload in _attrs(body[NFGEN.size :]):
        if kind == CTA_TUPLE_ORIG:
            orig = _tuple(payload)
        elif kind == CTA_TUPLE_REPLY:
            reply = _tuple(payload)
    if orig is None or reply is None or orig[0] != reply[0]:
        return None
    return NatEntry(orig[0], orig[1], reply[1])


def parse_answer(data: bytes, seq: int) -> NatEntry | None:
    """The entry in the kernel's answer to request `seq`; None when it has none
    (ENOENT). Raises ConntrackError for anything else the kernel says."""
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _flags, got_seq, _pid = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            raise ConntrackError(f"netlink message of length {length} overruns the datagram")
        body = data[offset + NLMSG.size : offset + length]
        offset += (length + 3) & ~3
        if got_seq != seq:
            continue  # an answer to an earlier request that timed out
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            if code in (0, errno.ENOENT):
                return None
            raise ConntrackError(f"conntrack: {errno.errorcode.get(code, code)}")
        if kind == NLMSG_DONE:
            return None
        if kind >> 8 == NFNL_SUBSYS_CTNETLINK:
            return parse_entry(body)
    return None


class Conntrack:
    """A read-only ctnetlink socket of this network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.settimeout(0.5)
        self._sock.bind((0, 0))
        self._seq = 0
        self.asked = 0  # GET requests sent

    def close(self) -> None:
        self._sock.close()

    def _get(self, proto: int, t: Tuple, reply: bool) -> NatEntry | None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self.asked += 1
        self._sock.send(get_request(self._seq, proto, t, reply))
        for _ in range(4):  # skip late answers to earlier requests
            data = self._sock.recv(RECV_BYTES)
            entry = parse_answer(data, self._seq)
            if entry is not None or _answers(data, self._seq):
                return entry
        return None

    def find(self, key: FlowKey) -> NatEntry | None:
        """The entry for a flow seen here, whichever side of the translation this
        interface is on: the remote end sent the tuple (remote -> local), which
        is the entry's original tuple (a published port) or its reply tuple (a
        masqueraded connection, answered)."""
        inbound = (key.raddr, key.rport, key.laddr, key.lport)
        for reply in (False, True):
            entry = self._get(key.proto, inbound, reply)
            if entry is not None:
                return entry
        return None


def _answers(data: bytes, seq: int) -> bool:
    """Whether `data` holds a message for request `seq`."""
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, _kind, _flags, got_seq, _pid = NLMSG.unpack_from(data, offset)
        if got_seq == seq:
            return True
        if length < NLMSG.size:
            return False
        offset += (length + 3) & ~3
    return False
