"""The macOS platform: sockets from pcblist_n, fds from libproc, interfaces from
ifalldata, names from networksetup, resolvers from scutil.

With PKTAP most packets arrive naming their process; this answers for the
rest (and for the plain-BPF fallback): who owns a socket, its TCP state and
RTT, which fd each owner holds it under, the interfaces with 64-bit
counters, and the DNS servers of each interface.

Everything the OS is asked goes through a `DarwinKernel`: `LibSystem` makes
the real calls through ctypes (libSystem is loaded when a `LibSystem` is
made, never at import), tests substitute recorded buffers. The parsers are
pure: `pcblist`, `libproc`, `ifmib`, `scutil`, `networksetup`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import psutil

from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    V4_MAPPED_PREFIX,
    FlowKey,
    InterfaceInfo,
    NatEntry,
    OwnerSighting,
    ProcessRef,
    SocketInfo,
    TcpKernelInfo,
    is_v4,
)
from netoproc.platform import PlatformError
from netoproc.platform.darwin_structs import KernelDataError
from netoproc.platform.ifmib import IFALLDATA_MIB, IfCounters, parse_ifalldata
from netoproc.platform.libproc import (
    PROC_PIDFDSOCKETINFO,
    PROC_PIDLISTFDS,
    SocketFdInfo,
    parse_socket_fdinfo,
    socket_fds,
)
from netoproc.platform.networksetup import parse_hardware_ports
from netoproc.platform.pcblist import PcbSocket, parse_pcblist
from netoproc.platform.processes import ProcessNames
from netoproc.platform.scutil import parse_scutil_dns, servers_by_interface

log = logging.getLogger("netoproc")

MAX_LOOKUPS = 512  # beyond this many new flows at once, the caller takes the full table
PCBLISTS = {IPPROTO_TCP: "net.inet.tcp.pcblist_n", IPPROTO_UDP: "net.inet.udp.pcblist_n"}
SCUTIL = ("/usr/sbin/scutil", "--dns")
NETWORKSETUP = ("/usr/sbin/networksetup", "-listallhardwareports")
LIBSYSTEM = "/usr/lib/libSystem.B.dylib"

# IFT_* (bsd/net/if_types.h) -> kind, for interfaces that are no hardware port
IFT_OTHER, IFT_ETHER, IFT_PPP, IFT_LOOP, IFT_GIF, IFT_STF = 0x01, 0x06, 0x17, 0x18, 0x37, 0x39
IFT_L2VLAN, IFT_BRIDGE, IFT_PKTAP, IFT_CELLULAR = 0x87, 0xD1, 0xFE, 0xFF
KINDS = {
    IFT_LOOP: "Loopback",
    IFT_ETHER: "Virtual Ethernet",
    IFT_BRIDGE: "Bridge",
    IFT_GIF: "Tunnel",
    IFT_STF: "Tunnel",
    IFT_PPP: "PPP",
    IFT_L2VLAN: "VLAN",
    IFT_CELLULAR: "Cellular",
}
VPN_PREFIXES = ("utun", "ipsec", "ppp")
# a sysctl call with the output buffer (None to ask the size) and its length, in and out
SysctlCall = Callable[[ctypes.Array[ctypes.c_char] | None, ctypes.c_size_t], int]


def describe_owners() -> tuple[str, list[str]]:
    """PKTAP names the process in each packet; the socket table answers for the rest."""
    lacking = [] if os.geteuid() == 0 else ["root"]
    return "PKTAP (the process in every packet); the rest: pcblist_n + libproc", lacking


class DarwinKernel(Protocol):
    """What the platform asks the OS; tests substitute recorded answers."""

    def sysctl_by_name(self, name: str) -> bytes: ...

    def sysctl(self, mib: Sequence[int]) -> bytes: ...

    def fd_list(self, pid: int) -> bytes:
        """proc_pidinfo(PROC_PIDLISTFDS); OSError if the process is gone."""
        ...

    def socket_info(self, pid: int, fd: int) -> bytes:
        """proc_pidfdinfo(PROC_PIDFDSOCKETINFO); OSError if the fd is gone."""
        ...

    def run(self, argv: Sequence[str]) -> str | None:
        """A command's output, None if it failed."""
        ...

    def addresses(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """(IPv4, IPv6) addresses of each interface."""
        ...

    def describe(self, pid: int) -> ProcessRef | None: ...


_SIZE_P = ctypes.POINTER(ctypes.c_size_t)
_INT, _VOID_P = ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {  # every return type is int (sys/sysctl.h, libproc.h)
    "sysctlbyname": (ctypes.c_char_p, _VOID_P, _SIZE_P, _VOID_P, ctypes.c_size_t),
    "sysctl": (ctypes.POINTER(_INT), ctypes.c_uint, _VOID_P, _SIZE_P, _VOID_P, ctypes.c_size_t),
    "proc_pidinfo": (_INT, _INT, ctypes.c_uint64, _VOID_P, _INT),
    "proc_pidfdinfo": (_INT, _INT, _INT, _VOID_P, _INT),
}


class PsutilFacts:
    """What ProcessNames asks of a process (platform/processes.py), from psutil."""

    def started(self, pid: int) -> float:
        try:
            return float(psutil.Process(pid).create_time())
        except psutil.NoSuchProcess:  # and zombies
            raise ProcessLookupError(pid) from None
        except psutil.AccessDenied:
            raise PermissionError(pid) from None

    def name_and_uid(self, pid: int) -> tuple[str, int]:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                name, uid = process.name(), process.uids().real
        except psutil.NoSuchProcess:
            raise ProcessLookupError(pid) from None
        except psutil.AccessDenied:
            raise PermissionError(pid) from None
        # names are bytes on disk: undecodable ones arrive as surrogates; show them as \xNN
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), uid


