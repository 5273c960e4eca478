"""A recorded macOS kernel for the darwin capture, and BPF read buffers built by hand.

Everything here is written from docs/MACOS.md, never from
netoproc's own tables: ioctl numbers are the literal values in docs/MACOS.md
(§2.3), BPF records follow §2.1/§2.2 (`struct bpf_hdr`: tv_sec, tv_usec,
caplen @8, datalen @12, hdrlen @16; the next record at
BPF_WORDALIGN(hdrlen + caplen)), ifreq/ifdrv/if_descreq/pktap_filter follow
§1.7 and §2.3. The classic BPF interpreter follows the BPF instruction set
(xnu bsd/net/bpf.h: classes LD 0x00, LDX 0x01, ALU 0x04, JMP 0x05, RET 0x06;
sizes W 0x00, H 0x08, B 0x10; modes ABS 0x20, IND 0x40, MSH 0xa0).
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ioctl numbers, docs/MACOS.md §2.3 (BIOCGIFATTACHCOUNT: xnu bpf.h _IOWR('B', 125, struct ifreq),
# worked out by hand: 0xC0000000 | 32 << 16 | 0x42 << 8 | 125)
BIOCGBLEN = 0x40044266
BIOCSBLEN = 0xC0044266
BIOCSETF = 0x80104267
BIOCGDLT = 0x4004426A
BIOCSETIF = 0x8020426C
BIOCSRTIMEOUT = 0x8010426D
BIOCGSTATS = 0x4008426F
BIOCIMMEDIATE = 0x80044270
BIOCGIFATTACHCOUNT = 0xC020427D
BIOCSWANTPKTAP = 0xC004427F
BIOCSTRUNCATE = 0x80044281
SIOCIFCREATE = 0xC0206978
SIOCIFDESTROY = 0x80206979
SIOCSDRVSPEC = 0x8028697B
SIOCSIFDESC = 0xC094698F
SIOCGIFDESC = 0xC0946990

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_PKTAP = 0, 1, 12, 149
CAPTURES = Path(__file__).parents[1] / "data" / "captures" / "tcpdump"


# -- BPF read buffers -----------------------------------------------------------


def bpf_record(
    data: bytes, *, ts: tuple[int, int] = (1_700_000_000, 0), datalen: int | None = None,
    hdrlen: int = 20,
) -> bytes:  # fmt: skip
    """One record: the 18-byte bpf_hdr padded to `hdrlen`, the data, padding to 4."""
    head = struct.pack("<iiIIH", ts[0], ts[1], len(data), datalen or len(data), hdrlen)
    record = head.ljust(hdrlen, b"\0") + data
    return record + b"\0" * (-len(record) % 4)


def bpf_buffer(*records: bytes) -> bytes:
    """What read() returns: the records; the kernel does not count the last one's padding."""
    joined = b"".join(records)
    last = records[-1]
    head_caplen, hdrlen = struct.unpack_from("<I4xH", last, 8)
    return joined[: len(joined) - len(last) + hdrlen + head_caplen]


def pcap_records(name: str) -> list[tuple[int, int, bytes, int]]:
    """(seconds, microseconds, data, original length) of each record of a classic pcap file."""
    raw = (CAPTURES / name).read_bytes()
    assert struct.unpack_from("<I", raw)[0] == 0xA1B2C3D4
    out = []
    at = 24
    while at < len(raw):
        sec, usec, caplen, length = struct.unpack_from("<IIII", raw, at)
        out.append((sec, usec, raw[at + 16 : at + 16 + caplen], length))
        at += 16 + caplen
    return out


# -- classic BPF ----------------------------------------------------------------


