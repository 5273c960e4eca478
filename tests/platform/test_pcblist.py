"""pcblist_n tables, built from docs/MACOS.md §4.1's documented layouts, parsed.

Expected values are the inputs the buffers were built from, with the
docs/MACOS.md's unit rules: t_srtt is ms x 32, t_rttvar ms x 16; state names are
xnu's tcpstates[] (tcp_fsm.h), which netstat prints.
"""

from __future__ import annotations

import ctypes

import pytest

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, V4_MAPPED_PREFIX, parse_addr
from netoproc.platform.darwin_structs import KernelDataError
from netoproc.platform.pcblist import (
    XInpcbN,
    XInpGen,
    XSockbufN,
    XSocketN,
    XSockstatN,
    XTcpcbN,
    parse_pcblist,
)
from tests.platform.darwin_buffers import Pcb, pcb_item, pcblist, record, xinpgen


def _offsets(struct: type[ctypes.Structure], *names: str) -> list[int]:
    return [getattr(struct, name).offset for name in names]


def test_layouts_are_the_documented_ones() -> None:
    # docs/MACOS.md §4.1 (computed with #pragma pack(4) from xnu in_pcb.h, socketvar.h, tcp_var.h)
    sizes = [ctypes.sizeof(s) for s in (XInpGen, XInpcbN, XSocketN, XSockbufN, XSockstatN,
                                         XTcpcbN)]  # fmt: skip
    assert sizes == [24, 104, 104, 32, 136, 204]
    assert _offsets(XInpGen, "xig_len", "xig_count", "xig_gen", "xig_sogen") == [0, 4, 8, 16]
    assert _offsets(
        XInpcbN, "inp_fport", "inp_lport", "inp_gencnt", "inp_flags", "inp_vflag", "inp_ip_p",
        "inp_faddr", "inp_laddr", "inp_flowhash",
    ) == [16, 18, 28, 36, 44, 46, 48, 64, 96]  # fmt: skip
    assert _offsets(
        XSocketN, "so_type", "xso_protocol", "xso_family", "so_uid", "so_last_pid", "so_e_pid",
        "so_gencnt",
    ) == [16, 36, 40, 64, 68, 72, 76]  # fmt: skip
    assert _offsets(XSockstatN, "xst_tc_stats") == [8]
    assert _offsets(
        XTcpcbN, "t_state", "t_flags", "snd_cwnd", "t_rxtcur", "t_maxseg", "t_srtt", "t_rttvar",
        "t_rxtshift", "t_rttmin", "t_rttupdated",
    ) == [36, 40, 100, 128, 132, 136, 140, 144, 148, 152]  # fmt: skip


def test_item_sizes_match_the_documented_ones() -> None:
    # docs/MACOS.md §4.1: "TCP item = 616 B, UDP item = 408 B"
    assert len(pcb_item(6, Pcb("192.0.2.1", 1))) == 616
    assert len(pcb_item(17, Pcb("192.0.2.1", 1))) == 408


TCP = [
    Pcb("192.0.2.10", 50000, "198.51.100.7", 443, state="ESTABLISHED", last_pid=501,
        e_pid=501, srtt=12 * 32, rttvar=3 * 16, rtt_samples=9),
    Pcb("::", 8080, "::", 0, state="LISTEN", last_pid=88, dual_stack=True, uid=0),
    Pcb("2001:db8::10", 40000, "2001:db8::99", 22, state="SYN_SENT", last_pid=7),
    Pcb("192.0.2.10", 50001, "198.51.100.7", 443, state="TIME_WAIT", last_pid=501,
        srtt=40 * 32, rtt_samples=3),
    Pcb("192.0.2.10", 50002, "198.51.100.7", 443, last_pid=9, gencnt=101),  # newer than table
]  # fmt: skip


