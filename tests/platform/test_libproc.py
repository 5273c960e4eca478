"""libproc records (PROC_PIDLISTFDS, PROC_PIDFDSOCKETINFO) built from docs/MACOS.md §3.2, parsed."""

from __future__ import annotations

import ctypes

import pytest

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, parse_addr
from netoproc.platform import libproc as lp
from netoproc.platform.darwin_structs import KernelDataError
from tests.platform.darwin_buffers import (
    PROX_FDTYPE_SOCKET,
    PROX_FDTYPE_VNODE,
    fd_list,
    socket_fdinfo,
)


def test_layouts_are_the_documented_ones() -> None:
    # docs/MACOS.md §3.2 (computed, LP64)
    sizes = {
        lp.ProcFdInfo: 8, lp.ProcFileInfo: 24, lp.VinfoStat: 136, lp.SockbufInfo: 24,
        lp.InSockinfo: 80, lp.TcpSockinfo: 120, lp.UnSockinfo: 528, lp.SocketInfo: 768,
        lp.SocketFdInfo: 792,
    }  # fmt: skip
    assert {s: ctypes.sizeof(s) for s in sizes} == sizes
    psi = lp.SocketFdInfo.psi.offset
    absolute = {
        "soi_type": 176, "soi_protocol": 180, "soi_family": 184, "soi_state": 192,
        "soi_kind": 256, "soi_proto": 264,
    }  # fmt: skip
    assert {n: psi + getattr(lp.SocketInfo, n).offset for n in absolute} == absolute
    relative = {"insi_fport": 0, "insi_lport": 4, "insi_gencnt": 8, "insi_flags": 16,
                "insi_flow": 20, "insi_vflag": 24, "insi_ip_ttl": 25, "rfu_1": 28,
                "insi_faddr": 32, "insi_laddr": 48, "insi_v4": 64, "insi_v6": 68}  # fmt: skip
    assert {n: getattr(lp.InSockinfo, n).offset for n in relative} == relative
    assert 264 + lp.TcpSockinfo.tcpsi_state.offset == 344
    assert (lp.PROX_FDTYPE_SOCKET, lp.SOCKINFO_IN, lp.SOCKINFO_TCP) == (2, 1, 2)
    assert (lp.PROC_PIDLISTFDS, lp.PROC_PIDFDSOCKETINFO) == (1, 3)


def test_fd_list() -> None:
    buf = fd_list((0, PROX_FDTYPE_VNODE), (3, PROX_FDTYPE_SOCKET), (7, PROX_FDTYPE_SOCKET))
    assert lp.parse_fds(buf) == [(0, 1), (3, 2), (7, 2)]
    assert lp.socket_fds(buf) == [3, 7]
    assert lp.socket_fds(b"") == []
    with pytest.raises(KernelDataError, match="proc_fdinfo list: 12 bytes"):
        lp.parse_fds(buf[:12])


def test_tcp_over_ipv4() -> None:
    buf = socket_fdinfo(6, "192.0.2.10", 50000, "198.51.100.7", 443, state="ESTABLISHED")
    sock = lp.parse_socket_fdinfo(buf)
    assert sock is not None
    assert sock.key == (IPPROTO_TCP, parse_addr("192.0.2.10"), 50000,
                        parse_addr("198.51.100.7"), 443)  # fmt: skip
    assert sock.state == "ESTABLISHED"


def test_udp_over_ipv6_and_listeners() -> None:
    sock = lp.parse_socket_fdinfo(socket_fdinfo(17, "2001:db8::10", 5353, "::", 0))
    assert sock is not None and sock.key == (IPPROTO_UDP, parse_addr("2001:db8::10"), 5353, 0, 0)
    listener = lp.parse_socket_fdinfo(socket_fdinfo(6, "0.0.0.0", 80, state="LISTEN"))
    assert listener is not None and (listener.lport, listener.state) == (80, "LISTEN")


def test_other_sockets_are_not_ours() -> None:
    assert lp.parse_socket_fdinfo(socket_fdinfo(0, "0.0.0.0", 0, family=1)) is None  # AF_UNIX


@pytest.mark.parametrize("cut", [0, 100, 791])
def test_a_truncated_socket_info_is_a_clean_error(cut: int) -> None:
    with pytest.raises(KernelDataError, match="socket_fdinfo: truncated"):
        lp.parse_socket_fdinfo(socket_fdinfo(6, "192.0.2.1", 1)[:cut])
