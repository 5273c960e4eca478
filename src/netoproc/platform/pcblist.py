"""macOS socket tables: the `net.inet.{tcp,udp}.pcblist_n` sysctls, parsed.

Every TCP or UDP socket of the system, without privileges: addresses and
ports, the TCP state, the uid, the last process to use the socket and the
process it acts for, and TCP's smoothed RTT. Sources (xnu-11417.101.15):

- Records (all `#pragma pack(4)`): `struct xinpgen`, `struct xinpcb_n` in
  `bsd/netinet/in_pcb.h`; `struct xsocket_n`, `struct xsockbuf_n`,
  `struct xsockstat_n`, `XSO_*`, `SOF_DELEGATED` in `bsd/sys/socketvar.h`;
  `struct xtcpcb_n` in `bsd/netinet/tcp_var.h` (`TCPT_NTIMERS_EXT` 4 in
  `tcp_timer.h`); state names `tcpstates[]` in `bsd/netinet/tcp_fsm.h`.
- Buffer: an `xinpgen`, then per socket one record of each kind, each
  starting `{u32 len; u32 kind}` and padded to 8 bytes (`ROUNDUP64`), then
  a closing `xinpgen` (`get_pcblist_n` in `bsd/netinet/in_pcblist.c`).
  Walked by length and kind as netstat does (network_cmds `inet.c`
  `protopr`), never by a fixed item size.
- RTT units (`tcp_var.h`, docs/MACOS.md §4.1): `t_srtt` is milliseconds x 32,
  `t_rttvar` milliseconds x 16. There is no cumulative retransmit counter
  (`t_rxtshift` is the current back-off), so none is reported.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from netoproc.model import IPPROTO_TCP, V4_MAPPED_PREFIX, addr_from_bytes
from netoproc.platform.darwin_structs import (
    In6Addr,
    KernelDataError,
    Packed4,
    read_struct,
)

XSO_SOCKET = 0x001
XSO_RCVBUF = 0x002
XSO_SNDBUF = 0x004
XSO_STATS = 0x008
XSO_INPCB = 0x010
XSO_TCPCB = 0x020
INP_IPV4 = 0x1
INP_IPV6 = 0x2
SOF_DELEGATED = 0x10000000
TCPS_LISTEN = 1

TCP_STATES = (
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
    "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
)  # fmt: skip
TCP_RTT_SCALE = 32  # 1 << TCP_RTT_SHIFT
TCP_RTTVAR_SCALE = 16  # 1 << TCP_RTTVAR_SHIFT


class XInpGen(Packed4):
    _fields_ = (
        ("xig_len", ctypes.c_uint32),
        ("xig_count", ctypes.c_uint),
        ("xig_gen", ctypes.c_uint64),
        ("xig_sogen", ctypes.c_uint64),
    )


class InpDepend4(Packed4):
    _fields_ = (("inp4_ip_tos", ctypes.c_uint8),)


class InpDepend6(Packed4):
    _fields_ = (
        ("inp6_hlim", ctypes.c_uint8),
        ("inp6_cksum", ctypes.c_int),
        ("inp6_ifindex", ctypes.c_uint16),
        ("inp6_hops", ctypes.c_int16),
    )


class XInpcbN(Packed4):
    _fields_ = (
        ("xi_len", ctypes.c_uint32),
        ("xi_kind", ctypes.c_uint32),
        ("xi_inpp", ctypes.c_uint64),
        ("inp_fport", ctypes.c_uint16.__ctype_be__),  # network byte order
        ("inp_lport", ctypes.c_uint16.__ctype_be__),
        ("inp_ppcb", ctypes.c_uint64),
        ("inp_gencnt", ctypes.c_uint64),
        ("inp_flags", ctypes.c_int),
        ("inp_flow", ctypes.c_uint32),
        ("inp_vflag", ctypes.c_uint8),
        ("inp_ip_ttl", ctypes.c_uint8),
        ("inp_ip_p", ctypes.c_uint8),
        ("inp_faddr", In6Addr),
        ("inp_laddr", In6Addr),
        ("inp_depend4", InpDepend4),
        ("inp_depend6", InpDepend6),
        ("inp_flowhash", ctypes.c_uint32),
        ("inp_flags2", ctypes.c_uint32),
    )


class XSocketN(Packed4):
    _fields_ = (
        ("xso_len", ctypes.c_uint32),
        ("xso_kind", ctypes.c_uint32),
        ("xso_so", ctypes.c_uint64),
        ("so_type", ctypes.c_int16),
        ("so_options", ctypes.c_uint32),
        ("so_linger", ctypes.c_int16),
        ("so_state", ctypes.c_int16),
        ("so_pcb", ctypes.c_uint64),
        ("xso_protocol", ctypes.c_int),
        ("xso_family", ctypes.c_int),
        ("so_qlen", ctypes.c_int16),
        ("so_incqlen", ctypes.c_int16),
        ("so_qlimit", ctypes.c_int16),
        ("so_timeo", ctypes.c_int16),
        ("so_error", ctypes.c_uint16),
        ("so_pgid", ctypes.c_int32),
        ("so_oobmark", ctypes.c_uint32),
        ("so_uid", ctypes.c_uint32),
        ("so_last_pid", ctypes.c_int32),
        ("so_e_pid", ctypes.c_int32),
        ("so_gencnt", ctypes.c_uint64),
        ("so_flags", ctypes.c_uint32),
        ("so_flags1", ctypes.c_uint32),
        ("so_usecount", ctypes.c_int32),
        ("so_retaincnt", ctypes.c_int32),
        ("xso_filter_flags", ctypes.c_uint32),
    )


class XSockbufN(Packed4):
    _fields_ = (
        ("xsb_len", ctypes.c_uint32),
        ("xsb_kind", ctypes.c_uint32),
        ("sb_cc", ctypes.c_uint32),
        ("sb_hiwat", ctypes.c_uint32),
        ("sb_mbcnt", ctypes.c_uint32),
        ("sb_mbmax", ctypes.c_uint32),
        ("sb_lowat", ctypes.c_int32),
        ("sb_flags", ctypes.c_int16),
        ("sb_timeo", ctypes.c_int16),
    )


class DataStats(Packed4):
    _fields_ = (
        ("rxpackets", ctypes.c_uint64),
        ("rxbytes", ctypes.c_uint64),
        ("txpackets", ctypes.c_uint64),
        ("txbytes", ctypes.c_uint64),
    )


class XSockstatN(Packed4):
    _fields_ = (
        ("xst_len", ctypes.c_uint32),
        ("xst_kind", ctypes.c_uint32),
        ("xst_tc_stats", DataStats * 4),  # SO_TC_STATS_MAX
    )


_U32 = ctypes.c_uint32
_TCP_SEQUENCE_FIELDS = tuple(
    (name, _U32)
    for name in (
        "snd_una", "snd_max", "snd_nxt", "snd_up", "snd_wl1", "snd_wl2", "iss", "irs",
        "rcv_nxt", "rcv_adv", "rcv_wnd", "rcv_up", "snd_wnd", "snd_cwnd", "snd_ssthresh",
        "t_maxopd", "t_rcvtime", "t_starttime",
    )
)  # fmt: skip


class XTcpcbN(Packed4):
    _fields_ = (
        ("xt_len", ctypes.c_uint32),
        ("xt_kind", ctypes.c_uint32),
        ("t_segq", ctypes.c_uint64),
        ("t_dupacks", ctypes.c_int),
        ("t_timer", ctypes.c_int * 4),  # TCPT_NTIMERS_EXT
        ("t_state", ctypes.c_int),
        ("t_flags", ctypes.c_uint),
        ("t_force", ctypes.c_int),
        *_TCP_SEQUENCE_FIELDS,
        ("t_rtttime", ctypes.c_int),
        ("t_rtseq", _U32),
        ("t_rxtcur", ctypes.c_int),
        ("t_maxseg", ctypes.c_uint),
        ("t_srtt", ctypes.c_int),
        ("t_rttvar", ctypes.c_int),
        ("t_rxtshift", ctypes.c_int),
        ("t_rttmin", ctypes.c_uint),
        ("t_rttupdated", _U32),
        ("max_sndwnd", _U32),
        ("t_softerror", ctypes.c_int),
        ("t_oobflags", ctypes.c_char),
        ("t_iobc", ctypes.c_char),
        ("snd_scale", ctypes.c_uint8),
        ("rcv_scale", ctypes.c_uint8),
        ("request_r_scale", ctypes.c_uint8),
        ("requested_s_scale", ctypes.c_uint8),
        ("ts_recent", _U32),
        ("ts_recent_age", _U32),
        ("last_ack_sent", _U32),
        ("cc_send", _U32),
        ("cc_recv", _U32),
        ("snd_recover", _U32),
        ("snd_cwnd_prev", _U32),
        ("snd_ssthresh_prev", _U32),
    )


# The records of one socket we read, by kind; others (buffers, counters) are skipped.
_NEEDED = {IPPROTO_TCP: XSO_INPCB | XSO_SOCKET | XSO_TCPCB}
_NEEDED_OTHER = XSO_INPCB | XSO_SOCKET
_XGEN = struct.Struct("<II")  # netstat's struct xgen_n: the {len, kind} every record starts with


class _Item:
    """The records of one socket, as they arrive."""

    def __init__(self) -> None:
        self.kinds = 0
        self.inp: XInpcbN | None = None
        self.so: XSocketN | None = None
        self.tcp: XTcpcbN | None = None


@dataclass(frozen=True, slots=True)
class PcbSocket:
    """One socket from a pcblist_n table. Addresses are in `model`'s 128-bit form."""

    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    state: str  # TCP state name (tcp_fsm.h); for UDP "ESTABLISHED" if connected, else "UNCONN"
    uid: int
    pid: int  # the owner: the delegating process if the socket acts for one, else the last user
    last_pid: int
    e_pid: int
    srtt_ms: float | None = None  # TCP, once RTT has been sampled
    rttvar_ms: float | None = None


