"""The macOS platform against a recorded kernel: sockets with owners and fds, lookups
as the kernel delivers, interfaces with friendly names, resolvers per interface."""

from __future__ import annotations

import logging

import pytest

from netoproc.model import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ProcessRef,
    TcpKernelInfo,
    parse_addr,
)
from netoproc.platform import darwin
from netoproc.platform.darwin import DarwinPlatform
from tests.platform.darwin_buffers import (
    IFT_BRIDGE,
    IFT_ETHER,
    IFT_LOOP,
    IFT_OTHER,
    IFT_PKTAP,
    PROX_FDTYPE_SOCKET,
    PROX_FDTYPE_VNODE,
    FakeDarwinKernel,
    Pcb,
    fd_list,
    ifmibdata,
    pcblist,
    socket_fdinfo,
)

CURL = ProcessRef(501, "curl", "alice")
NGINX = ProcessRef(88, "nginx", "root")
MDNS = ProcessRef(77, "mDNSResponder", "_mdnsresponder")
SAFARI = ProcessRef(4321, "Safari", "alice")
ME, PEER = "192.0.2.10", "198.51.100.7"

TCP = [
    Pcb(ME, 50000, PEER, 443, state="ESTABLISHED", last_pid=501, srtt=12 * 32, rttvar=3 * 16,
        rtt_samples=4),
    Pcb("::", 80, state="LISTEN", last_pid=88, dual_stack=True, uid=0),
    Pcb(ME, 80, PEER, 61000, state="ESTABLISHED", last_pid=88, uid=0),
    Pcb(ME, 50001, PEER, 443, state="TIME_WAIT", last_pid=0),
]  # fmt: skip
UDP = [
    Pcb("0.0.0.0", 5353, last_pid=77),
    Pcb(ME, 53000, "192.0.2.1", 53, last_pid=77, e_pid=4321, delegated=True),
]


def kernel(**overrides: object) -> FakeDarwinKernel:
    fields: dict[str, object] = {
        "tcp": pcblist(6, TCP),
        "udp": pcblist(17, UDP),
        "processes": {p.pid: p for p in (CURL, NGINX, MDNS, SAFARI)},
        "fds": {
            501: fd_list((0, PROX_FDTYPE_VNODE), (5, PROX_FDTYPE_SOCKET)),
            88: fd_list((3, PROX_FDTYPE_SOCKET), (9, PROX_FDTYPE_SOCKET)),
        },
        "sockets": {
            (501, 5): socket_fdinfo(6, ME, 50000, PEER, 443, state="ESTABLISHED"),
            (88, 3): socket_fdinfo(6, "::", 80, "::", 0, state="LISTEN"),
            (88, 9): socket_fdinfo(6, ME, 80, PEER, 61000, state="ESTABLISHED"),
        },
        "ifalldata": (
            ifmibdata("lo0", iftype=IFT_LOOP, ibytes=10, obytes=10)
            + ifmibdata("en0", iftype=IFT_ETHER, ibytes=5 << 32, obytes=7, ipackets=3)
            + ifmibdata("utun3", iftype=IFT_OTHER, up=False)
            + ifmibdata("bridge0", iftype=IFT_BRIDGE)
            + ifmibdata("awdl0", iftype=IFT_ETHER)
            + ifmibdata("pktap0", iftype=IFT_PKTAP)
        ),
        "interface_addresses": {
            "en0": (("192.0.2.10",), ("fe80::1%en0",)), "lo0": (("127.0.0.1",), ("::1",)),
        },
    }  # fmt: skip
    fields.update(overrides)
    return FakeDarwinKernel(**fields)  # type: ignore[arg-type]


def test_socket_table_with_owners_fds_and_rtt() -> None:
    table = {(s.proto, s.lport, s.rport): s for s in DarwinPlatform(kernel()).socket_table()}
    assert len(table) == 6
    client = table[IPPROTO_TCP, 50000, 443]
    assert (client.owner, client.fd, client.state, client.uid) == (CURL, 5, "ESTABLISHED", 501)
    assert (client.laddr, client.raddr) == (parse_addr(ME), parse_addr(PEER))
    assert client.tcp == TcpKernelInfo(rtt_ms=12.0, rttvar_ms=3.0, total_retrans=None)
    listener = table[IPPROTO_TCP, 80, 0]
    assert (listener.owner, listener.fd, listener.state, listener.tcp) == (NGINX, 3, "LISTEN", None)
    assert table[IPPROTO_TCP, 80, 61000].fd == 9
    closed = table[IPPROTO_TCP, 50001, 443]
    assert (closed.owner, closed.fd, closed.state) == (None, None, "TIME_WAIT")
    mdns = table[IPPROTO_UDP, 5353, 0]
    assert (mdns.owner, mdns.state, mdns.fd) == (MDNS, "UNCONN", None)  # fds not listed: none
    assert table[IPPROTO_UDP, 53000, 53].owner == SAFARI  # the app mDNSResponder acts for


