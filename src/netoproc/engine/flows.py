"""Flows: counters in arrays, one slot per flow; a small object per flow for the rest.

The hot path never touches a Python object for a flow it already knows: a
batch's flows are found by their 64-bit key hash and their counters are
added with array operations. Only a new flow costs Python work (its key, its
attribution). `Flow` objects hold what changes rarely: owner, socket; their
counters stay in the table's arrays, at the flow's slot. The table is the one
index of flows: by slot, by key hash and by key.

Also here: which side of a conversation is local (for packets whose capture
does not say), and the ports of fragmented datagrams.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from netoproc.model import FlowKey, ProcessRef, SocketInfo, UnknownReason
from netoproc.snapshot import TRAFFIC_COLUMNS, Traffic

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

KEY_COLUMNS = ("iface", "proto", "l_hi", "l_lo", "lport", "r_hi", "r_lo", "rport")


class KeyColumns(Protocol):
    """Flow keys as columns (a batch's FlowGroups, the kernel's FlowColumns)."""

    @property
    def iface(self) -> I64: ...
    @property
    def proto(self) -> I64: ...
    @property
    def l_hi(self) -> U64: ...
    @property
    def l_lo(self) -> U64: ...
    @property
    def lport(self) -> I64: ...
    @property
    def r_hi(self) -> U64: ...
    @property
    def r_lo(self) -> U64: ...
    @property
    def rport(self) -> I64: ...


def key_rows(keys: KeyColumns, index: I64) -> list[tuple[int, ...]]:
    """Some flows' keys as tuples of ints, in KEY_COLUMNS order."""
    return list(zip(*(getattr(keys, name)[index].tolist() for name in KEY_COLUMNS), strict=True))


def _empty(dtype: type[np.generic], value: object) -> dict[str, Any]:
    """A column's type, and its value in an empty slot."""
    return {"dtype": dtype, "empty": value}


@dataclasses.dataclass(slots=True)
class FlowArrays:
    """Every flow's counters and key, one array each, indexed by the flow's slot.
    (*) `outbound`: 1 the local end opened it, 0 the peer did, -1 no SYN seen."""

    rx_bytes: I64 = field(metadata=_empty(np.int64, 0))
    tx_bytes: I64 = field(metadata=_empty(np.int64, 0))
    rx_packets: I64 = field(metadata=_empty(np.int64, 0))
    tx_packets: I64 = field(metadata=_empty(np.int64, 0))
    tick_rx: I64 = field(metadata=_empty(np.int64, 0))  # bytes since the last tick
    tick_tx: I64 = field(metadata=_empty(np.int64, 0))
    first_seen: F64 = field(metadata=_empty(np.float64, 0.0))
    last_seen: F64 = field(metadata=_empty(np.float64, 0.0))
    outbound: npt.NDArray[np.int8] = field(metadata=_empty(np.int8, -1))  # from the SYN (*)
    closed: Bool = field(metadata=_empty(np.bool_, False))  # FIN or RST seen
    owned: Bool = field(metadata=_empty(np.bool_, False))  # the flow has a process
    conversation: U64 = field(metadata=_empty(np.uint64, 0))  # see ConversationSides
    key_hash: U64 = field(metadata=_empty(np.uint64, 0))
    # the kernel's figures for the flow's socket (tcp_info), where it has them:
    # copied when the socket is learnt, so a tick reads them as arrays
    kernel_tcp: Bool = field(metadata=_empty(np.bool_, False))
    kernel_rtt: F64 = field(metadata=_empty(np.float64, np.nan))
    kernel_rttvar: F64 = field(metadata=_empty(np.float64, np.nan))
    kernel_retransmits: I64 = field(metadata=_empty(np.int64, -1))  # -1: not kept
    iface: I64 = field(metadata=_empty(np.int64, 0))
    proto: I64 = field(metadata=_empty(np.int64, 0))
    l_hi: U64 = field(metadata=_empty(np.uint64, 0))
    l_lo: U64 = field(metadata=_empty(np.uint64, 0))
    lport: I64 = field(metadata=_empty(np.int64, 0))
    r_hi: U64 = field(metadata=_empty(np.uint64, 0))
    r_lo: U64 = field(metadata=_empty(np.uint64, 0))
    rport: I64 = field(metadata=_empty(np.int64, 0))

    @classmethod
    def empty(cls, capacity: int, old: FlowArrays | None = None) -> FlowArrays:
        """Arrays for `capacity` slots, with `old`'s values in the first ones."""
        columns = {}
        for f in dataclasses.fields(cls):
            column = np.full(capacity, f.metadata["empty"], f.metadata["dtype"])
            if old is not None:
                kept = getattr(old, f.name)
                column[: len(kept)] = kept
            columns[f.name] = column
        return cls(**columns)

    def clear(self, slot: int) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name)[slot] = f.metadata["empty"]


