"""macOS libproc records: a process's file descriptors and what its sockets are.

`proc_pidinfo(pid, PROC_PIDLISTFDS)` lists `struct proc_fdinfo`;
`proc_pidfdinfo(pid, fd, PROC_PIDFDSOCKETINFO)` describes one socket as a
`struct socket_fdinfo`. Both are parsed here from bytes; the calls are made
by `platform/darwin.py`. The socket table itself comes from pcblist_n; these
give the fd numbers of the expanded Process view.

Layouts (natural alignment) and constants: xnu-11417.101.15
`bsd/sys/proc_info.h` (`proc_fdinfo`, `proc_fileinfo`, `vinfo_stat`,
`sockbuf_info`, `in_sockinfo`, `tcp_sockinfo`, `un_sockinfo`, `socket_info`,
`socket_fdinfo`; `PROX_FDTYPE_SOCKET`, `SOCKINFO_*`, `INI_IPV4/6`,
`TSI_S_*`); how the kernel fills them: `bsd/kern/socket_info.c`; how psutil
reads them: `psutil/arch/osx/proc.c`. The `soi_proto` union is declared with
its largest member, `un_sockinfo` (`SOCK_MAXADDRLEN` 255).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from netoproc.model import addr_from_bytes
from netoproc.platform.darwin_structs import In6Addr, KernelDataError, Struct, read_struct

PROC_PIDLISTFDS = 1
PROC_PIDFDSOCKETINFO = 3
PROX_FDTYPE_SOCKET = 2
SOCKINFO_IN = 1
SOCKINFO_TCP = 2
INI_IPV4 = 0x1
INI_IPV6 = 0x2
AF_INET = 2
AF_INET6 = 30  # Darwin's value
SOCK_MAXADDRLEN = 255
TSI_T_NTIMERS = 4
# TSI_S_* (the kernel's TCPS_* values), named as netstat names them
TCP_STATES = (
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
    "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
)  # fmt: skip


class ProcFdInfo(Struct):
    _fields_ = (("proc_fd", ctypes.c_int32), ("proc_fdtype", ctypes.c_uint32))


class ProcFileInfo(Struct):
    _fields_ = (
        ("fi_openflags", ctypes.c_uint32),
        ("fi_status", ctypes.c_uint32),
        ("fi_offset", ctypes.c_int64),
        ("fi_type", ctypes.c_int32),
        ("fi_guardflags", ctypes.c_uint32),
    )


_TIMES = tuple(
    (name, ctypes.c_int64)
    for name in (
        "vst_atime", "vst_atimensec", "vst_mtime", "vst_mtimensec", "vst_ctime",
        "vst_ctimensec", "vst_birthtime", "vst_birthtimensec", "vst_size", "vst_blocks",
    )
)  # fmt: skip


class VinfoStat(Struct):
    _fields_ = (
        ("vst_dev", ctypes.c_uint32),
        ("vst_mode", ctypes.c_uint16),
        ("vst_nlink", ctypes.c_uint16),
        ("vst_ino", ctypes.c_uint64),
        ("vst_uid", ctypes.c_uint32),
        ("vst_gid", ctypes.c_uint32),
        *_TIMES,
        ("vst_blksize", ctypes.c_int32),
        ("vst_flags", ctypes.c_uint32),
        ("vst_gen", ctypes.c_uint32),
        ("vst_rdev", ctypes.c_uint32),
        ("vst_qspare", ctypes.c_int64 * 2),
    )


class SockbufInfo(Struct):
    _fields_ = (
        ("sbi_cc", ctypes.c_uint32),
        ("sbi_hiwat", ctypes.c_uint32),
        ("sbi_mbcnt", ctypes.c_uint32),
        ("sbi_mbmax", ctypes.c_uint32),
        ("sbi_lowat", ctypes.c_uint32),
        ("sbi_flags", ctypes.c_int16),
        ("sbi_timeo", ctypes.c_int16),
    )


class InsiV4(Struct):
    _fields_ = (("in4_tos", ctypes.c_uint8),)


class InsiV6(Struct):
    _fields_ = (
        ("in6_hlim", ctypes.c_uint8),
        ("in6_cksum", ctypes.c_int),
        ("in6_ifindex", ctypes.c_uint16),
        ("in6_hops", ctypes.c_int16),
    )


class InSockinfo(Struct):
    _fields_ = (
        ("insi_fport", ctypes.c_int),  # a network-order u16 in the low-addressed bytes
        ("insi_lport", ctypes.c_int),
        ("insi_gencnt", ctypes.c_uint64),
        ("insi_flags", ctypes.c_uint32),
        ("insi_flow", ctypes.c_uint32),
        ("insi_vflag", ctypes.c_uint8),
        ("insi_ip_ttl", ctypes.c_uint8),
        ("rfu_1", ctypes.c_uint32),
        ("insi_faddr", In6Addr),
        ("insi_laddr", In6Addr),
        ("insi_v4", InsiV4),
        ("insi_v6", InsiV6),
    )


class TcpSockinfo(Struct):
    _fields_ = (
        ("tcpsi_ini", InSockinfo),
        ("tcpsi_state", ctypes.c_int),
        ("tcpsi_timer", ctypes.c_int * TSI_T_NTIMERS),
        ("tcpsi_mss", ctypes.c_int),
        ("tcpsi_flags", ctypes.c_uint32),
        ("rfu_1", ctypes.c_uint32),
        ("tcpsi_tp", ctypes.c_uint64),
    )


class UnSockinfo(Struct):
    _fields_ = (
        ("unsi_conn_so", ctypes.c_uint64),
        ("unsi_conn_pcb", ctypes.c_uint64),
        ("unsi_addr", ctypes.c_uint8 * SOCK_MAXADDRLEN),
        ("unsi_caddr", ctypes.c_uint8 * SOCK_MAXADDRLEN),
    )


class SocketProto(ctypes.Union):
    _fields_ = (("pri_in", InSockinfo), ("pri_tcp", TcpSockinfo), ("pri_un", UnSockinfo))


class SocketInfo(Struct):
    _fields_ = (
        ("soi_stat", VinfoStat),
        ("soi_so", ctypes.c_uint64),
        ("soi_pcb", ctypes.c_uint64),
        ("soi_type", ctypes.c_int),
        ("soi_protocol", ctypes.c_int),
        ("soi_family", ctypes.c_int),
        ("soi_options", ctypes.c_int16),
        ("soi_linger", ctypes.c_int16),
        ("soi_state", ctypes.c_int16),
        ("soi_qlen", ctypes.c_int16),
        ("soi_incqlen", ctypes.c_int16),
        ("soi_qlimit", ctypes.c_int16),
        ("soi_timeo", ctypes.c_int16),
        ("soi_error", ctypes.c_uint16),
        ("soi_oobmark", ctypes.c_uint32),
        ("soi_rcv", SockbufInfo),
        ("soi_snd", SockbufInfo),
        ("soi_kind", ctypes.c_int),
        ("rfu_1", ctypes.c_uint32),
        ("soi_proto", SocketProto),
    )


class SocketFdInfo(Struct):
    _fields_ = (("pfi", ProcFileInfo), ("psi", SocketInfo))


@dataclass(frozen=True, slots=True)
class FdSocket:
    """An Internet socket behind a file descriptor, in `model`'s 128-bit address form."""

    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    state: str  # TCP state name, "" for UDP

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        return (self.proto, self.laddr, self.lport, self.raddr, self.rport)


