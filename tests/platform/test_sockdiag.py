"""sock_diag: request bytes and reply parsing on buffers built by hand from the
uapi layouts (linux/netlink.h, inet_diag.h, tcp.h), including multi-message,
DONE, ERROR and truncated buffers; then live questions to this kernel about
loopback sockets the test itself opens (inodes compared with os.fstat)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, TcpKernelInfo, parse_addr
from netoproc.platform.sockdiag import (
    DiagSocket,
    SockDiag,
    SockDiagError,
    dump_request,
    lookup_request,
    parse_diag_msg,
    parse_messages,
)
from tests.platform.live import LOCAL, Sockets, endpoint, free_port, inode, wait_for

NLMSG_ERROR, NLMSG_DONE, SOCK_DIAG_BY_FAMILY = 2, 3, 20
INET_DIAG_INFO, INET_DIAG_MEMINFO = 2, 1

# --- hand-made replies ------------------------------------------------------------------


def nlmsg(kind: int, body: bytes, *, flags: int = 2, seq: int = 1) -> bytes:
    """nlmsghdr (len u32, type u16, flags u16, seq u32, pid u32) + body, padded to 4."""
    header = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0)
    return header + body + bytes(-len(body) % 4)


def rtattr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def tcp_info(rtt_us: int, rttvar_us: int, retrans: int, size: int = 232) -> bytes:
    info = bytearray(232)
    struct.pack_into("=II", info, 68, rtt_us, rttvar_us)
    struct.pack_into("=I", info, 100, retrans)
    return bytes(info[:size])


def diag_msg(
    family: int,
    state: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    *,
    uid: int = 1000,
    inode: int = 4242,
    attrs: bytes = b"",
) -> bytes:
    """inet_diag_msg: 72 bytes, then attributes."""

    def raw(a: str) -> bytes:  # IPv4 in the first 4 of 16 bytes
        return socket.inet_pton(family, a).ljust(16, b"\0")

    sockid = struct.pack("!HH", sport, dport) + raw(src) + raw(dst)
    sockid += struct.pack("=I", 3) + struct.pack("=II", 0x1234, 0x5678)  # if, cookie[2]
    tail = struct.pack("=IIIII", 0, 0, 0, uid, inode)  # expires, rqueue, wqueue, uid, inode
    msg = struct.pack("=BBBB", family, state, 0, 0) + sockid + tail
    assert len(msg) == 72
    return msg + attrs


def error(code: int) -> bytes:
    return nlmsg(NLMSG_ERROR, struct.pack("=i", code) + struct.pack("=IHHII", 72, 20, 1, 1, 0))


def reply(*bodies: bytes) -> bytes:
    return b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, body) for body in bodies)


def v4(state: int, sport: int, dport: int, *, inode: int = 4242, attrs: bytes = b"") -> bytes:
    return diag_msg(socket.AF_INET, state, LOCAL, sport, LOCAL, dport, inode=inode, attrs=attrs)


DONE = nlmsg(NLMSG_DONE, struct.pack("=i", 0))
INFO = rtattr(INET_DIAG_INFO, tcp_info(1500, 250, 4))


def test_parses_an_ipv4_tcp_socket_with_tcp_info() -> None:
    body = diag_msg(
        socket.AF_INET, 1, "10.1.2.3", 443, "192.0.2.7", 51000, uid=33, inode=99, attrs=INFO
    )
    (found,) = parse_messages(reply(body), IPPROTO_TCP)
    assert found == DiagSocket(
        family=socket.AF_INET,
        proto=IPPROTO_TCP,
        state=1,
        laddr=parse_addr("10.1.2.3"),
        lport=443,
        raddr=parse_addr("192.0.2.7"),
        rport=51000,
        uid=33,
        inode=99,
        tcp=TcpKernelInfo(rtt_ms=1.5, rttvar_ms=0.25, total_retrans=4),
    )
    assert found.state_name == "ESTABLISHED"


def test_parses_ipv6_and_udp_states() -> None:
    (found,) = parse_messages(
        reply(diag_msg(socket.AF_INET6, 7, "2001:db8::5", 53, "::", 0)), IPPROTO_UDP
    )
    assert isinstance(found, DiagSocket)
    assert (found.laddr, found.lport, found.raddr, found.rport, found.tcp, found.state_name) == (
        parse_addr("2001:db8::5"), 53, 0, 0, None, "UNCONN",
    )  # fmt: skip
    assert parse_diag_msg(v4(1, 1, 2), 0, 72, IPPROTO_UDP).state_name == "ESTABLISHED"
    assert parse_diag_msg(v4(10, 1, 0), 0, 72, IPPROTO_TCP).state_name == "LISTEN"


def test_multi_message_buffer_then_done() -> None:
    odd = rtattr(INET_DIAG_MEMINFO, b"\x01\x02\x03")  # another attribute, 7 bytes + padding
    buffer = (
        reply(
            v4(10, 80, 0, inode=1, attrs=odd),
            v4(1, 80, 5000, inode=2, attrs=odd + INFO),
            v4(6, 80, 5001, inode=0),
        )
        + DONE
    )
    items = list(parse_messages(buffer, IPPROTO_TCP))
    assert items[-1] == 0
    sockets = [i for i in items if isinstance(i, DiagSocket)]
    assert len(sockets) == len(items) - 1
    assert [(s.inode, s.state_name, s.rport) for s in sockets] == [
        (1, "LISTEN", 0), (2, "ESTABLISHED", 5000), (0, "TIME_WAIT", 5001),
    ]  # fmt: skip
    assert [s.tcp for s in sockets] == [None, TcpKernelInfo(1.5, 0.25, 4), None]


def test_error_messages_yield_negative_errno() -> None:
    assert list(parse_messages(error(-errno.ENOENT), IPPROTO_TCP)) == [-errno.ENOENT]
    assert list(parse_messages(nlmsg(NLMSG_ERROR, b""), IPPROTO_TCP)) == [-1]  # no code at all
    assert list(parse_messages(reply(v4(1, 1, 2)) + error(-errno.EPERM), IPPROTO_TCP))[1] == (
        -errno.EPERM
    )


def test_short_or_broken_attributes_give_no_tcp_info() -> None:
    short = rtattr(INET_DIAG_INFO, tcp_info(1, 1, 1, size=100))  # ends before total_retrans
    broken = struct.pack("=HH", 2, INET_DIAG_INFO) + tcp_info(1, 1, 1)  # length below 4
    for attrs in (short, broken):
        (found,) = parse_messages(reply(v4(1, 1, 2, attrs=attrs)), IPPROTO_TCP)
        assert isinstance(found, DiagSocket)
        assert found.tcp is None


def test_every_truncation_raises_sock_diag_error() -> None:
    buffer = reply(v4(1, 1, 2, attrs=INFO), diag_msg(socket.AF_INET6, 10, "::", 22, "::", 0))
    buffer += DONE
    boundaries = {0}
    pos = 0
    while pos < len(buffer):
        pos += (struct.unpack_from("=I", buffer, pos)[0] + 3) & ~3
        boundaries.add(pos)
    assert len(boundaries) == 4
    for cut in range(len(buffer)):
        if cut in boundaries:
            list(parse_messages(buffer[:cut], IPPROTO_TCP))  # whole messages: fine
        else:
            with pytest.raises(SockDiagError):
                list(parse_messages(buffer[:cut], IPPROTO_TCP))


def test_messages_claiming_impossible_lengths_raise() -> None:
    short_body = struct.pack("=IHHII", 16 + 40, SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(40)
    too_long = struct.pack("=IHHII", 4096, SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(72)
    below_header = struct.pack("=IHHII", 8, SOCK_DIAG_BY_FAMILY, 2, 1, 0) + bytes(72)
    for buffer in (short_body, too_long, below_header):
        with pytest.raises(SockDiagError):
            list(parse_messages(buffer, IPPROTO_TCP))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_replies_parse_or_raise_sock_diag_error(data: st.DataObject) -> None:
    valid = bytearray(reply(v4(1, 1, 2, attrs=INFO), v4(10, 3, 0)) + DONE)
    for _ in range(data.draw(st.integers(1, 8))):
        valid[data.draw(st.integers(0, len(valid) - 1))] = data.draw(st.integers(0, 255))
    damaged = bytes(valid[: data.draw(st.integers(0, len(valid)))])
    with contextlib.suppress(SockDiagError):  # any other exception fails the test
        list(parse_messages(damaged, IPPROTO_TCP))


def test_request_layouts() -> None:
    dump = dump_request(socket.AF_INET6, IPPROTO_TCP, seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", dump)
    assert (length, len(dump), kind, flags, seq) == (72, 72, 20, 0x301, 7)
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", dump, 16)
    assert (family, proto, ext, states) == (socket.AF_INET6, IPPROTO_TCP, 1 << 1, 0xFFFFFFFF)
    assert dump[24:64] == bytes(40)  # no ports, no addresses, no interface
    assert dump[64:72] == b"\xff" * 8  # INET_DIAG_NOCOOKIE
    assert struct.unpack_from("=BBB", dump_request(socket.AF_INET, IPPROTO_UDP), 16)[2] == 0

    local, remote = parse_addr("10.0.0.1"), parse_addr("192.0.2.9")
    tcp = lookup_request(IPPROTO_TCP, local, 1000, remote, 443, seq=3)
    assert struct.unpack_from("=IHHII", tcp)[:4] == (72, 20, 1, 3)  # a request, not a dump
    assert tcp[16] == socket.AF_INET
    assert struct.unpack_from("!HH", tcp, 24) == (1000, 443)  # TCP: source is the local side
    assert tcp[28:44] == bytes([10, 0, 0, 1]) + bytes(12)
    assert tcp[44:60] == bytes([192, 0, 2, 9]) + bytes(12)
    udp = lookup_request(IPPROTO_UDP, local, 1000, remote, 53)
    assert struct.unpack_from("!HH", udp, 24) == (53, 1000)  # UDP: swapped, as the kernel expects
    assert udp[28:32] == bytes([192, 0, 2, 9])
    v6 = lookup_request(IPPROTO_TCP, parse_addr("2001:db8::1"), 1, parse_addr("::1"), 2)
    assert (v6[16], v6[28:44]) == (
        socket.AF_INET6,
        socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
    )


# --- live, against this kernel ----------------------------------------------------------


@pytest.fixture
def diag() -> Iterator[SockDiag]:
    d = SockDiag()
    yield d
    d.close()


def test_dump_finds_a_listener_with_its_inode_and_uid(diag: SockDiag, sockets: Sockets) -> None:
    listener = sockets.listener()
    _, port = endpoint(listener)
    mine = [d for d in diag.dump(socket.AF_INET, IPPROTO_TCP) if d.lport == port]
    assert [(d.state_name, d.laddr, d.inode, d.uid) for d in mine] == [
        ("LISTEN", parse_addr(LOCAL), inode(listener), os.getuid())
    ]


def test_lookup_tcp_connected_listener_time_wait_and_nothing(
    diag: SockDiag, sockets: Sockets
) -> None:
    listener, client, server = sockets.tcp_pair()
    (c_addr, c_port), (s_addr, s_port) = endpoint(client), endpoint(listener)
    found = diag.lookup(IPPROTO_TCP, c_addr, c_port, s_addr, s_port)
    assert found is not None
    assert (found.inode, found.state_name) == (inode(client), "ESTABLISHED")
    found = diag.lookup(IPPROTO_TCP, s_addr, s_port, c_addr, c_port)
    assert found is not None
    assert found.inode == inode(server)
    stranger = free_port(socket.SOCK_STREAM)
    found = diag.lookup(IPPROTO_TCP, s_addr, s_port, c_addr, stranger)  # no such connection
    assert found is not None
    assert (found.inode, found.state_name) == (inode(listener), "LISTEN")
    assert diag.lookup(IPPROTO_TCP, s_addr, stranger, c_addr, s_port) is None

    client.close()  # the side closing first ends in TIME_WAIT
    server.close()

    def time_wait() -> DiagSocket | None:
        d = diag.lookup(IPPROTO_TCP, c_addr, c_port, s_addr, s_port)
        return d if d is not None and d.state_name == "TIME_WAIT" else None

    assert wait_for(time_wait).inode == 0


def test_lookup_udp_unconnected_connected_and_dual_stack(diag: SockDiag, sockets: Sockets) -> None:
    unconnected, connected, peer = (sockets.new(kind=socket.SOCK_DGRAM) for _ in range(3))
    peer.bind((LOCAL, 0))
    for s in (unconnected, connected):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    unconnected.bind((LOCAL, 0))
    connected.bind(unconnected.getsockname())  # the same local port
    connected.connect(peer.getsockname())
    (local, port), (p_addr, p_port) = endpoint(connected), endpoint(peer)

    found = diag.lookup(IPPROTO_UDP, local, port, p_addr, p_port)
    assert found is not None
    assert (found.inode, found.state_name, found.rport) == (inode(connected), "ESTABLISHED", p_port)
    found = diag.lookup(IPPROTO_UDP, local, port, p_addr, free_port(socket.SOCK_DGRAM))
    assert found is not None
    assert (found.inode, found.state_name) == (inode(unconnected), "UNCONN")

    dual = sockets.new(socket.AF_INET6, socket.SOCK_DGRAM)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    found = diag.lookup(IPPROTO_UDP, parse_addr(LOCAL), dual.getsockname()[1], p_addr, 40000)
    assert found is not None
    assert (found.inode, found.family) == (inode(dual), socket.AF_INET6)
    assert diag.lookup(IPPROTO_UDP, local, free_port(socket.SOCK_DGRAM), p_addr, p_port) is None


def test_tcp_info_of_an_established_loopback_socket(diag: SockDiag, sockets: Sockets) -> None:
    _, client, server = sockets.tcp_pair()
    for _ in range(20):
        client.sendall(b"x" * 1000)
        assert len(server.recv(4096)) > 0
        server.sendall(b"y")
        assert client.recv(16) == b"y"
    (c_addr, c_port), (s_addr, s_port) = endpoint(client), endpoint(client, peer=True)
    found = diag.lookup(IPPROTO_TCP, c_addr, c_port, s_addr, s_port)
    assert found is not None
    assert found.tcp is not None
    assert found.tcp.rtt_ms > 0
    assert found.tcp.total_retrans == 0
    dumped = [d for d in diag.dump(socket.AF_INET, IPPROTO_TCP) if d.inode == inode(client)]
    assert len(dumped) == 1
    assert dumped[0].tcp is not None
    assert dumped[0].tcp.rtt_ms > 0


def test_dual_stack_tcp_sockets_answer_ipv4_lookups(diag: SockDiag, sockets: Sockets) -> None:
    listener = sockets.new(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = sockets.new()
    client.connect((LOCAL, port))
    server = sockets.keep(listener.accept()[0])
    local, c_port = parse_addr(LOCAL), endpoint(client)[1]
    found = diag.lookup(IPPROTO_TCP, local, port, local, c_port)
    assert found is not None
    assert (found.inode, found.family) == (inode(server), socket.AF_INET6)
    assert (found.laddr, found.raddr) == (local, local)  # IPv4-mapped, as the model holds IPv4