class Flow:
    """One flow: its key, slot, and what the rest of the program says about it."""

    __slots__ = (
        "_socket",
        "_table",
        "by_kernel",
        "far",
        "key",
        "nat",
        "nat_asked",
        "owner",
        "reason",
        "slot",
    )

    def __init__(self, table: FlowTable, slot: int, key: FlowKey) -> None:
        self._table = table
        self.slot = slot
        self.key = key
        self.owner: ProcessRef | None = None
        self.reason: UnknownReason | None = UnknownReason.PENDING
        self._socket: SocketInfo | None = None
        self.by_kernel = False  # the owner is one the kernel saw using the socket
        # the owner's socket is at the far end, in another namespace: its view of the
        # flow is this one reversed (what arrives here, it sent)
        self.far = False
        # seen through NAT: the endpoints of the socket that really carries it, as
        # that socket sees them (engine/owners.py: translated); and how often the
        # kernel's connection tracker was asked about it
        self.nat: tuple[int, int, int, int, int] | None = None
        self.nat_asked = 0

    @property
    def socket(self) -> SocketInfo | None:
        return self._socket

    @socket.setter
    def socket(self, sock: SocketInfo | None) -> None:
        self._socket = sock
        a, slot = self._table.arrays, self.slot
        kernel = sock.tcp if sock is not None and sock.connected else None
        a.kernel_tcp[slot] = kernel is not None
        a.kernel_rtt[slot] = kernel.rtt_ms if kernel else np.nan
        a.kernel_rttvar[slot] = kernel.rttvar_ms if kernel else np.nan
        retransmits = kernel.total_retrans if kernel else None
        a.kernel_retransmits[slot] = -1 if retransmits is None else retransmits

    def attribute(self, owner: ProcessRef | None, reason: UnknownReason | None) -> None:
        self.owner, self.reason = owner, (None if owner else reason)
        self._table.arrays.owned[self.slot] = owner is not None