def _roundup64(n: int) -> int:
    return (n + 7) & ~7


def _address(vflag: int, addr: In6Addr) -> int:
    raw = bytes(addr.s6_addr)
    if vflag & INP_IPV6:
        return addr_from_bytes(raw)  # dual-stack wildcards stay :: (any family)
    return addr_from_bytes(raw[12:])  # INP_IPV4: the in_addr_4in6's last 4 bytes


def parse_pcblist(buf: bytes, proto: int) -> list[PcbSocket]:
    """The sockets in a `pcblist_n` buffer; raises `KernelDataError` if it is cut short."""
    what = f"pcblist_n ({'tcp' if proto == IPPROTO_TCP else 'udp'})"
    head = read_struct(XInpGen, buf, 0, f"{what} header")
    if head.xig_len != ctypes.sizeof(XInpGen):
        raise KernelDataError(f"{what}: starts with a {head.xig_len}-byte header, not an xinpgen")
    if head.xig_count == 0 and len(buf) == head.xig_len:
        return []  # an empty table is the header alone, with no closing xinpgen
    needed = _NEEDED.get(proto, _NEEDED_OTHER)
    sockets: list[PcbSocket] = []
    item = _Item()
    at = _roundup64(head.xig_len)
    while True:
        if at + _XGEN.size > len(buf):
            raise KernelDataError(f"{what}: truncated at byte {at}, before the closing xinpgen")
        length, kind = _XGEN.unpack_from(buf, at)
        if length <= ctypes.sizeof(XInpGen):  # the closing xinpgen
            break
        if at + length > len(buf):
            raise KernelDataError(f"{what}: a {length}-byte record at byte {at} is cut short")
        if kind == XSO_INPCB or item.kinds & kind:  # the next socket's records begin
            sockets += _socket(item, needed, proto, head.xig_gen)
            item = _Item()
        item.kinds |= kind
        if kind == XSO_INPCB:
            item.inp = read_struct(XInpcbN, buf, at, f"{what} xinpcb_n", length)
        elif kind == XSO_SOCKET:
            item.so = read_struct(XSocketN, buf, at, f"{what} xsocket_n", length)
        elif kind == XSO_TCPCB:
            item.tcp = read_struct(XTcpcbN, buf, at, f"{what} xtcpcb_n", length)
        at += _roundup64(length)
    return sockets + _socket(item, needed, proto, head.xig_gen)