class LibSystem:
    """The real one: sysctl(3) and libproc through ctypes, psutil, subprocess."""

    def __init__(self, path: str = LIBSYSTEM) -> None:
        try:
            self._lib = ctypes.CDLL(path, use_errno=True)
        except OSError as exc:
            raise PlatformError(f"cannot load {path}: {exc}") from None
        for function, argtypes in _SIGNATURES.items():
            getattr(self._lib, function).argtypes = argtypes
        self._names = ProcessNames(PsutilFacts())

    @staticmethod
    def _error(call: str) -> OSError:
        number = ctypes.get_errno()
        return OSError(number, f"{call}: {os.strerror(number)}")

    def _read_sized(self, call: str, fetch: SysctlCall) -> bytes:
        """A sysctl's value: ask its size, then read it, with room to grow."""
        size = ctypes.c_size_t(0)
        if fetch(None, size) != 0:
            raise self._error(call)
        for _ in range(8):
            room = size.value + size.value // 4 + 4096
            buf = ctypes.create_string_buffer(room)
            size = ctypes.c_size_t(room)
            if fetch(buf, size) == 0:
                return buf.raw[: size.value]
            if ctypes.get_errno() != errno.ENOMEM:  # ENOMEM: the value outgrew the room
                raise self._error(call)
        raise OSError(errno.ENOMEM, f"{call}: keeps growing")

    def sysctl_by_name(self, name: str) -> bytes:
        return self._read_sized(
            name, lambda buf, size: self._lib.sysctlbyname(name.encode(), buf, size, None, 0)
        )

    def sysctl(self, mib: Sequence[int]) -> bytes:
        name = (ctypes.c_int * len(mib))(*mib)
        return self._read_sized(
            f"sysctl {list(mib)}",
            lambda buf, size: self._lib.sysctl(name, len(mib), buf, size, None, 0),
        )

    def fd_list(self, pid: int) -> bytes:
        size = self._lib.proc_pidinfo(pid, PROC_PIDLISTFDS, 0, None, 0)
        if size <= 0:
            raise self._error(f"proc_pidinfo({pid}, PROC_PIDLISTFDS)")
        buf = ctypes.create_string_buffer(size + 32 * 8)  # room for fds opened meanwhile
        got = self._lib.proc_pidinfo(pid, PROC_PIDLISTFDS, 0, buf, len(buf))
        if got <= 0:
            raise self._error(f"proc_pidinfo({pid}, PROC_PIDLISTFDS)")
        return buf.raw[:got]

    def socket_info(self, pid: int, fd: int) -> bytes:
        info = ctypes.create_string_buffer(ctypes.sizeof(SocketFdInfo))
        got = self._lib.proc_pidfdinfo(pid, fd, PROC_PIDFDSOCKETINFO, info, len(info))
        if got <= 0:
            raise self._error(f"proc_pidfdinfo({pid}, {fd})")
        return info.raw[:got]

    def run(self, argv: Sequence[str]) -> str | None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    def addresses(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return {
            name: (
                tuple(a.address for a in addrs if a.family == socket.AF_INET),
                tuple(a.address for a in addrs if a.family == socket.AF_INET6),
            )
            for name, addrs in psutil.net_if_addrs().items()
        }

    def describe(self, pid: int) -> ProcessRef | None:
        return self._names.describe(pid)


SocketKey = tuple[int, int, int, int, int]  # proto, laddr, lport, raddr, rport
K = TypeVar("K")


class _Table:
    """The kernel's socket tables at one moment, searched as the kernel delivers:
    the connected socket, else the one bound to the address, else the wildcard."""

    def __init__(self, sockets: Iterable[PcbSocket]) -> None:
        self.sockets = list(sockets)
        self.exact: dict[SocketKey, PcbSocket] = {}
        self.bound: dict[tuple[int, int, int], PcbSocket] = {}
        for s in self.sockets:
            if s.rport or s.raddr not in (0, V4_MAPPED_PREFIX):
                self.exact.setdefault((s.proto, s.laddr, s.lport, s.raddr, s.rport), s)
            else:
                self.bound.setdefault((s.proto, s.laddr, s.lport), s)

    def find(self, key: FlowKey) -> PcbSocket | None:
        found = self.exact.get((key.proto, key.laddr, key.lport, key.raddr, key.rport))
        if found is not None:
            return found
        bound = self.bound
        return (
            bound.get((key.proto, key.laddr, key.lport))
            or (bound.get((key.proto, V4_MAPPED_PREFIX, key.lport)) if is_v4(key.laddr) else None)
            or bound.get((key.proto, 0, key.lport))
        )


class DarwinPlatform:
    def __init__(self, kernel: DarwinKernel | None = None) -> None:
        self.kernel = kernel or LibSystem()
        self._ports: dict[str, str] | None = None  # networksetup's names, read when needed
        self._ports_for: set[str] = set()  # the interfaces that existed when they were read
        self._last_interfaces: list[InterfaceInfo] = []

    def close(self) -> None:
        pass

    def prefetch(self, flows: Iterable[tuple[int, int, int, int, int]]) -> None:
        """Nothing to do ahead: PKTAP names the process in every packet, the first of
        a short-lived process's too (the session runs no fast lane on macOS)."""

    fast_lane = False

    def sightings(self) -> list[OwnerSighting]:
        return []  # the packets name their process (PKTAP)

    def translations(self, keys: Iterable[FlowKey]) -> dict[FlowKey, NatEntry | None]:
        """No connection tracker to ask here (pf's state table is not read)."""
        return {}

    def owner_source(self) -> tuple[str, str, int]:
        return "capture", "", 0

    # sockets ----------------------------------------------------------------

    def _table(self) -> _Table:
        sockets: list[PcbSocket] = []
        for proto, name in PCBLISTS.items():
            try:
                sockets += parse_pcblist(self.kernel.sysctl_by_name(name), proto)
            except (OSError, KernelDataError) as exc:
                log.warning("cannot read %s: %s", name, exc)
        return _Table(sockets)

    def lookup(self, keys: Iterable[FlowKey]) -> dict[FlowKey, SocketInfo | None] | None:
        """The sockets new flows belong to, from one fresh read of the tables;
        None if there are so many that the caller should take the full table."""
        keys = [key for key in keys if key.proto in PCBLISTS]
        if len(keys) > MAX_LOOKUPS:
            return None
        table = self._table()
        found = {key: table.find(key) for key in keys}
        return self._describe(found)

    def socket_table(self) -> list[SocketInfo]:
        """Every TCP and UDP socket, with owners and their fds."""
        found: dict[int, PcbSocket | None] = dict(enumerate(self._table().sockets))
        return [s for s in self._describe(found).values() if s is not None]

    def _describe(self, found: dict[K, PcbSocket | None]) -> dict[K, SocketInfo | None]:
        owners = {s.pid for s in found.values() if s is not None and s.pid > 0}
        refs = {pid: self.kernel.describe(pid) for pid in owners}
        fds = self._fds({pid for pid, ref in refs.items() if ref is not None})
        out: dict[K, SocketInfo | None] = {}
        for key, s in found.items():
            if s is None:
                out[key] = None
                continue
            owner = refs.get(s.pid)
            tcp = None
            if s.srtt_ms is not None and s.rttvar_ms is not None:
                tcp = TcpKernelInfo(s.srtt_ms, s.rttvar_ms, None)  # pcblist_n counts no retransmits
            out[key] = SocketInfo(
                proto=s.proto,
                laddr=s.laddr,
                lport=s.lport,
                raddr=s.raddr,
                rport=s.rport,
                state=s.state,
                uid=s.uid,
                owner=owner,
                fd=fds.get((s.pid, s.proto, s.laddr, s.lport, s.raddr, s.rport)) if owner else None,
                tcp=tcp,
            )
        return out

    def _fds(self, pids: Iterable[int]) -> dict[tuple[int, int, int, int, int, int], int]:
        """(pid, socket key) -> the lowest fd under which that process holds the socket."""
        found: dict[tuple[int, int, int, int, int, int], int] = {}
        for pid in pids:
            try:
                fds = socket_fds(self.kernel.fd_list(pid))
            except (OSError, KernelDataError):
                continue  # gone, or not ours to look at
            for fd in fds:
                try:
                    sock = parse_socket_fdinfo(self.kernel.socket_info(pid, fd))
                except (OSError, KernelDataError):
                    continue  # closed meanwhile
                if sock is not None:
                    found.setdefault((pid, *sock.key), fd)
        return found

    # interfaces and resolvers -------------------------------------------------

    def interfaces(self) -> list[InterfaceInfo]:
        try:
            counters = parse_ifalldata(self.kernel.sysctl(IFALLDATA_MIB))
        except (OSError, KernelDataError) as exc:
            log.warning("cannot read interface counters: %s", exc)
            return self._last_interfaces
        counters = [c for c in counters if c.iftype != IFT_PKTAP]  # our own capture device
        names = {c.name for c in counters}
        if self._ports is None or not names <= self._ports_for:  # new interfaces: ask again
            self._ports = parse_hardware_ports(self.kernel.run(NETWORKSETUP) or "")
            self._ports_for = names
        addresses = self.kernel.addresses()
        self._last_interfaces = [
            self._interface(c, self._ports, addresses.get(c.name, ((), ()))) for c in counters
        ]
        return self._last_interfaces

    @staticmethod
    def _interface(
        c: IfCounters, ports: dict[str, str], addresses: tuple[tuple[str, ...], tuple[str, ...]]
    ) -> InterfaceInfo:
        kind = ports.get(c.name) or KINDS.get(c.iftype)
        if kind is None:
            kind = "VPN" if c.name.startswith(VPN_PREFIXES) else "Other"
        return InterfaceInfo(
            name=c.name,
            kind=kind,
            up=c.up,
            ipv4=addresses[0],
            ipv6=addresses[1],
            rx_bytes=c.rx_bytes,
            tx_bytes=c.tx_bytes,
            rx_packets=c.rx_packets,
            tx_packets=c.tx_packets,
            rx_errors=c.rx_errors,
            tx_errors=c.tx_errors,
        )

    def resolvers(self) -> dict[str, tuple[str, ...]]:
        return servers_by_interface(parse_scutil_dns(self.kernel.run(SCUTIL) or ""))
