"""macOS kernel buffers built from docs/MACOS.md's documented layouts, and a
recorded kernel that serves them to `platform.darwin`.

Offsets are docs/MACOS.md's (section in each comment), never netoproc's
ctypes classes, so a slip in either side shows. Addresses are text.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from netoproc.model import ProcessRef

# -- pcblist_n (docs/MACOS.md §4.1) ---------------------------------------------------

XSO_SOCKET, XSO_RCVBUF, XSO_SNDBUF, XSO_STATS, XSO_INPCB, XSO_TCPCB = 1, 2, 4, 8, 0x10, 0x20
INP_IPV4, INP_IPV6 = 1, 2
SOF_DELEGATED = 0x10000000  # xnu bsd/sys/socketvar.h (not in docs/MACOS.md)
SO_FLAGS_AT = 84  # xsocket_n: so_flags follows the u64 so_gencnt at 76 (xnu socketvar.h)
TCPS = {"CLOSED": 0, "LISTEN": 1, "SYN_SENT": 2, "ESTABLISHED": 4, "TIME_WAIT": 10}


def _roundup8(n: int) -> int:
    return (n + 7) & ~7


def xinpgen(count: int, gen: int) -> bytes:
    """xig_len 0, xig_count 4, xig_gen 8 (u64), xig_sogen 16; 24 bytes."""
    return struct.pack("<IIQQ", 24, count, gen, gen)


def record(kind: int, size: int, *fields: tuple[int, str, object]) -> bytes:
    """A sub-record: {u32 len; u32 kind}, fields at offsets, padded to 8 (ROUNDUP64)."""
    buf = bytearray(_roundup8(size))
    struct.pack_into("<II", buf, 0, size, kind)
    for at, fmt, value in fields:
        struct.pack_into(fmt, buf, at, value)
    return bytes(buf)


def _in6(text: str) -> tuple[int, bytes]:
    addr = ipaddress.ip_address(text)
    if addr.version == 4:
        return INP_IPV4, bytes(12) + addr.packed  # in_addr_4in6: the address in the last 4
    return INP_IPV6, addr.packed


@dataclass
class Pcb:
    """One socket of a pcblist_n table, as text."""

    local: str
    lport: int
    remote: str = "0.0.0.0"
    rport: int = 0
    state: str | None = None  # TCP only
    uid: int = 501
    last_pid: int = 0
    e_pid: int = 0
    delegated: bool = False
    gencnt: int = 1
    srtt: int = 0  # raw t_srtt (ms x 32)
    rttvar: int = 0  # raw t_rttvar (ms x 16)
    rtt_samples: int = 0
    dual_stack: bool = False  # INP_IPV4 | INP_IPV6 (a tcp46 socket)


def pcb_item(proto: int, pcb: Pcb) -> bytes:
    lflag, laddr = _in6(pcb.local)
    _rflag, raddr = _in6(pcb.remote)
    vflag = INP_IPV4 | INP_IPV6 if pcb.dual_stack else lflag
    family = 30 if vflag & INP_IPV6 else 2
    item = record(
        XSO_INPCB, 104,  # xinpcb_n
        (16, ">H", pcb.rport), (18, ">H", pcb.lport), (28, "<Q", pcb.gencnt),
        (44, "B", vflag), (46, "B", proto), (48, "16s", raddr), (64, "16s", laddr),
    ) + record(
        XSO_SOCKET, 104,  # xsocket_n
        (16, "<h", 1 if proto == 6 else 2), (36, "<i", proto), (40, "<i", family),
        (64, "<I", pcb.uid), (68, "<i", pcb.last_pid), (72, "<i", pcb.e_pid),
        (SO_FLAGS_AT, "<I", SOF_DELEGATED if pcb.delegated else 0),
    ) + record(XSO_RCVBUF, 32) + record(XSO_SNDBUF, 32) + record(XSO_STATS, 136)  # fmt: skip
    if proto == 6:
        item += record(
            XSO_TCPCB, 204,  # xtcpcb_n
            (36, "<i", TCPS[pcb.state or "ESTABLISHED"]), (136, "<i", pcb.srtt),
            (140, "<i", pcb.rttvar), (152, "<I", pcb.rtt_samples),
        )  # fmt: skip
    return item


def pcblist(proto: int, pcbs: Sequence[Pcb], gen: int = 100) -> bytes:
    """A whole pcblist_n buffer: xinpgen, the items, the closing xinpgen."""
    body = b"".join(pcb_item(proto, p) for p in pcbs)
    return xinpgen(len(pcbs), gen) + body + xinpgen(len(pcbs), gen)


# -- libproc (docs/MACOS.md §3.1/§3.2) -------------------------------------------------

PROX_FDTYPE_VNODE, PROX_FDTYPE_SOCKET = 1, 2
SOCKINFO_IN, SOCKINFO_TCP, SOCKINFO_UN = 1, 2, 3


def fd_list(*entries: tuple[int, int]) -> bytes:
    """struct proc_fdinfo {int32 proc_fd; uint32 proc_fdtype;} per entry."""
    return b"".join(struct.pack("<iI", fd, kind) for fd, kind in entries)


def socket_fdinfo(
    proto: int, local: str, lport: int, remote: str = "0.0.0.0", rport: int = 0,
    *, state: str | None = None, family: int | None = None,
) -> bytes:  # fmt: skip
    """struct socket_fdinfo (792 B) at the absolute offsets of docs/MACOS.md §3.2."""
    buf = bytearray(792)
    vflag, laddr = _in6(local)
    _rflag, raddr = _in6(remote)
    tcp = proto == 6
    struct.pack_into("<iii", buf, 176, 1 if tcp else 2, proto, family or (2 if vflag == 1 else 30))
    struct.pack_into("<i", buf, 256, SOCKINFO_TCP if tcp else SOCKINFO_IN)
    struct.pack_into(">H", buf, 264, rport)  # insi_fport: network order in the low bytes
    struct.pack_into(">H", buf, 268, lport)
    struct.pack_into("B", buf, 288, vflag)
    buf[296:312], buf[312:328] = raddr, laddr
    if tcp:
        struct.pack_into("<i", buf, 344, TCPS[state or "ESTABLISHED"])
    return bytes(buf)


# -- ifmibdata (docs/MACOS.md §6) -----------------------------------------------------------

IFF_UP = 0x1
IFT_ETHER, IFT_LOOP, IFT_OTHER, IFT_BRIDGE, IFT_PKTAP = 0x06, 0x18, 0x01, 0xD1, 0xFE


def ifmibdata(
    name: str, *, up: bool = True, iftype: int = IFT_ETHER, ibytes: int = 0, obytes: int = 0,
    ipackets: int = 0, opackets: int = 0, ierrors: int = 0, oerrors: int = 0,
) -> bytes:  # fmt: skip
    """180 bytes: ifmd_name 0, ifmd_flags 20, ifmd_data (if_data64) at 52."""
    buf = bytearray(180)
    buf[: len(name)] = name.encode()
    struct.pack_into("<I", buf, 20, IFF_UP if up else 0)
    data = 52
    struct.pack_into("B", buf, data, iftype)
    for at, value in ((24, ipackets), (32, ierrors), (40, opackets), (48, oerrors),
                      (64, ibytes), (72, obytes)):  # fmt: skip
        struct.pack_into("<Q", buf, data + at, value)
    return bytes(buf)


# -- command output (docs/MACOS.md §5.1, §6) ------------------------------------------------

SCUTIL_DNS = """\
DNS configuration