def run_filter(program: bytes, packet: bytes) -> int:
    """What a classic BPF program returns for a packet (0 on a load past its end)."""
    code = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = pc = 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        cls = op & 0x07
        if cls == 0x00:  # LD
            at = k + (x if op & 0xE0 == 0x40 else 0)
            size = {0x00: 4, 0x08: 2, 0x10: 1}[op & 0x18]
            if at + size > len(packet):
                return 0
            a = int.from_bytes(packet[at : at + size], "big")
        elif cls == 0x01:  # LDX B MSH: 4 * (low nibble of a byte)
            assert op == 0xB1
            if k >= len(packet):
                return 0
            x = (packet[k] & 0x0F) * 4
        elif cls == 0x04:  # ALU
            assert op == 0x54  # AND K
            a &= k
        elif cls == 0x05:  # JMP
            taken = a == k if op == 0x15 else bool(a & k) if op == 0x45 else None
            assert taken is not None, f"jump {op:#x}"
            pc += jt if taken else jf
        elif cls == 0x06:  # RET K
            return int(k)
        else:
            raise AssertionError(f"opcode {op:#x}")


# -- the kernel -----------------------------------------------------------------


def _raw(arg: Any) -> bytes:
    return bytes(memoryview(arg).cast("B"))


def _write(arg: Any, data: bytes, at: int = 0) -> None:
    ctypes.memmove(ctypes.addressof(arg) + at, data, len(data))


def _name(raw: bytes) -> str:
    return raw[:16].split(b"\0", 1)[0].decode()


@dataclass
class Device:
    path: str
    buffer: int = 4096
    interface: str | None = None
    pktap: bool = False
    truncate: bool = False
    immediate: bool = False
    timeout: tuple[int, int] | None = None
    program: bytes | None = None
    reads: list[bytes] = field(default_factory=list)
    drops: int = 0