class FlowTable:
    """Every flow's counters in arrays; flows found by the hash of their key."""

    def __init__(self, capacity: int = 1024) -> None:
        self.arrays = FlowArrays.empty(capacity)
        self.capacity = capacity
        self._free: list[int] = []
        self._size = 0
        self.flows: dict[int, Flow] = {}  # slot -> flow
        self.by_key: dict[FlowKey, Flow] = {}
        self._by_hash: dict[int, int] = {}  # key hash -> slot
        self._collided: dict[tuple[int, ...], int] = {}  # exact key -> slot, for the rare clash

    def find(self, hashes: U64, keys: KeyColumns) -> I64:
        """The slot of each flow (by the hash of its key, and its key), -1 if new."""
        by_hash = self._by_hash
        slots = np.fromiter((by_hash.get(h, -1) for h in hashes.tolist()), np.int64, len(hashes))
        found = np.flatnonzero(slots >= 0)
        if len(found):
            at = slots[found]
            same = np.ones(len(found), np.bool_)
            for name in KEY_COLUMNS:
                same &= getattr(self.arrays, name)[at] == getattr(keys, name)[found]
            slots[found[~same]] = -1  # a different flow with the same hash
        if self._collided:  # flows whose hash another flow had first
            unknown = np.flatnonzero(slots < 0)
            for i, exact in zip(unknown.tolist(), key_rows(keys, unknown), strict=True):
                slots[i] = self._collided.get(exact, -1)
        return slots

    def create(self, key: FlowKey, columns: tuple[int, ...], key_hash: int) -> Flow:
        """A new flow; `columns` are its key's (see key_rows)."""
        if self._free:
            slot = self._free.pop()
        else:
            if self._size == self.capacity:
                # by half, not double: the TCP state follows this capacity, at
                # ~500 bytes a slot, and a table just past a power of two would
                # carry nearly as many empty slots as flows
                self.capacity += max(1, self.capacity // 2)
                self.arrays = FlowArrays.empty(self.capacity, self.arrays)
            slot = self._size
            self._size += 1
        for name, value in zip(KEY_COLUMNS, columns, strict=True):
            getattr(self.arrays, name)[slot] = value
        self.arrays.key_hash[slot] = key_hash
        if key_hash in self._by_hash:
            self._collided[columns] = slot
        else:
            self._by_hash[key_hash] = slot
        flow = self.flows[slot] = self.by_key[key] = Flow(self, slot, key)
        return flow

    def traffic(self, slot: int) -> Traffic:
        """One flow's totals (a tick reads every flow's at once, from whole arrays)."""
        a = self.arrays
        return Traffic(*(int(getattr(a, name)[slot]) for name in TRAFFIC_COLUMNS))

    def release(self, flow: Flow) -> None:
        slot = flow.slot
        a = self.arrays
        key_hash = int(a.key_hash[slot])
        if self._by_hash.get(key_hash) == slot:
            del self._by_hash[key_hash]
        else:
            self._collided.pop(tuple(int(getattr(a, name)[slot]) for name in KEY_COLUMNS), None)
        a.clear(slot)
        del self.flows[slot], self.by_key[flow.key]
        self._free.append(slot)


class ConversationSides:
    """Which side of each conversation is local, for captures that do not say.

    Conversations are keyed by the hash of their two endpoints in a canonical
    order ("a" then "b"); a conversation is remembered while a flow of it lives.
    """

    def __init__(self) -> None:
        # hash -> flows using it * 2 + (1 if "a" is local): one small int, no object
        # of its own per conversation (a host holding 5,000 connections has 5,000)
        self._sides: dict[int, int] = {}

    def lookup(self, hashes: U64) -> npt.NDArray[np.int8]:
        """1 where "a" is local, 0 where "b" is, -1 for conversations not seen."""
        sides = self._sides
        return np.fromiter(
            ((sides[h] & 1 if h in sides else -1) for h in hashes.tolist()), np.int8, len(hashes)
        )

    def add(self, conversation: int, local_is_a: bool) -> None:
        self._sides[conversation] = self._sides.get(conversation, int(local_is_a)) + 2

    def remove(self, conversation: int) -> None:
        entry = self._sides.get(conversation)
        if entry is not None:
            if entry < 4:  # its last flow
                del self._sides[conversation]
            else:
                self._sides[conversation] = entry - 2


class FragmentPorts:
    """Ports of fragmented datagrams, learnt from the first fragment.

    Keyed by (source, destination, protocol, fragment id); bounded, oldest
    entries forgotten first.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._ports: OrderedDict[tuple[int, int, int, int], tuple[int, int]] = OrderedDict()
        self._capacity = capacity

    def learn(self, key: tuple[int, int, int, int], ports: tuple[int, int]) -> None:
        self._ports[key] = ports
        self._ports.move_to_end(key)
        if len(self._ports) > self._capacity:
            self._ports.popitem(last=False)

    def ports(self, key: tuple[int, int, int, int]) -> tuple[int, int] | None:
        return self._ports.get(key)