def test_lookup_answers_as_the_kernel_delivers() -> None:
    platform = DarwinPlatform(kernel())

    def key(proto: int, local: str, lport: int, remote: str, rport: int) -> FlowKey:
        return FlowKey("en0", proto, parse_addr(local), lport, parse_addr(remote), rport)

    exact = key(IPPROTO_TCP, ME, 50000, PEER, 443)
    accepted = key(IPPROTO_TCP, ME, 80, PEER, 61000)
    new_peer = key(IPPROTO_TCP, ME, 80, "203.0.113.5", 1234)  # only the tcp46 listener
    via_v6 = key(IPPROTO_TCP, "2001:db8::10", 80, "2001:db8::99", 1234)
    mdns = key(IPPROTO_UDP, "224.0.0.251", 5353, "192.0.2.77", 5353)  # to the 0.0.0.0 wildcard
    nobody = key(IPPROTO_UDP, ME, 9, PEER, 9)
    icmp = key(IPPROTO_ICMP, ME, 0, PEER, 0)
    found = platform.lookup([exact, accepted, new_peer, via_v6, mdns, nobody, icmp])
    assert found is not None
    owners = {k: (s.owner.name if s and s.owner else None) for k, s in found.items()}
    assert owners == {exact: "curl", accepted: "nginx", new_peer: "nginx", via_v6: "nginx",
                      mdns: "mDNSResponder", nobody: None}  # fmt: skip
    client = found[exact]
    assert client is not None and client.fd == 5


def test_too_many_lookups_ask_for_the_full_table() -> None:
    keys = [FlowKey("en0", IPPROTO_UDP, 1, port, 2, 3) for port in range(darwin.MAX_LOOKUPS + 1)]
    assert DarwinPlatform(kernel()).lookup(keys) is None


def test_a_table_that_cannot_be_read_leaves_the_other(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "netoproc"):
        sockets = DarwinPlatform(kernel(tcp=pcblist(6, TCP)[:100])).socket_table()
    assert {s.proto for s in sockets} == {IPPROTO_UDP}
    assert "cannot read net.inet.tcp.pcblist_n: pcblist_n (tcp)" in caplog.text


def test_interfaces_with_friendly_names_and_64_bit_counters() -> None:
    fake = kernel()
    rows = {i.name: i for i in DarwinPlatform(fake).interfaces()}
    assert set(rows) == {"lo0", "en0", "utun3", "bridge0", "awdl0"}  # not our own pktap0
    assert {n: i.kind for n, i in rows.items()} == {
        "lo0": "Loopback", "en0": "Wi-Fi", "utun3": "VPN", "bridge0": "Thunderbolt Bridge",
        "awdl0": "Virtual Ethernet",
    }  # fmt: skip
    en0 = rows["en0"]
    assert (en0.up, en0.rx_bytes, en0.tx_bytes, en0.rx_packets) == (True, 5 << 32, 7, 3)
    assert (en0.ipv4, en0.ipv6) == (("192.0.2.10",), ("fe80::1%en0",))
    assert rows["utun3"].up is False and rows["utun3"].ipv4 == ()


def test_networksetup_is_asked_again_only_when_an_interface_appears() -> None:
    fake = kernel()
    platform = DarwinPlatform(fake)
    platform.interfaces()
    platform.interfaces()
    asked = [c for c in fake.commands_run if "networksetup" in c[0]]
    assert asked == [("/usr/sbin/networksetup", "-listallhardwareports")]
    fake.ifalldata += ifmibdata("en5")
    platform.interfaces()
    assert len([c for c in fake.commands_run if "networksetup" in c[0]]) == 2


def test_interface_counters_unreadable_keeps_the_last_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = kernel()
    platform = DarwinPlatform(fake)
    before = platform.interfaces()
    fake.ifalldata = fake.ifalldata[:200]
    with caplog.at_level(logging.WARNING, "netoproc"):
        assert platform.interfaces() == before
    assert "cannot read interface counters: ifalldata" in caplog.text


def test_resolvers_per_interface() -> None:
    fake = kernel()
    assert DarwinPlatform(fake).resolvers() == {
        "en0": ("192.168.1.1", "8.8.8.8", "fe80::1"),
        "utun3": ("10.0.0.1",),
        "en7": ("fe80::aa",),
    }
    assert fake.commands_run == [("/usr/sbin/scutil", "--dns")]
    assert DarwinPlatform(kernel(scutil=None)).resolvers() == {}  # "No DNS configuration": exit 1