class FakeBpfKernel:
    """BPF devices, interfaces and pktap clones, with ioctls decoded by the numbers above.

    `buffers[name]` are the read buffers an interface (or "pktap" for the
    clone) delivers; `dlts` the link type of each plain interface.
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[tuple[int, str]] = ((1, "lo0"), (4, "en0")),
        dlts: dict[str, int] | None = None,
        buffers: dict[str, list[bytes]] | None = None,
        busy: int = 0,
        devices: int = 4,
        refuse: dict[int, int] | None = None,
        pktap_dlt: int = DLT_PKTAP,
        max_buffer: int = 0x80000,
        macs: dict[str, bytes] | None = None,
        open_error: int | None = None,
        read_error: int | None = None,
    ) -> None:
        self.names = dict(interfaces)
        self.dlts = dlts or {"lo0": DLT_NULL, "en0": DLT_EN10MB}
        self.buffers = buffers or {}
        self.busy, self.devices = busy, devices
        self.refuse = refuse or {}  # ioctl number -> errno
        self.pktap_dlt = pktap_dlt
        self.max_buffer = max_buffer
        self.macs = macs or {}
        self.open_error, self.read_error = open_error, read_error
        self.open_fds: dict[int, Device] = {}
        self.sockets: set[int] = set()
        self.descriptions: dict[str, bytes] = {}
        self.filters: dict[str, bytes] = {}
        self.attached: dict[str, int] = {}  # descriptors other programs hold on an interface
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self.calls: list[tuple[int, int]] = []
        self._next_fd = 10

    # files --------------------------------------------------------------------

    def open(self, path: str) -> int:
        if not path.startswith("/dev/bpf") or path == "/dev/bpf":
            raise OSError(errno.ENOENT, path)
        n = int(path.removeprefix("/dev/bpf"))
        if self.open_error is not None:
            raise OSError(self.open_error, path)
        if n < self.busy:
            raise OSError(errno.EBUSY, path)
        if n >= self.devices:
            raise OSError(errno.ENOENT, path)
        self._next_fd += 1
        self.open_fds[self._next_fd] = Device(path)
        return self._next_fd

    def close(self, fd: int) -> None:
        if fd in self.sockets:
            self.sockets.remove(fd)
        else:
            del self.open_fds[fd]

    def control_socket(self) -> int:
        self._next_fd += 1
        self.sockets.add(self._next_fd)
        return self._next_fd

    def interfaces(self) -> list[tuple[int, str]]:
        return sorted(self.names.items())

    def link_addresses(self) -> dict[str, bytes]:
        return dict(self.macs)

    def read(self, fd: int, size: int) -> bytes:
        device = self.open_fds[fd]
        assert size == device.buffer, "a BPF read must ask for exactly the buffer size"
        if self.read_error is not None:
            raise OSError(self.read_error, "read")
        return device.reads.pop(0) if device.reads else b""

    def wait(self, fds: Sequence[int], timeout: float) -> list[int]:
        return [fd for fd in fds if self.open_fds[fd].reads]

    # ioctls -------------------------------------------------------------------

    def ioctl(self, fd: int, request: int, arg: Any) -> None:
        self.calls.append((fd, request))
        if request in self.refuse:
            raise OSError(self.refuse[request], f"ioctl {request:#x}")
        raw = _raw(arg)
        if fd in self.sockets:
            self._interface_ioctl(request, arg, raw)
            return
        device = self.open_fds[fd]
        if request == BIOCSBLEN:
            assert device.interface is None, "BIOCSBLEN after BIOCSETIF is EINVAL"
            device.buffer = min(struct.unpack("<I", raw)[0], self.max_buffer)
            _write(arg, struct.pack("<I", device.buffer))
        elif request == BIOCGBLEN:
            _write(arg, struct.pack("<I", device.buffer))
        elif request == BIOCSWANTPKTAP:
            assert device.interface is None, "BIOCSWANTPKTAP after BIOCSETIF has no effect"
            device.pktap = struct.unpack("<I", raw)[0] == 1
        elif request == BIOCSTRUNCATE:
            device.truncate = struct.unpack("<I", raw)[0] == 1
        elif request == BIOCSETIF:
            name = _name(raw)
            if name not in self.names.values():
                raise OSError(errno.ENXIO, name)
            device.interface = name
            device.reads = list(self.buffers.get("pktap" if name.startswith("pktap") else name, []))
        elif request == BIOCIMMEDIATE:
            device.immediate = raw[0] == 1
        elif request == BIOCSRTIMEOUT:
            seconds, micros = struct.unpack_from("<qi", raw)
            device.timeout = (seconds, micros)
        elif request == BIOCGDLT:
            assert device.interface is not None
            pktap = device.interface.startswith("pktap")
            dlt = (self.pktap_dlt if device.pktap else DLT_RAW) if pktap else None
            _write(arg, struct.pack("<I", self.dlts[device.interface] if dlt is None else dlt))
        elif request == BIOCSETF:
            count, address = struct.unpack_from("<I4xQ", raw)
            device.program = ctypes.string_at(address, count * 8)
        elif request == BIOCGSTATS:
            _write(arg, struct.pack("<II", 1000, device.drops & 0xFFFFFFFF))
        elif request == BIOCGIFATTACHCOUNT:
            name = _name(raw)
            count = self.attached.get(name, 0) + sum(
                d.interface == name for d in self.open_fds.values()
            )
            _write(arg, struct.pack("<i", count), 16)
        else:
            raise AssertionError(f"unexpected BPF ioctl {request:#x}")

    def _interface_ioctl(self, request: int, arg: Any, raw: bytes) -> None:
        name = _name(raw)
        if request == SIOCIFCREATE:
            assert name == "pktap"
            unit = 0
            while f"pktap{unit}" in self.names.values():
                unit += 1
            name = f"pktap{unit}"
            self.names[max(self.names) + 1] = name
            self.created.append(name)
            _write(arg, name.encode().ljust(16, b"\0"))
        elif request == SIOCIFDESTROY:
            index = next(i for i, n in self.names.items() if n == name)
            del self.names[index]
            self.destroyed.append(name)
        elif request == SIOCSIFDESC:
            (length,) = struct.unpack_from("<I", raw, 16)
            self.descriptions[name] = raw[20 : 20 + length]
        elif request == SIOCGIFDESC:
            text = self.descriptions.get(name, b"")
            _write(arg, struct.pack("<I", len(text)) + text, 16)
        elif request == SIOCSDRVSPEC:
            command, length, address = struct.unpack_from("<QQQ", raw, 16)
            assert command == 3  # PKTP_CMD_FILTER_SET
            self.filters[name] = ctypes.string_at(address, length)
        else:
            raise AssertionError(f"unexpected interface ioctl {request:#x}")

    # what tests look at -------------------------------------------------------

    def requests(self, fd: int) -> list[int]:
        return [request for f, request in self.calls if f == fd]
