"""What every capture source produces: blocks of raw records, described by arrays.

A `RecordBlock` is one buffer holding many captured frames plus, per record,
where the frame starts, how much of it was captured, how long it was on the
wire, when it was seen, its link type, interface, direction and (when the
capture knows it) owning pid. Sources fill what they know; the decoder fills
the rest from link headers (SLL2 interface index, PKTAP process fields).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# LINKTYPE_* values as written in pcap/pcapng files (tcpdump.org link-layer
# header types). Darwin's DLT_PKTAP is DLT_USER2 (149) in the kernel and 258
# in files; both are accepted.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_DLT_RAW_12 = 12
LINKTYPE_DLT_RAW_14 = 14
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_USER2_PKTAP = 149
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_PKTAP = 258
LINKTYPE_LINUX_SLL2 = 276

# Bytes after the last record, so decoders can gather fixed-size header windows
# without a bounds check per packet. Their content is anything: lengths decide
# what is valid, and nothing past a record's captured length is interpreted.
GUARD_BYTES = 256
# What `build_block` pads with: not zero, so tests would notice a decoder
# reading meaning into the guard.
_GUARD_FILL = b"\xa5"

Int64Array = npt.NDArray[np.int64]


def headers_at(buf: bytes, starts: Int64Array, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """The fixed-size header `dtype` at every offset in `starts`, copied out at once.

    A strided view with one element starting at every byte of `buf` lets a single
    fancy-index gather copy each header as one item: no Python loop per record.
    Every start must leave `dtype.itemsize` bytes in `buf` (the guard bytes do).
    """
    size = dtype.itemsize
    at_every_byte = np.ndarray(
        (max(0, len(buf) - size + 1),), np.dtype(f"V{size}"), buf, strides=(1,)
    )
    return at_every_byte[starts].view(dtype)


def distinct(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The sorted distinct values of a 1-D array, as `np.unique` gives them. Its
    plain form asks numpy.ma whether the array is masked, and importing numpy.ma
    costs 1.2 MiB resident for the life of the process."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


class InterfaceTable:
    """Interface ids and names for one capture source; append-only.

    Ids are the kernel's interface indexes for live captures and small
    integers for files. Names met inside packets (PKTAP headers) are interned
    under ids above `INTERNED_BASE`, clear of any kernel index.
    """

    INTERNED_BASE = 1 << 24

    def __init__(self, names: Mapping[int, str] | None = None) -> None:
        self._names: dict[int, str] = dict(names or {})
        self._ids: dict[str, int] = {name: i for i, name in self._names.items()}
        self._lock = threading.Lock()

    def name(self, iface_id: int) -> str:
        name = self._names.get(iface_id)
        return name if name is not None else (f"if{iface_id}" if iface_id >= 0 else "-")

    def known(self, iface_id: int) -> bool:
        return iface_id in self._names

    def set(self, iface_id: int, name: str) -> None:
        with self._lock:
            self._names[iface_id] = name
            self._ids.setdefault(name, iface_id)

    def intern(self, name: str) -> int:
        iface_id = self._ids.get(name)
        if iface_id is not None:
            return iface_id
        with self._lock:
            iface_id = self._ids.get(name)
            if iface_id is None:
                iface_id = self.INTERNED_BASE + len(self._ids)
                self._ids[name] = iface_id
                self._names[iface_id] = name
            return iface_id


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """A run of captured records sharing one buffer.

    `data` ends with at least GUARD_BYTES bytes of padding. `iface` is -1 and `pid`
    is -1 where the source does not know them; `direction` holds
    `model.Direction` values.
    """

    data: bytes
    offset: Int64Array
    caplen: Int64Array
    wirelen: Int64Array
    ts: npt.NDArray[np.float64]
    linktype: Int64Array
    iface: Int64Array
    direction: npt.NDArray[np.int8]
    pid: Int64Array
    interfaces: InterfaceTable
    process_names: Mapping[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offset)

    def select(self, rows: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> RecordBlock:
        """The same buffer, only the chosen records."""
        return RecordBlock(
            data=self.data,
            offset=self.offset[rows],
            caplen=self.caplen[rows],
            wirelen=self.wirelen[rows],
            ts=self.ts[rows],
            linktype=self.linktype[rows],
            iface=self.iface[rows],
            direction=self.direction[rows],
            pid=self.pid[rows],
            interfaces=self.interfaces,
            process_names=self.process_names,
        )


def build_block(
    frames: list[bytes],
    *,
    ts: list[float],
    linktype: int | list[int],
    interfaces: InterfaceTable | None = None,
    iface: int | list[int] = -1,
    direction: int | list[int] = 0,
    pid: int | list[int] = -1,
    wirelen: list[int] | None = None,
    process_names: Mapping[int, str] | None = None,
) -> RecordBlock:
    """A block from separate frames: for file readers' slow paths and for tests."""
    n = len(frames)
    offsets = np.zeros(n, np.int64)
    position = 0
    for i, frame in enumerate(frames):
        offsets[i] = position
        position += len(frame)
    caplen = np.fromiter((len(f) for f in frames), np.int64, n)
    return RecordBlock(
        data=b"".join(frames) + _GUARD_FILL * GUARD_BYTES,
        offset=offsets,
        caplen=caplen,
        wirelen=caplen.copy() if wirelen is None else np.asarray(wirelen, np.int64),
        ts=np.asarray(ts, np.float64),
        linktype=np.broadcast_to(np.asarray(linktype, np.int64), (n,)).copy(),
        iface=np.broadcast_to(np.asarray(iface, np.int64), (n,)).copy(),
        direction=np.broadcast_to(np.asarray(direction, np.int8), (n,)).copy(),
        pid=np.broadcast_to(np.asarray(pid, np.int64), (n,)).copy(),
        interfaces=interfaces or InterfaceTable(),
        process_names=dict(process_names or {}),
    )


