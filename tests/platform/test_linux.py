"""LinuxPlatform against this kernel: lookups and the full socket table name
this process (pid, psutil's name, the socket's own fd) as the owner of the
loopback sockets the test opens; too many keys at once ask for a full table."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import psutil
import pytest

from netoproc.model import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, FlowKey, ProcessRef
from netoproc.platform.linux import MAX_LOOKUPS, LinuxPlatform
from tests.platform.live import Sockets, endpoint, inode


@pytest.fixture(scope="module")
def platform() -> Iterator[LinuxPlatform]:
    p = LinuxPlatform()
    yield p
    p.close()


def me() -> ProcessRef:
    process = psutil.Process()
    return ProcessRef(os.getpid(), process.name(), process.username())


def flow_key(s: socket.socket, proto: int = IPPROTO_TCP) -> FlowKey:
    (laddr, lport), (raddr, rport) = endpoint(s), endpoint(s, peer=True)
    return FlowKey("lo", proto, laddr, lport, raddr, rport)


def test_lookup_names_this_process_and_fd(platform: LinuxPlatform, sockets: Sockets) -> None:
    _, client, server = sockets.tcp_pair()
    udp = sockets.new(kind=socket.SOCK_DGRAM)
    udp.connect(server.getsockname())
    icmp = FlowKey("lo", IPPROTO_ICMP, 1, 0, 2, 0)
    keys = [flow_key(client), flow_key(server), flow_key(udp, IPPROTO_UDP), icmp]
    found = platform.lookup(keys)
    assert found is not None
    assert set(found) == set(keys[:3])  # ICMP is not socket traffic: not asked about
    for key, s in zip(keys[:3], (client, server, udp), strict=True):
        info = found[key]
        assert info is not None
        assert (info.inode, info.owner, info.fd) == (inode(s), me(), s.fileno())
        assert (info.laddr, info.lport, info.raddr, info.rport) == key[2:]
    client_info = found[keys[0]]
    assert client_info is not None
    assert (client_info.state, client_info.uid) == ("ESTABLISHED", os.getuid())
    assert client_info.tcp is not None


def test_lookup_of_a_socket_nobody_has(platform: LinuxPlatform, sockets: Sockets) -> None:
    listener = sockets.listener()
    laddr, port = endpoint(listener)
    listener.close()
    key = FlowKey("lo", IPPROTO_TCP, laddr, port, laddr, 9)
    assert platform.lookup([key]) == {key: None}


def test_socket_table_contains_the_tests_sockets(platform: LinuxPlatform, sockets: Sockets) -> None:
    listener, client, _ = sockets.tcp_pair()
    udp = sockets.new(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    table = {s.inode: s for s in platform.socket_table() if s.inode}
    for s, state in ((listener, "LISTEN"), (client, "ESTABLISHED"), (udp, "UNCONN")):
        info = table[inode(s)]
        assert (info.owner, info.fd, info.state) == (me(), s.fileno(), state)
    assert table[inode(listener)].tcp is None  # listeners have no round trips
    assert table[inode(udp)].laddr == 1  # ::1
    assert table[inode(client)].connected


def test_too_many_keys_ask_for_the_full_table(platform: LinuxPlatform) -> None:
    keys = [FlowKey("lo", IPPROTO_TCP, 1, port, 2, 80) for port in range(MAX_LOOKUPS + 1)]
    assert platform.lookup(keys) is None