def parse_fds(buf: bytes) -> list[tuple[int, int]]:
    """(fd, PROX_FDTYPE_*) of each entry of a PROC_PIDLISTFDS buffer."""
    size = ctypes.sizeof(ProcFdInfo)
    if len(buf) % size:
        raise KernelDataError(f"proc_fdinfo list: {len(buf)} bytes is not a whole number of {size}")
    entries = (ProcFdInfo * (len(buf) // size)).from_buffer_copy(buf)
    return [(entry.proc_fd, entry.proc_fdtype) for entry in entries]


def socket_fds(buf: bytes) -> list[int]:
    return [fd for fd, kind in parse_fds(buf) if kind == PROX_FDTYPE_SOCKET]


def _port(value: int) -> int:
    low = value & 0xFFFF  # the kernel stored a network-order u16: swap its bytes
    return (low & 0xFF) << 8 | low >> 8


def _address(vflag: int, addr: In6Addr) -> int:
    raw = bytes(addr.s6_addr)
    return addr_from_bytes(raw if vflag & INI_IPV6 else raw[12:])


def parse_socket_fdinfo(buf: bytes) -> FdSocket | None:
    """The socket a PROC_PIDFDSOCKETINFO buffer describes; None if not TCP or UDP over IP."""
    info = read_struct(SocketFdInfo, buf, 0, "socket_fdinfo").psi
    if info.soi_family not in (AF_INET, AF_INET6) or info.soi_kind not in (
        SOCKINFO_IN,
        SOCKINFO_TCP,
    ):
        return None
    tcp = info.soi_kind == SOCKINFO_TCP
    ini = info.soi_proto.pri_tcp.tcpsi_ini if tcp else info.soi_proto.pri_in
    state = ""
    if tcp:
        number = info.soi_proto.pri_tcp.tcpsi_state
        state = TCP_STATES[number] if 0 <= number < len(TCP_STATES) else "UNKNOWN"
    return FdSocket(
        proto=int(info.soi_protocol),
        laddr=_address(ini.insi_vflag, ini.insi_laddr),
        lport=_port(ini.insi_lport),
        raddr=_address(ini.insi_vflag, ini.insi_faddr),
        rport=_port(ini.insi_fport),
        state=state,
    )