def merge_blocks(blocks: list[RecordBlock]) -> RecordBlock:
    """One block holding the records of several, in order (same interface table)."""
    if len(blocks) == 1:
        return blocks[0]
    datas, offsets, position = [], [], 0
    for block in blocks:
        used = len(block.data) - GUARD_BYTES
        datas.append(block.data[:used])
        offsets.append(block.offset + position)
        position += used
    names: dict[int, str] = {}
    for block in blocks:
        names.update(block.process_names)
    return RecordBlock(
        data=b"".join(datas) + bytes(GUARD_BYTES),
        offset=np.concatenate(offsets),
        caplen=np.concatenate([b.caplen for b in blocks]),
        wirelen=np.concatenate([b.wirelen for b in blocks]),
        ts=np.concatenate([b.ts for b in blocks]),
        linktype=np.concatenate([b.linktype for b in blocks]),
        iface=np.concatenate([b.iface for b in blocks]),
        direction=np.concatenate([b.direction for b in blocks]),
        pid=np.concatenate([b.pid for b in blocks]),
        interfaces=blocks[0].interfaces,
        process_names=names,
    )


I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class FlowColumns:
    """Flow keys as columns, oriented (local, remote) as the engine keys flows:
    interface, protocol, 128-bit addresses in two unsigned halves, ports."""

    iface: I64
    proto: I64
    l_hi: U64
    l_lo: U64
    lport: I64
    r_hi: U64
    r_lo: U64
    rport: I64

    def __len__(self) -> int:
        return len(self.iface)


@dataclass(frozen=True, slots=True)
class CounterBatch:
    """Flows the kernel counted since the last batch (Linux: capture/counts.py),
    one row per flow. Times are wall-clock seconds."""

    key: FlowColumns
    rx_bytes: I64
    tx_bytes: I64
    rx_packets: I64
    tx_packets: I64
    first_ts: npt.NDArray[np.float64]
    last_ts: npt.NDArray[np.float64]
    retransmits: I64
    segments_sent: I64
    peer_retransmits: I64
    dup_acks: I64
    interfaces: InterfaceTable

    def __len__(self) -> int:
        return len(self.key)


@dataclass(frozen=True, slots=True)
class RttSamples:
    """RTT samples the kernel took (data segment to its ACK, Karn's rule), by flow."""

    key: FlowColumns
    rtt: npt.NDArray[np.float64]  # seconds
    at: npt.NDArray[np.float64]  # wall-clock seconds

    def __len__(self) -> int:
        return len(self.key)


class EveryPacket:
    """For a capture that reads every packet: the kernel counts nothing for it."""

    def counts(self, wall_offset: float) -> tuple[CounterBatch, RttSamples] | None:
        return None

    def counting(self) -> tuple[str, str, int]:
        return "packets", "", 0
