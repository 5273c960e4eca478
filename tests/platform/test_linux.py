"""LinuxPlatform against this kernel: lookups and the full socket table name
this process (pid, psutil's name, the socket's own fd) as the owner of the
loopback sockets the test opens; too many keys at once ask for a full table;
what the fast lane saw of a process that exited right after is still its
answer, even when the engine asks while the fast lane is still looking."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil
import pytest

from netoproc.model import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ProcessRef,
    parse_addr,
)
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


def test_an_unchanged_socket_stays_the_same_object(
    platform: LinuxPlatform, sockets: Sockets
) -> None:
    listener = sockets.listener()
    first = {s.inode: s for s in platform.socket_table()}[inode(listener)]
    assert {s.inode: s for s in platform.socket_table()}[inode(listener)] is first
    # a socket that changes is a new one
    listener.close()
    udp = sockets.new(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    again = {s.inode: s for s in platform.socket_table()}[inode(udp)]
    udp.connect(("127.0.0.1", 9))
    now = {s.inode: s for s in platform.socket_table()}[inode(udp)]
    assert now is not again and now.connected and not again.connected


def test_too_many_keys_ask_for_the_full_table(platform: LinuxPlatform) -> None:
    keys = [FlowKey("lo", IPPROTO_TCP, 1, port, 2, 80) for port in range(MAX_LOOKUPS + 1)]
    assert platform.lookup(keys) is None


BRIEF = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"np-brief", 0, 0, 0)  # PR_SET_NAME
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
sys.stdin.readline()  # exits, and its socket with it, when told to
"""


class Brief:
    """A process named np-brief holding one UDP socket towards `port` until `end`."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BRIEF, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        lport = int(self.proc.stdout.readline())
        addr = parse_addr("127.0.0.1")
        self.flow = (IPPROTO_UDP, addr, lport, addr, port)
        self.key = FlowKey("lo", *self.flow)

    def end(self) -> None:
        self.proc.communicate("\n", timeout=10)


@pytest.fixture
def receiver(sockets: Sockets) -> int:
    s = sockets.new(kind=socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    return port


def test_what_the_fast_lane_saw_outlives_the_process(
    platform: LinuxPlatform, receiver: int
) -> None:
    seen, unseen = Brief(receiver), Brief(receiver)
    platform.prefetch([seen.flow])
    seen.end()
    unseen.end()
    found = platform.lookup([seen.key, unseen.key])
    assert found is not None
    info = found[seen.key]
    assert info is not None
    assert (info.owner, info.fd) == (ProcessRef(seen.proc.pid, "np-brief", me().user), 3)
    assert found[unseen.key] is None  # asked only after it exited: nobody holds it


def test_lookup_waits_for_the_fast_lane_asking_about_the_same_flow(
    platform: LinuxPlatform, receiver: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast lane found the owner, the process exited, and the engine asks
    before the fast lane has handed its answer over: it waits for that answer."""
    brief = Brief(receiver)
    located, release = threading.Event(), threading.Event()
    locate = platform._fast_owners.locate

    def slow_locate(inodes: set[int]) -> dict[int, list[tuple[int, int]]]:
        found = locate(inodes)
        located.set()
        release.wait(10)
        return found

    monkeypatch.setattr(platform._fast_owners, "locate", slow_locate)
    fast_lane = threading.Thread(target=platform.prefetch, args=([brief.flow],))
    fast_lane.start()
    assert located.wait(10)
    brief.end()
    threading.Timer(0.01, release.set).start()
    found = platform.lookup([brief.key])
    fast_lane.join(10)
    assert found is not None
    info = found[brief.key]
    assert info is not None and info.owner == ProcessRef(brief.proc.pid, "np-brief", me().user)


def test_a_tracker_that_cannot_be_asked_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from netoproc.platform import linux

    opened: list[int] = []

    def refused() -> None:
        opened.append(1)
        raise OSError(1, "Operation not permitted")  # what netlink says without CAP_NET_ADMIN

    monkeypatch.setattr(linux, "Conntrack", refused)
    p = LinuxPlatform()
    try:
        key = FlowKey("eth0", IPPROTO_TCP, 1, 2, 3, 4)
        assert p.translations([key]) is None
        assert p.translations([key]) is None and opened == [1]  # not asked again
    finally:
        p.close()
