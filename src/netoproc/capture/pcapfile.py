"""Capture files: pcap (both byte orders, µs and ns) and pcapng, read as RecordBlocks.

pcapng sections may carry several interfaces with different link types and
time resolutions. Apple's `tcpdump -k` files add process information blocks
(type 0x80000001) and enhanced-packet options naming the process and the
delegated ("effective") process of each packet; the effective process wins,
as it is the one the traffic is for.

Records are located with one short Python loop per chunk; every per-record
field is then gathered with numpy. A file that ends inside a record, or whose
lengths stop making sense, yields everything before that point and sets
`problem`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import GUARD_BYTES, InterfaceTable, RecordBlock, headers_at
from netoproc.model import Direction

CHUNK_BYTES = 4 << 20
MAX_RECORD_BYTES = 16 << 20  # larger than any snap length a capture tool writes

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

BT_IDB = 1
BT_PB = 2  # obsolete packet block
BT_SPB = 3
BT_EPB = 6
BT_APPLE_PIB = 0x80000001
# The fixed part of each block this reader looks into, trailing length included:
# a block shorter than that is skipped (and a packet block counted) as malformed.
MIN_BLOCK = {BT_IDB: 20, BT_PB: 32, BT_SPB: 16, BT_EPB: 32}

OPT_END = 0
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
EPB_FLAGS = 2
EPB_APPLE_PIB_INDEX = 0x8001
EPB_APPLE_E_PIB_INDEX = 0x8003
PIB_NAME = 2


class CaptureFileError(Exception):
    """The file cannot be read as a capture at all."""


@dataclass
class _Interface:
    iface_id: int
    linktype: int
    snaplen: int
    ts_scale: float = 1e-6
    ts_offset: float = 0.0


@dataclass
class _Section:
    order: str  # "<" or ">"
    interfaces: list[_Interface] = field(default_factory=list)
    processes: list[tuple[int, str]] = field(default_factory=list)  # (pid, name) by PIB index


class CaptureFile:
    """An open pcap or pcapng file. Iterate `blocks()` once."""

    def __init__(self, stream: BinaryIO, name: str = "capture") -> None:
        self.name = name
        self.interfaces = InterfaceTable()
        self.problem: str | None = None
        self.records = 0
        self.skipped = 0  # packet blocks that contradict their section (unknown interface, lengths)
        self._stream = stream
        self._seen: list[_Interface] = []  # every interface of every section, by global id
        head = stream.read(24)
        if len(head) < 24:
            raise CaptureFileError(f"{name}: too short to be a capture file")
        self._head = head
        magic_le = struct.unpack_from("<I", head)[0]
        magic_be = struct.unpack_from(">I", head)[0]
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
            self.format = "pcap"
        else:
            raise CaptureFileError(f"{name}: not a pcap or pcapng file")

    def close(self) -> None:
        self._stream.close()

    def blocks(self) -> Iterator[RecordBlock]:
        if self.format == "pcap":
            return self._pcap_blocks()
        return self._pcapng_blocks()

    # pcap ---------------------------------------------------------------

    def _pcap_blocks(self) -> Iterator[RecordBlock]:
        head = self._head
        magic = struct.unpack_from("<I", head)[0]
        order = "<" if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
        scale = 1e-9 if PCAP_MAGIC_NS in (magic, struct.unpack_from(">I", head)[0]) else 1e-6
        linktype = struct.unpack_from(order + "I", head, 20)[0] & 0xFFFF
        caplen_at = struct.Struct(order + "I").unpack_from
        header_dtype = np.dtype(order + "u4")
        carry = b""
        while True:
            chunk = self._stream.read(CHUNK_BYTES)
            buf = carry + chunk
            if not buf:
                return
            offsets, fields, pos = self._pcap_records(buf, caplen_at, header_dtype)
            if len(offsets):
                n = len(offsets)
                self.records += n
                yield RecordBlock(
                    data=buf[:pos] + bytes(GUARD_BYTES),
                    offset=offsets + 16,
                    caplen=fields[:, 2].astype(np.int64),
                    wirelen=np.maximum(fields[:, 3], fields[:, 2]).astype(np.int64),
                    ts=fields[:, 0].astype(np.float64) + fields[:, 1].astype(np.float64) * scale,
                    linktype=np.full(n, linktype, np.int64),
                    iface=np.full(n, -1, np.int64),
                    direction=np.zeros(n, np.int8),
                    pid=np.full(n, -1, np.int64),
                    interfaces=self.interfaces,
                )
            if self.problem:
                return
            carry = buf[pos:]
            if not chunk:
                if carry:
                    self.problem = f"file ends inside record {self.records + 1}"
                return

    def _pcap_records(
        self, buf: bytes, caplen_at: Callable[[bytes, int], tuple[int]], header: np.dtype[Any]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any], int]:
        """Where the complete records in `buf` start, their headers, and where they end.

        The walk is the one loop per record in Python, so it does nothing else;
        lengths are checked afterwards, with arrays.
        """
        starts: list[int] = []
        append = starts.append
        pos, last = 0, len(buf) - 16
        while pos <= last:
            append(pos)
            pos += 16 + caplen_at(buf, pos + 8)[0]
        offsets = np.asarray(starts, np.int64)
        fields = headers_at(buf, offsets, np.dtype((header, 4)))
        caplen = fields[:, 2].astype(np.int64)
        absurd = np.flatnonzero(caplen > MAX_RECORD_BYTES)
        good = len(offsets)
        if len(absurd):
            good = int(absurd[0])
            self.problem = f"record {self.records + good + 1} has length {caplen[good]}"
        if good and offsets[good - 1] + 16 + caplen[good - 1] > len(buf):
            good -= 1  # the last record runs past what has been read
        end = int(offsets[good - 1] + 16 + caplen[good - 1]) if good else 0
        return offsets[:good], fields[:good], end

    # pcapng -------------------------------------------------------------

    def _pcapng_blocks(self) -> Iterator[RecordBlock]:
        section: _Section | None = None
        carry = self._head
        sections = 0
        while True:
            chunk = self._stream.read(CHUNK_BYTES)
            buf = carry + chunk
            if not buf:
                return
            pos, end = 0, len(buf)
            epbs: list[int] = []
            slow: list[
                tuple[int, int, int, int, float, int]
            ] = []  # data at, cap, wire, iface, ts, pid
            flush_section = False
            while pos + 12 <= end:
                block_type_le = struct.unpack_from("<I", buf, pos)[0]
                if block_type_le == PCAPNG_SHB:
                    if epbs or slow:
                        flush_section = True  # interfaces restart: finish this block first
                        break
                    magic = struct.unpack_from("<I", buf, pos + 8)[0]
                    if magic == PCAPNG_BYTE_ORDER_MAGIC:
                        order = "<"
                    elif magic == 0x4D3C2B1A:
                        order = ">"
                    else:
                        self.problem = f"section {sections + 1} has a bad byte-order magic"
                        break
                    length = struct.unpack_from(order + "I", buf, pos + 4)[0]
                    if not _plausible(length):
                        self.problem = f"section {sections + 1} header has length {length}"
                        break
                    if pos + length > end:
                        break
                    section = _Section(order)
                    sections += 1
                    pos += length
                    continue
                if section is None:
                    self.problem = "pcapng file does not start with a section header"
                    break
                order = section.order
                block_type, length = struct.unpack_from(order + "II", buf, pos)
                if not _plausible(length):
                    self.problem = f"block after record {self.records} has length {length}"
                    break
                if pos + length > end:
                    break
                if length < MIN_BLOCK.get(block_type, 0):
                    if block_type in (BT_EPB, BT_PB, BT_SPB):
                        self.skipped += 1
                elif block_type == BT_EPB:
                    epbs.append(pos)
                elif block_type == BT_IDB:
                    self._add_interface(section, buf, pos, length)
                elif block_type == BT_APPLE_PIB:
                    section.processes.append(_parse_pib(buf, pos, length, order))
                elif block_type == BT_SPB:
                    wire = struct.unpack_from(order + "I", buf, pos + 8)[0]
                    iface = section.interfaces[0] if section.interfaces else None
                    if iface is not None:
                        cap = min(wire, length - 16, iface.snaplen or wire)
                        slow.append((pos + 12, cap, wire, iface.iface_id, 0.0, -1))
                elif block_type == BT_PB:
                    idx, _drops, hi, lo, cap, wire = struct.unpack_from(
                        order + "HHIIII", buf, pos + 8
                    )
                    if idx < len(section.interfaces) and cap <= length - 32:
                        iface = section.interfaces[idx]
                        ts = ((hi << 32) | lo) * iface.ts_scale + iface.ts_offset
                        slow.append((pos + 28, cap, wire, iface.iface_id, ts, -1))
                pos += length
            if epbs or slow:
                assert section is not None
                block = self._pcapng_block(buf, pos, epbs, slow, section)
                if block is not None:
                    yield block
            if self.problem:
                return
            carry = buf[pos:]
            if flush_section:
                continue
            if not chunk:
                if carry:
                    self.problem = f"file ends inside the block after record {self.records}"
                return

    def _add_interface(self, section: _Section, buf: bytes, pos: int, length: int) -> None:
        order = section.order
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        iface_id = len(self._seen)
        iface = _Interface(iface_id, linktype, snaplen)
        name = f"if{len(section.interfaces)}"
        for code, value in _options(buf, pos + 16, pos + length - 4, order):
            if code == IF_NAME:
                name = value.rstrip(b"\0").decode("utf-8", "backslashreplace") or name
            elif code == IF_TSRESOL and value:
                exp = value[0]
                iface.ts_scale = 2.0 ** -(exp & 0x7F) if exp & 0x80 else 10.0**-exp
            elif code == IF_TSOFFSET and len(value) >= 8:
                iface.ts_offset = float(struct.unpack_from(order + "q", value)[0])
        section.interfaces.append(iface)
        self.interfaces.set(iface_id, name)
        self._seen.append(iface)

    def _pcapng_block(
        self,
        buf: bytes,
        used: int,
        epbs: list[int],
        slow: list[tuple[int, int, int, int, float, int]],
        section: _Section,
    ) -> RecordBlock | None:
        order = section.order
        raw = np.frombuffer(buf, np.uint8)
        interfaces = section.interfaces
        n_fast = len(epbs)
        offsets = np.asarray(epbs, np.int64)
        fields = raw[offsets[:, None] + np.arange(28)].copy().view(np.dtype(order + "u4"))
        local_iface = fields[:, 2].astype(np.int64)
        total_len = fields[:, 1].astype(np.int64)
        caplen = fields[:, 5].astype(np.int64)
        wirelen = np.maximum(fields[:, 6], fields[:, 5]).astype(np.int64)
        padded = (caplen + 3) & ~3
        valid = (local_iface < len(interfaces)) & (28 + padded + 4 <= total_len)
        self.skipped += int(np.count_nonzero(~valid))  # framing is intact: read on
        ticks = (fields[:, 3].astype(np.uint64) << np.uint64(32)) | fields[:, 4].astype(np.uint64)
        ts = np.zeros(n_fast, np.float64)
        linktype = np.zeros(n_fast, np.int64)
        iface = np.zeros(n_fast, np.int64)
        for local, spec in enumerate(interfaces):
            mask = local_iface == local
            if mask.any():
                ts[mask] = ticks[mask].astype(np.float64) * spec.ts_scale + spec.ts_offset
                linktype[mask] = spec.linktype
                iface[mask] = spec.iface_id
        direction = np.zeros(n_fast, np.int8)
        pid = np.full(n_fast, -1, np.int64)
        names: dict[int, str] = {}
        with_options = np.flatnonzero(valid & (total_len > 28 + padded + 4))
        for i in with_options.tolist():
            start = epbs[i] + 28 + int(padded[i])
            direction[i], pid[i] = _epb_options(
                buf, start, epbs[i] + int(total_len[i]) - 4, order, section.processes, names
            )
        data_at = offsets + 28
        if slow:
            extra = np.asarray([s[:4] for s in slow], np.int64)
            data_at = np.concatenate([data_at, extra[:, 0]])
            caplen = np.concatenate([caplen, extra[:, 1]])
            wirelen = np.concatenate([wirelen, np.maximum(extra[:, 2], extra[:, 1])])
            iface = np.concatenate([iface, extra[:, 3]])
            ts = np.concatenate([ts, np.asarray([s[4] for s in slow], np.float64)])
            ids = [s[3] for s in slow]
            linktype = np.concatenate(
                [linktype, np.asarray([self._seen[i].linktype for i in ids], np.int64)]
            )
            direction = np.concatenate([direction, np.zeros(len(slow), np.int8)])
            pid = np.concatenate([pid, np.full(len(slow), -1, np.int64)])
            valid = np.concatenate([valid, np.ones(len(slow), bool)])
        if not valid.all():
            keep = np.flatnonzero(valid)
            data_at, caplen, wirelen = data_at[keep], caplen[keep], wirelen[keep]
            ts, linktype, iface = ts[keep], linktype[keep], iface[keep]
            direction, pid = direction[keep], pid[keep]
        if not len(data_at):
            return None
        order_by_position = np.argsort(data_at, kind="stable")
        self.records += len(data_at)
        return RecordBlock(
            data=buf[:used] + bytes(GUARD_BYTES),
            offset=data_at[order_by_position],
            caplen=caplen[order_by_position],
            wirelen=wirelen[order_by_position],
            ts=ts[order_by_position],
            linktype=linktype[order_by_position],
            iface=iface[order_by_position],
            direction=direction[order_by_position],
            pid=pid[order_by_position],
            interfaces=self.interfaces,
            process_names=names,
        )


def _plausible(length: int) -> bool:
    return 12 <= length <= MAX_RECORD_BYTES and length % 4 == 0


def _options(buf: bytes, start: int, end: int, order: str) -> Iterator[tuple[int, bytes]]:
    header = struct.Struct(order + "HH").unpack_from
    pos = start
    while pos + 4 <= end:
        code, length = header(buf, pos)
        if code == OPT_END or pos + 4 + length > end:
            return
        yield code, buf[pos + 4 : pos + 4 + length]
        pos += 4 + ((length + 3) & ~3)


def _parse_pib(buf: bytes, pos: int, length: int, order: str) -> tuple[int, str]:
    pid = struct.unpack_from(order + "i", buf, pos + 8)[0] if length >= 16 else -1
    name = ""
    for code, value in _options(buf, pos + 12, pos + length - 4, order):
        if code == PIB_NAME:
            name = value.rstrip(b"\0").decode("utf-8", "backslashreplace")
    return pid, name


def _epb_options(
    buf: bytes,
    start: int,
    end: int,
    order: str,
    processes: list[tuple[int, str]],
    names: dict[int, str],
) -> tuple[int, int]:
    direction, pid, effective = Direction.UNKNOWN, -1, -1
    for code, value in _options(buf, start, end, order):
        if len(value) < 4:
            continue
        number = struct.unpack_from(order + "I", value)[0]
        if code == EPB_FLAGS:
            direction = {1: Direction.RX, 2: Direction.TX}.get(number & 3, Direction.UNKNOWN)
        elif code == EPB_APPLE_PIB_INDEX and number < len(processes):
            pid = number
        elif code == EPB_APPLE_E_PIB_INDEX and number < len(processes):
            effective = number
    chosen = effective if effective >= 0 else pid
    if chosen < 0:
        return direction, -1
    process_id, name = processes[chosen]
    if process_id >= 0 and name:
        names[process_id] = name
    return direction, process_id


def open_capture_file(path: str) -> CaptureFile:
    """Open a capture file for reading; raises CaptureFileError with one clear line."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - owned by the CaptureFile
    except OSError as exc:
        raise CaptureFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return CaptureFile(stream, path)
    except CaptureFileError:
        stream.close()
        raise
