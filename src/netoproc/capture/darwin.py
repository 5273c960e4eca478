"""macOS live capture: BPF devices reading a cloned PKTAP interface.

PKTAP (docs/MACOS.md §1) puts a header in front of every packet on
every chosen interface, loopback included, naming the interface, the
direction and the process that owns the socket (the delegating app when a
daemon acts for one). This module clones a `pktapN` interface (or adopts one
a crashed run leaked, as Apple's libpcap does, by its description), restricts
it to `--interface` or to all interfaces, binds a `/dev/bpfN` to it with
`BIOCSWANTPKTAP` and `BIOCSTRUNCATE` (headers only, DNS whole), and destroys
the clone on close.

Read buffers are walked once for record offsets (`bh_hdrlen`,
`BPF_WORDALIGN`); PKTAP headers, v1 or v2, are then read for all records at
once with numpy and stripped, so the decoder sees plain Ethernet, loopback
(DLT_NULL) or raw IP frames with interface, direction and pid filled in.
Records the fast path cannot vouch for (odd header lengths, other inner link
types) are passed on whole as PKTAP records for the scalar decoder.

If PKTAP cannot be set up, each interface gets its own plain BPF device
(DLT_EN10MB, DLT_NULL or DLT_RAW) with a kernel filter keeping headers and
DNS; processes then come from the socket table.

All kernel access goes through a `BpfKernel`, so tests run this code on
Linux against recorded buffers.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import psutil

from netoproc.capture import CaptureUnavailable
from netoproc.capture import bpf_darwin as k
from netoproc.capture.records import (
    GUARD_BYTES,
    LINKTYPE_ETHERNET,
    LINKTYPE_USER2_PKTAP,
    EveryPacket,
    InterfaceTable,
    RecordBlock,
)
from netoproc.model import Direction

log = logging.getLogger("netoproc")

BPF_DEVICES = 256  # BPF_MAX_DEVICES: /dev/bpf0 .. /dev/bpf255
READ_TIMEOUT_US = 100_000  # a blocked read returns after this, packets or not
DRAIN_READS = 8
WAKE_SECONDS = 0.05  # select(2) on BPF devices, short enough that a stop is seen at once
PKTAP_PREFIXES = ("pktap", "iptap", "droptap")  # capture pseudo-interfaces, never captured on
# Apple's libpcap marks the pktap interfaces it clones with this description and
# adopts unattached ones so marked (leaked by a crash); sharing the mark lets
# either program clean up after the other.
CLONE_DESCRIPTION = b"libpcap auto cloned device"
MIN_FALLBACK_BUFFER = 128 << 10

IoctlArg = ctypes.Structure | ctypes.c_uint


class BpfKernel(Protocol):
    """The system calls the capture makes; tests substitute a recorded kernel."""

    def open(self, path: str) -> int: ...

    def close(self, fd: int) -> None: ...

    def ioctl(self, fd: int, request: int, arg: IoctlArg) -> None:
        """The kernel reads and may rewrite `arg` in place."""
        ...

    def read(self, fd: int, size: int) -> bytes: ...

    def wait(self, fds: Sequence[int], timeout: float) -> list[int]:
        """The descriptors with data to read, waiting up to `timeout` seconds."""
        ...

    def control_socket(self) -> int:
        """A datagram socket for interface ioctls (SIOC*)."""
        ...

    def interfaces(self) -> list[tuple[int, str]]: ...

    def link_addresses(self) -> dict[str, bytes]:
        """Hardware (MAC) address of each interface that has one."""
        ...


class OsKernel:
    """The real one: file descriptors, ioctl(2), select(2)."""

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDONLY)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg) -> None:
        fcntl.ioctl(fd, request, arg, True)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def wait(self, fds: Sequence[int], timeout: float) -> list[int]:
        return select.select(list(fds), [], [], timeout)[0]

    def control_socket(self) -> int:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()

    def interfaces(self) -> list[tuple[int, str]]:
        return socket.if_nameindex()

    def link_addresses(self) -> dict[str, bytes]:
        found = {}
        for name, addrs in psutil.net_if_addrs().items():
            for addr in addrs:
                if addr.family == psutil.AF_LINK and addr.address.count(":") == 5:
                    found[name] = bytes.fromhex(addr.address.replace(":", ""))
        return found


# -- devices ------------------------------------------------------------------


def _ifreq(name: str) -> k.IfReq:
    req = k.IfReq()
    req.ifr_name = name.encode()
    return req


class BpfDevice:
    """One open /dev/bpfN."""

    def __init__(self, kernel: BpfKernel) -> None:
        self.kernel = kernel
        self.fd, self.path = self._open()
        self.buffer_size = 0
        self.dlt = -1
        self._drops = 0
        self._last_drop = 0

    def _open(self) -> tuple[int, str]:
        # /dev/bpf clones where it exists; otherwise the first /dev/bpfN not in
        # use (EBUSY), as libpcap's bpf_open; the kernel adds nodes on demand.
        try:
            return self.kernel.open("/dev/bpf"), "/dev/bpf"
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise self._unavailable("/dev/bpf", exc) from None
        busy = 0
        for n in range(BPF_DEVICES):
            path = f"/dev/bpf{n}"
            try:
                return self.kernel.open(path), path
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    busy += 1
                    continue
                if exc.errno == errno.ENOENT and busy:
                    break
                raise self._unavailable(path, exc) from None
        raise CaptureUnavailable(
            f"cannot open BPF device: all of /dev/bpf0 to /dev/bpf{busy - 1} are in use "
            "(close Wireshark, tcpdump, or other capture tools)"
        )

    @staticmethod
    def _unavailable(path: str, exc: OSError) -> CaptureUnavailable:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return CaptureUnavailable(
                f"cannot open BPF device {path}: permission denied (run with sudo)"
            )
        if exc.errno == errno.ENOENT:
            return CaptureUnavailable(f"cannot open BPF device: {path} does not exist")
        return CaptureUnavailable(f"cannot open BPF device {path}: {exc.strerror}")

    def set_uint(self, request: int, value: int) -> int:
        arg = ctypes.c_uint(value)
        self.kernel.ioctl(self.fd, request, arg)
        return arg.value

    def get_uint(self, request: int) -> int:
        return self.set_uint(request, 0)

    def attach(self, ifname: str, buffer_bytes: int, *, pktap: bool) -> None:
        """Buffer size, PKTAP wishes, the interface, then immediate mode and a read timeout.

        The order matters: the buffer size and BIOCSWANTPKTAP only take effect
        before BIOCSETIF (xnu bpf.c; libpcap's activate does the same).
        """
        self.set_uint(k.BIOCSBLEN, buffer_bytes)
        if pktap:
            self.set_uint(k.BIOCSWANTPKTAP, 1)
            self.set_uint(k.BIOCSTRUNCATE, 1)
        self.kernel.ioctl(self.fd, k.BIOCSETIF, _ifreq(ifname))
        self.set_uint(k.BIOCIMMEDIATE, 1)
        self.kernel.ioctl(self.fd, k.BIOCSRTIMEOUT, k.Timeval(0, READ_TIMEOUT_US))
        self.dlt = self.get_uint(k.BIOCGDLT)
        self.buffer_size = self.get_uint(k.BIOCGBLEN)  # the kernel may have capped it

    def set_filter(self, program: bytes) -> None:
        code = ctypes.create_string_buffer(program, len(program))
        self.kernel.ioctl(
            self.fd, k.BIOCSETF, k.BpfProgram(len(program) // 8, ctypes.addressof(code))
        )

    def attach_count(self, ifname: str) -> int:
        """How many BPF descriptors listen on an interface (any descriptor may ask)."""
        req = _ifreq(ifname)
        self.kernel.ioctl(self.fd, k.BIOCGIFATTACHCOUNT, req)
        return int(req.ifr_ifru.ifru_intval)

    def read(self) -> bytes:
        return self.kernel.read(self.fd, self.buffer_size)  # exactly the buffer size, or EINVAL

    def drops(self) -> int:
        """Packets the kernel dropped for a full buffer since opening (its counter is 32-bit)."""
        stat = k.BpfStat()
        self.kernel.ioctl(self.fd, k.BIOCGSTATS, stat)
        self._drops += (stat.bs_drop - self._last_drop) & 0xFFFFFFFF
        self._last_drop = stat.bs_drop
        return self._drops

    def close(self) -> None:
        self.kernel.close(self.fd)


class PktapClone:
    """A pktapN interface of ours, filtered to the interfaces to capture."""

    def __init__(self, kernel: BpfKernel, device: BpfDevice, interface: str | None) -> None:
        self.kernel = kernel
        self._sock = kernel.control_socket()
        try:
            self.name = self._adopt_leaked(device) or self._create()
            self._describe()
            self._filter(interface)
        except BaseException:
            self.destroy()
            raise

    def _adopt_leaked(self, device: BpfDevice) -> str | None:
        for _index, name in self.kernel.interfaces():
            if not name.startswith("pktap"):
                continue
            desc = k.IfDescReq()
            desc.ifdr_name = name.encode()
            try:
                self.kernel.ioctl(self._sock, k.SIOCGIFDESC, desc)
            except OSError:
                continue  # gone meanwhile: not one to reuse
            text = bytes(desc.ifdr_desc[: min(desc.ifdr_len, k.IF_DESCSIZE)])
            if text.startswith(CLONE_DESCRIPTION) and device.attach_count(name) == 0:
                log.debug("reusing %s, left behind by an earlier capture", name)
                return name
        return None

    def _create(self) -> str:
        req = _ifreq("pktap")
        self.kernel.ioctl(self._sock, k.SIOCIFCREATE, req)  # the kernel names the unit
        return str(req.ifr_name.decode())

    def _describe(self) -> None:
        desc = k.IfDescReq()
        desc.ifdr_name = self.name.encode()
        text = CLONE_DESCRIPTION + f" - netoproc.{os.getpid()}".encode()
        desc.ifdr_len = len(text) + 1
        ctypes.memmove(desc.ifdr_desc, text, len(text))
        self.kernel.ioctl(self._sock, k.SIOCSIFDESC, desc)

    def _filter(self, interface: str | None) -> None:
        """PASS one interface by name, or every interface type (loopback included)."""
        filters = k.PktapFilters()
        first = filters[0]
        first.filter_op = k.PKTAP_FILTER_OP_PASS
        if interface is None:
            first.filter_param = k.PKTAP_FILTER_PARAM_IF_TYPE
            first.param.if_type = 0  # 0 matches every type (xnu pktap.c)
        else:
            first.filter_param = k.PKTAP_FILTER_PARAM_IF_NAME
            first.param.if_name = interface.encode()
        drv = k.IfDrv()
        drv.ifd_name = self.name.encode()
        drv.ifd_cmd = k.PKTP_CMD_FILTER_SET
        drv.ifd_len = ctypes.sizeof(filters)
        drv.ifd_data = ctypes.addressof(filters)
        self.kernel.ioctl(self._sock, k.SIOCSDRVSPEC, drv)

    def destroy(self) -> None:
        name = getattr(self, "name", None)
        try:
            if name is not None:
                self.kernel.ioctl(self._sock, k.SIOCIFDESTROY, _ifreq(name))
        except OSError as exc:
            log.warning("could not remove capture interface %s: %s", name, exc.strerror)
        finally:
            self.kernel.close(self._sock)


# -- read buffers to record blocks ---------------------------------------------

I64 = npt.NDArray[np.int64]
_BPF_HDR = np.dtype(k.BpfHdr)
_V1 = np.dtype(k.PktapHeader)
_V2 = np.dtype(k.PktapV2Header)
_IFNAME = (k.PktapHeader.pth_ifname.offset, k.PktapHeader.pth_ifname.size)
_COMM = (k.PktapHeader.pth_comm.offset, k.PktapHeader.pth_comm.size)
_ECOMM = (k.PktapHeader.pth_ecomm.offset, k.PktapHeader.pth_ecomm.size)
_INNER_DLTS = np.array(sorted(k.LINKTYPE_OF_DLT), np.int64)
_INNER_LINKTYPES = np.array([k.LINKTYPE_OF_DLT[d] for d in sorted(k.LINKTYPE_OF_DLT)], np.int64)


@dataclass(frozen=True, slots=True)
class _Records:
    """A read buffer (with guard bytes) and its records' BPF headers."""

    data: bytes
    raw: npt.NDArray[np.uint8]
    start: I64  # where each frame (after bh_hdrlen) starts
    caplen: I64
    datalen: I64
    ts: npt.NDArray[np.float64]


def _gather(raw: npt.NDArray[np.uint8], at: I64, size: int) -> npt.NDArray[np.uint8]:
    """`size` bytes from each offset, as rows; reads past the buffer see its last byte."""
    rows: npt.NDArray[np.uint8] = raw[np.minimum(at[:, None] + np.arange(size), len(raw) - 1)]
    return rows


def _walk(buffer: bytes) -> _Records:
    try:
        starts = k.record_starts(buffer, len(buffer))
    except k.BpfBufferError as exc:
        log.warning("%s; dropped the rest of it", exc)
        starts = exc.starts
    data = buffer + bytes(GUARD_BYTES)
    raw = np.frombuffer(data, np.uint8)
    at = np.asarray(starts, np.int64)
    hdr = _gather(raw, at, _BPF_HDR.itemsize).view(_BPF_HDR)[:, 0]
    stamp = hdr["bh_tstamp"]
    return _Records(
        data=data,
        raw=raw,
        start=at + hdr["bh_hdrlen"].astype(np.int64),
        caplen=hdr["bh_caplen"].astype(np.int64),
        datalen=hdr["bh_datalen"].astype(np.int64),
        ts=stamp["tv_sec"].astype(np.float64) + stamp["tv_usec"].astype(np.float64) * 1e-6,
    )


def _strings(rows: npt.NDArray[np.uint8]) -> tuple[list[str], I64]:
    """Distinct NUL-terminated strings among byte rows, and each row's index into them."""
    if not len(rows):
        return [], np.zeros(0, np.int64)
    distinct, inverse = np.unique(
        np.ascontiguousarray(rows).view(f"V{rows.shape[1]}")[:, 0], return_inverse=True
    )
    texts = [bytes(row).split(b"\0", 1)[0].decode("utf-8", "backslashreplace") for row in distinct]
    return texts, inverse.astype(np.int64).reshape(-1)


def _v2_string(
    raw: npt.NDArray[np.uint8], start: I64, length: I64, at: I64, size: int
) -> npt.NDArray[np.uint8]:
    """A v2 header's string: `size` bytes from `at`, none past the header, none if absent."""
    rows = _gather(raw, start + at, size).copy()
    rows[np.arange(size) >= (length - at)[:, None]] = 0
    rows[at == 0] = 0
    return rows


def pktap_block(buffer: bytes, interfaces: InterfaceTable) -> RecordBlock:
    """Records of a PKTAP read buffer, their PKTAP headers read and stripped."""
    r = _walk(buffer)
    v1 = _gather(r.raw, r.start, _V1.itemsize)
    h1 = v1.view(_V1)[:, 0]
    h2 = v1[:, : _V2.itemsize].copy().view(_V2)[:, 0]
    flags = h1["pth_flags"].astype(np.int64)  # at the same offset in both versions
    is_v2 = (flags & k.PTH_FLAG_V2_HDR) != 0
    length = np.where(is_v2, h2["pth_length"], h1["pth_length"]).astype(np.int64)
    dlt = np.where(is_v2, h2["pth_dlt"], h1["pth_dlt"]).astype(np.int64)
    pid = np.where(is_v2, h2["pth_pid"], h1["pth_pid"]).astype(np.int64)
    epid = np.where(is_v2, h2["pth_e_pid"], h1["pth_epid"]).astype(np.int64)
    shortest = np.where(is_v2, _V2.itemsize, k.PKTAP_V1_MIN_LENGTH)
    inner = np.searchsorted(_INNER_DLTS, dlt).clip(0, len(_INNER_DLTS) - 1)
    fast = (
        (length >= shortest)
        & (length <= r.caplen)
        & (length <= r.datalen)
        & (_INNER_DLTS[inner] == dlt)
    )

    def field(v1_at: tuple[int, int], v2_offset: str) -> npt.NDArray[np.uint8]:
        at, size = v1_at
        rows = v1[:, at : at + size].copy()
        if is_v2.any():
            offset = h2[v2_offset].astype(np.int64)
            rows[is_v2] = _v2_string(r.raw, r.start, length, offset, size)[is_v2]
        return rows

    comm_rows = field(_COMM, "pth_comm_offset")
    delegated = ((flags & k.PTH_FLAG_PROC_DELEGATED) != 0) & (epid > 0)
    if delegated.any():  # the app a daemon acted for
        pid = np.where(delegated, epid, pid)
        comm_rows[delegated] = field(_ECOMM, "pth_e_comm_offset")[delegated]
    pid = np.where(fast & (pid >= 0), pid, -1)
    iface = np.full(len(pid), -1, np.int64)
    names, which = _strings(field(_IFNAME, "pth_ifname_offset")[fast])
    iface[fast] = np.array([interfaces.intern(n) if n else -1 for n in names], np.int64)[which]

    direction = np.select(
        [(flags & k.PTH_FLAG_DIR_IN) != 0, (flags & k.PTH_FLAG_DIR_OUT) != 0],
        [Direction.RX, Direction.TX],
        Direction.UNKNOWN,
    )
    skip = np.where(fast, length, 0)
    return RecordBlock(
        data=r.data,
        offset=r.start + skip,
        caplen=r.caplen - skip,
        wirelen=r.datalen - skip,
        ts=r.ts,
        linktype=np.where(fast, _INNER_LINKTYPES[inner], LINKTYPE_USER2_PKTAP).astype(np.int64),
        iface=iface,
        direction=np.where(fast, direction, Direction.UNKNOWN).astype(np.int8),
        pid=pid.astype(np.int64),
        interfaces=interfaces,
        process_names=_process_names(pid, comm_rows),
    )


def _process_names(pid: I64, comm_rows: npt.NDArray[np.uint8]) -> dict[int, str]:
    """pid -> name; where records disagree the last one wins, as in the decoder."""
    comms, comm_of = _strings(comm_rows)
    has_comm = np.array([bool(c) for c in comms], np.bool_)[comm_of]
    named = np.flatnonzero((pid >= 0) & has_comm)[::-1]
    _pids, last = np.unique(pid[named], return_index=True)
    return {int(pid[row]): comms[comm_of[row]] for row in named[last].tolist()}


def plain_block(
    buffer: bytes,
    interfaces: InterfaceTable,
    *,
    ifindex: int,
    dlt: int,
    hardware_address: bytes | None = None,
) -> RecordBlock:
    """Records of one interface's plain BPF buffer.

    BPF headers carry no direction; on Ethernet a frame is sent by us when its
    source address is the interface's own. Elsewhere the engine decides.
    """
    r = _walk(buffer)
    n = len(r.start)
    linktype = k.LINKTYPE_OF_DLT[dlt]
    direction = np.full(n, Direction.UNKNOWN, np.int8)
    if linktype == LINKTYPE_ETHERNET and hardware_address is not None and n:
        source = _gather(r.raw, r.start + 6, 6)
        ours = (source == np.frombuffer(hardware_address, np.uint8)).all(axis=1)
        direction = np.where(ours, Direction.TX, Direction.RX).astype(np.int8)
    return RecordBlock(
        data=r.data,
        offset=r.start,
        caplen=r.caplen,
        wirelen=r.datalen,
        ts=r.ts,
        linktype=np.full(n, linktype, np.int64),
        iface=np.full(n, ifindex, np.int64),
        direction=direction,
        pid=np.full(n, -1, np.int64),
        interfaces=interfaces,
    )


# -- captures -----------------------------------------------------------------


class PktapCapture(EveryPacket):
    """Every interface (or one) through a PKTAP clone: pid and process per packet."""

    def __init__(
        self,
        kernel: BpfKernel,
        interface: str | None = None,
        buffer_bytes: int = 2 << 20,
    ) -> None:
        self.interfaces = InterfaceTable()
        self.kernel = kernel
        self.device = BpfDevice(kernel)
        self.clone: PktapClone | None = None
        try:
            self.clone = PktapClone(kernel, self.device, interface)
            self.device.attach(self.clone.name, buffer_bytes, pktap=True)
            if self.device.dlt != k.DLT_PKTAP:
                raise OSError(errno.EINVAL, f"link type {self.device.dlt}, not PKTAP")
        except BaseException:
            self.close()
            raise
        self.source = f"{self.device.path} on {self.clone.name}"
        self._shown_header = False

    def read(self, timeout: float) -> list[RecordBlock]:
        if not self.kernel.wait([self.device.fd], min(timeout, WAKE_SECONDS)):
            return []
        return self._read()

    def wake(self) -> None:
        pass  # reads wait WAKE_SECONDS at most

    def drain(self) -> list[RecordBlock]:
        blocks: list[RecordBlock] = []
        for _ in range(DRAIN_READS):
            if not self.kernel.wait([self.device.fd], 0):
                break
            blocks += self._read()
        return blocks

    def _read(self) -> list[RecordBlock]:
        try:
            buffer = self.device.read()
        except OSError as exc:
            log.warning("reading %s failed: %s", self.source, exc.strerror)
            return []
        if not buffer:
            return []
        if not self._shown_header:  # for a first run on a new macOS: is it still 156 bytes?
            self._shown_header = True
            hdrlen = int.from_bytes(buffer[16:18], "little")
            head = k.PktapHeader.from_buffer_copy(
                buffer.ljust(hdrlen + _V1.itemsize, b"\0"), hdrlen
            )
            log.debug(
                "first PKTAP header: pth_length %d, flags %#x, dlt %d, interface %s",
                *(head.pth_length, head.pth_flags, head.pth_dlt, head.pth_ifname.decode()),
            )
        return [pktap_block(buffer, self.interfaces)]

    def kernel_drops(self) -> int:
        return self.device.drops()

    def close(self) -> None:
        try:
            self.device.close()
        finally:
            if self.clone is not None:
                self.clone.destroy()
                self.clone = None


class PlainBpfCapture(EveryPacket):
    """One BPF device per interface, without process information (the fallback)."""

    def __init__(
        self,
        kernel: BpfKernel,
        interface: str | None = None,
        buffer_bytes: int = 2 << 20,
        keep_dns: bool = True,
    ) -> None:
        self.interfaces = InterfaceTable()
        self.kernel = kernel
        chosen = [
            (index, name)
            for index, name in kernel.interfaces()
            if (name == interface if interface else not name.startswith(PKTAP_PREFIXES))
        ]
        share = max(MIN_FALLBACK_BUFFER, buffer_bytes // max(1, len(chosen)))
        addresses = kernel.link_addresses()
        self.devices: dict[int, tuple[BpfDevice, int, bytes | None]] = {}
        problems = []
        for index, name in chosen:
            try:
                device = BpfDevice(kernel)
            except CaptureUnavailable as exc:  # out of devices: capture on those we have
                problems.append(str(exc))
                break
            try:
                device.attach(name, share if interface is None else buffer_bytes, pktap=False)
                if device.dlt not in k.LINKTYPE_OF_DLT:
                    raise OSError(errno.EOPNOTSUPP, f"link type {device.dlt} is not decoded")
                device.set_filter(k.headers_and_dns(device.dlt, keep_dns))
            except OSError as exc:
                device.close()
                problems.append(f"{name}: {exc.strerror}")
                continue
            self.interfaces.set(index, name)
            self.devices[device.fd] = (device, index, addresses.get(name))
        if not self.devices:
            self.close()
            where = interface or "any interface"
            why = "; ".join(problems) or "no interfaces"
            raise CaptureUnavailable(f"cannot capture on {where}: {why}")
        if problems:
            log.debug("not capturing on %s", ", ".join(problems))
        self.source = f"{len(self.devices)} BPF devices"

    def read(self, timeout: float) -> list[RecordBlock]:
        return self._read(self.kernel.wait(list(self.devices), min(timeout, WAKE_SECONDS)))

    def wake(self) -> None:
        pass  # reads wait WAKE_SECONDS at most

    def drain(self) -> list[RecordBlock]:
        blocks: list[RecordBlock] = []
        for _ in range(DRAIN_READS):
            ready = self.kernel.wait(list(self.devices), 0)
            if not ready:
                break
            blocks += self._read(ready)
        return blocks

    def _read(self, ready: list[int]) -> list[RecordBlock]:
        blocks = []
        for fd in ready:
            device, index, hardware_address = self.devices[fd]
            try:
                buffer = device.read()
            except OSError as exc:  # e.g. the interface went away (ENXIO)
                log.warning("stopped capturing on %s: %s", self.interfaces.name(index), exc)
                device.close()
                del self.devices[fd]
                continue
            if buffer:
                blocks.append(
                    plain_block(
                        buffer,
                        self.interfaces,
                        ifindex=index,
                        dlt=device.dlt,
                        hardware_address=hardware_address,
                    )
                )
        return blocks

    def kernel_drops(self) -> int:
        return sum(device.drops() for device, _, _ in self.devices.values())

    def close(self) -> None:
        for device, _, _ in self.devices.values():
            device.close()
        self.devices = {}


def describe() -> tuple[str, list[str]]:
    """PKTAP, falling back to plain BPF; both need root for /dev/bpf and the clone."""
    lacking = [] if os.geteuid() == 0 else ["root"]
    return "PKTAP through /dev/bpf (plain BPF per interface if refused)", lacking


def open_capture(
    interface: str | None,
    buffer_bytes: int,
    keep_dns: bool,
    kernel: BpfKernel | None = None,
) -> PktapCapture | PlainBpfCapture:
    """PKTAP if the kernel allows it, else plain BPF per interface."""
    kernel = kernel or OsKernel()
    if interface is not None and interface not in {name for _, name in kernel.interfaces()}:
        raise CaptureUnavailable(
            f"cannot capture on {interface}: no such interface "
            "(see `ifconfig -l` for the names on this Mac)"
        )
    try:
        return PktapCapture(kernel, interface, buffer_bytes)
    except OSError as exc:
        log.warning(
            "PKTAP capture is unavailable (%s); falling back to plain BPF, "
            "with processes from the socket table",
            exc.strerror or exc,
        )
    return PlainBpfCapture(kernel, interface, buffer_bytes, keep_dns)