def test_tcp_table() -> None:
    sockets = parse_pcblist(pcblist(6, TCP, gen=100), IPPROTO_TCP)
    assert [(s.laddr, s.lport, s.raddr, s.rport) for s in sockets] == [
        (parse_addr("192.0.2.10"), 50000, parse_addr("198.51.100.7"), 443),
        (0, 8080, 0, 0),  # a tcp46 wildcard stays :: so IPv4 traffic finds it too
        (parse_addr("2001:db8::10"), 40000, parse_addr("2001:db8::99"), 22),
        (parse_addr("192.0.2.10"), 50001, parse_addr("198.51.100.7"), 443),
    ]
    assert [s.state for s in sockets] == ["ESTABLISHED", "LISTEN", "SYN_SENT", "TIME_WAIT"]
    assert [(s.pid, s.uid) for s in sockets] == [(501, 501), (88, 0), (7, 501), (501, 501)]
    assert [(s.srtt_ms, s.rttvar_ms) for s in sockets] == [
        (12.0, 3.0), (None, None), (None, None), (40.0, 0.0),
    ]  # fmt: skip
    assert {s.proto for s in sockets} == {IPPROTO_TCP}


def test_udp_table_and_delegated_owner() -> None:
    udp = [
        Pcb("0.0.0.0", 5353, last_pid=77),
        Pcb("192.0.2.10", 53000, "192.0.2.1", 53, last_pid=77, e_pid=4321, delegated=True),
        Pcb("192.0.2.10", 53001, "192.0.2.1", 53, last_pid=77, e_pid=4321),  # not delegated
    ]
    sockets = parse_pcblist(pcblist(17, udp), IPPROTO_UDP)
    assert [s.state for s in sockets] == ["UNCONN", "ESTABLISHED", "ESTABLISHED"]
    assert sockets[0].laddr == V4_MAPPED_PREFIX  # 0.0.0.0
    assert [(s.pid, s.last_pid, s.e_pid) for s in sockets] == [
        (77, 77, 0), (4321, 77, 4321), (77, 77, 4321),
    ]  # fmt: skip
    assert all(s.srtt_ms is None for s in sockets)


def test_an_empty_table_is_its_header_alone() -> None:
    # get_pcblist_n returns right after the first xinpgen when xig_count is 0
    assert parse_pcblist(xinpgen(0, 5), IPPROTO_TCP) == []
    assert parse_pcblist(xinpgen(0, 5) + xinpgen(0, 5), IPPROTO_UDP) == []


def test_records_are_walked_by_their_length_and_kind() -> None:
    """A newer kernel may grow a record or add kinds; the walk follows len and kind."""
    item = pcb_item(17, Pcb("192.0.2.10", 9999, last_pid=3))
    bigger_socket = record(1, 120, (36, "<i", 17), (40, "<i", 2), (68, "<i", 3))  # xsocket_n + 16
    other_kind = record(0x40, 48)  # XSO_KCREG, not ours to read
    item = item[:104] + bigger_socket + other_kind + item[208:]
    (sock,) = parse_pcblist(xinpgen(1, 100) + item + xinpgen(1, 100), IPPROTO_UDP)
    assert (sock.lport, sock.pid) == (9999, 3)


@pytest.mark.parametrize("cut", [0, 10, 24, 30, 24 + 616 - 8, 24 + 616 * 2 - 1])
def test_a_truncated_table_is_a_clean_error(cut: int) -> None:
    buf = pcblist(6, TCP[:2])
    with pytest.raises(KernelDataError, match="pcblist_n"):
        parse_pcblist(buf[:cut], IPPROTO_TCP)


def test_garbage_is_a_clean_error() -> None:
    with pytest.raises(KernelDataError, match="not an xinpgen"):
        parse_pcblist(b"\x99" * 700, IPPROTO_TCP)
    short_socket = record(1, 40)  # an xsocket_n record shorter than the layout
    item = pcb_item(17, Pcb("192.0.2.10", 1))
    with pytest.raises(KernelDataError, match="xsocket_n: a 40-byte record"):
        parse_pcblist(xinpgen(1, 9) + item[:104] + short_socket + xinpgen(1, 9), IPPROTO_UDP)