resolver #1
  search domain[0] : lan
  nameserver[0] : 192.168.1.1
  nameserver[1] : 8.8.8.8
  if_index : 6 (en0)
  flags    : Request A records
  reach    : 0x00020002 (Reachable,Directly Reachable Address)

resolver #2
  domain   : local
  options  : mdns
  timeout  : 5
  flags    : Request A records, Request AAAA records
  reach    : 0x00000000 (Not Reachable)
  order    : 300000

resolver #3
  domain   : corp.example
  nameserver[0] : 10.0.0.1
  if_index : 23 (utun3)
  flags    : Supplemental, Request A records
  reach    : 0x00000003 (Reachable,Transient Connection)
  order    : 102200

DNS configuration (for scoped queries)

resolver #1
  search domain[0] : lan
  nameserver[0] : 192.168.1.1
  nameserver[1] : fe80::1%en0
  if_index : 6 (en0)
  flags    : Scoped, Request A records, Request AAAA records
  reach    : 0x00020002 (Reachable,Directly Reachable Address)

resolver #2
  nameserver[0] : fe80::aa%en7
  flags    : Scoped, Request AAAA records
  reach    : 0x00020002 (Reachable,Directly Reachable Address)
"""

NETWORKSETUP_PORTS = """\

Hardware Port: Ethernet Adapter (en4)
Device: en4
Ethernet Address: 7a:6f:00:00:00:04

Hardware Port: Wi-Fi
Device: en0
Ethernet Address: a4:83:e7:00:00:01

Hardware Port: Thunderbolt Bridge
Device: bridge0
Ethernet Address: N/A

Hardware Port: Thunderbolt 1
Device: en1
Ethernet Address: 36:00:00:00:00:01

VLAN Configurations
===================
"""

# -- the recorded kernel -----------------------------------------------------------------

IFALLDATA_MIB = (
    4,
    18,
    0,
    3,
    0,
    1,
)  # docs/MACOS.md §6: CTL_NET, PF_LINK, 0, IFMIB_IFALLDATA, 0, GENERAL


@dataclass
class FakeDarwinKernel:
    tcp: bytes = b""
    udp: bytes = b""
    ifalldata: bytes = b""
    fds: dict[int, bytes] = field(default_factory=dict)
    sockets: dict[tuple[int, int], bytes] = field(default_factory=dict)
    scutil: str | None = SCUTIL_DNS
    networksetup: str | None = NETWORKSETUP_PORTS
    interface_addresses: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict
    )
    processes: dict[int, ProcessRef] = field(default_factory=dict)
    commands_run: list[tuple[str, ...]] = field(default_factory=list)

    def sysctl_by_name(self, name: str) -> bytes:
        tables = {"net.inet.tcp.pcblist_n": self.tcp, "net.inet.udp.pcblist_n": self.udp}
        if not tables.get(name):
            raise OSError(errno.ENOENT, name)
        return tables[name]

    def sysctl(self, mib: Sequence[int]) -> bytes:
        assert tuple(mib) == IFALLDATA_MIB
        if not self.ifalldata:
            raise OSError(errno.ENOENT, "ifalldata")
        return self.ifalldata

    def fd_list(self, pid: int) -> bytes:
        if pid not in self.fds:
            raise OSError(errno.ESRCH, str(pid))
        return self.fds[pid]

    def socket_info(self, pid: int, fd: int) -> bytes:
        if (pid, fd) not in self.sockets:
            raise OSError(errno.EBADF, str(fd))
        return self.sockets[pid, fd]

    def run(self, argv: Sequence[str]) -> str | None:
        self.commands_run.append(tuple(argv))
        return {"scutil": self.scutil, "networksetup": self.networksetup}[argv[0].split("/")[-1]]

    def addresses(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return self.interface_addresses

    def describe(self, pid: int) -> ProcessRef | None:
        return self.processes.get(pid)