def _socket(item: _Item, needed: int, proto: int, generation: int) -> list[PcbSocket]:
    """The socket an item describes; none if it is incomplete or newer than the table."""
    inp, so, tcp = item.inp, item.so, item.tcp
    if item.kinds & needed != needed or inp is None or so is None:
        return []
    if inp.inp_gencnt > generation:  # created while the table was being copied
        return []
    laddr, raddr = _address(inp.inp_vflag, inp.inp_laddr), _address(inp.inp_vflag, inp.inp_faddr)
    lport, rport = int(inp.inp_lport), int(inp.inp_fport)
    srtt = rttvar = None
    if tcp is not None:
        state = TCP_STATES[tcp.t_state] if 0 <= tcp.t_state < len(TCP_STATES) else "UNKNOWN"
        if tcp.t_rttupdated and tcp.t_state != TCPS_LISTEN:
            srtt, rttvar = tcp.t_srtt / TCP_RTT_SCALE, tcp.t_rttvar / TCP_RTTVAR_SCALE
    else:
        state = "ESTABLISHED" if rport or raddr not in (0, V4_MAPPED_PREFIX) else "UNCONN"
    delegated = so.so_flags & SOF_DELEGATED and so.so_e_pid > 0
    return [
        PcbSocket(
            proto=proto,
            laddr=laddr,
            lport=lport,
            raddr=raddr,
            rport=rport,
            state=state,
            uid=int(so.so_uid),
            pid=int(so.so_e_pid if delegated else so.so_last_pid),
            last_pid=int(so.so_last_pid),
            e_pid=int(so.so_e_pid),
            srtt_ms=srtt,
            rttvar_ms=rttvar,
        )
    ]
