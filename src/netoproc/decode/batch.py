"""`PacketBatch`: the decoded packets of one RecordBlock, one numpy array per field.

Addresses are split into two unsigned 64-bit halves of the 128-bit form used
in `model` (IPv4 mapped into IPv6), so both families share every column.
Rows keep the order of the records they came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import InterfaceTable

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

# (name, dtype) of every per-packet column, in one place for both decoders.
COLUMNS: tuple[tuple[str, type[np.generic]], ...] = (
    ("ts", np.float64),
    ("iface", np.int64),
    ("direction", np.int8),
    ("pid", np.int64),
    ("proto", np.int64),
    ("src_hi", np.uint64),
    ("src_lo", np.uint64),
    ("dst_hi", np.uint64),
    ("dst_lo", np.uint64),
    ("sport", np.int64),
    ("dport", np.int64),
    ("ip_length", np.int64),
    ("transport", np.bool_),
    ("tcp_flags", np.int64),
    ("seq", np.int64),
    ("ack", np.int64),
    ("payload_length", np.int64),
    ("fragment_id", np.int64),
    ("window", np.int64),
    ("tsval", np.int64),  # TCP timestamp option, -1 when absent
    ("tsecr", np.int64),
)


@dataclass(frozen=True, slots=True)
class DecodeCounts:
    """What happened to the records of a block."""

    records: int = 0
    malformed: int = 0
    not_ip: int = 0
    portless: int = 0


@dataclass(frozen=True, slots=True)
class PacketBatch:
    ts: npt.NDArray[np.float64]
    iface: I64
    direction: npt.NDArray[np.int8]
    pid: I64
    proto: I64
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    ip_length: I64
    transport: npt.NDArray[np.bool_]
    tcp_flags: I64
    seq: I64
    ack: I64
    payload_length: I64
    fragment_id: I64
    window: I64
    tsval: I64
    tsecr: I64
    interfaces: InterfaceTable
    process_names: Mapping[int, str] = field(default_factory=dict)
    # (row, transport payload as captured) for packets to or from port 53
    dns: tuple[tuple[int, bytes], ...] = ()
    counts: DecodeCounts = DecodeCounts()

    def __len__(self) -> int:
        return len(self.ts)

    def column(self, name: str) -> npt.NDArray[np.generic]:
        value: npt.NDArray[np.generic] = getattr(self, name)
        return value

    def select(self, keep: npt.NDArray[np.bool_]) -> PacketBatch:
        """Only the rows where `keep` is true (DNS payloads follow their rows)."""
        new_row = np.cumsum(keep) - 1
        columns = {name: getattr(self, name)[keep] for name, _ in COLUMNS}
        return PacketBatch(
            **columns,
            interfaces=self.interfaces,
            process_names=self.process_names,
            dns=tuple((int(new_row[row]), payload) for row, payload in self.dns if keep[row]),
            counts=self.counts,
        )


def empty_columns(n: int) -> dict[str, npt.NDArray[Any]]:
    return {name: np.zeros(n, dtype) for name, dtype in COLUMNS}
