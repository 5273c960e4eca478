"""Flows: counters in arrays, one slot per flow; a small object per flow for the rest.

The hot path never touches a Python object for a flow it already knows: a
batch's flows are found by their 64-bit key hash and their counters are
added with array operations. Only a new flow costs Python work (its key, its
attribution). `Flow` objects hold what changes rarely: owner, socket,
histories; their counters stay in the table's arrays, at the flow's slot.

Also here: which side of a conversation is local (for packets whose capture
does not say), and the ports of fragmented datagrams.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import numpy as np
import numpy.typing as npt

from netoproc.model import FlowKey, ProcessRef, SocketInfo, UnknownReason
from netoproc.snapshot import TRAFFIC_COLUMNS, Traffic

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

KEY_COLUMNS = ("iface", "proto", "l_hi", "l_lo", "lport", "r_hi", "r_lo", "rport")

# counter name -> (dtype, value of an empty slot)
_COUNTERS: dict[str, tuple[type[np.generic], object]] = {
    "rx_bytes": (np.int64, 0), "tx_bytes": (np.int64, 0),
    "rx_packets": (np.int64, 0), "tx_packets": (np.int64, 0),
    "tick_rx": (np.int64, 0), "tick_tx": (np.int64, 0),  # bytes since the last tick
    "first_seen": (np.float64, 0.0), "last_seen": (np.float64, 0.0),
    "outbound": (np.int8, -1),  # from the SYN: 1 we opened it, 0 the peer did, -1 unknown
    "closed": (np.bool_, False),  # FIN or RST seen
    "owned": (np.bool_, False),  # the flow has a process
    "conversation": (np.uint64, 0),  # its conversation's hash (see ConversationSides)
    "key_hash": (np.uint64, 0),
    "iface": (np.int64, 0), "proto": (np.int64, 0),
    "l_hi": (np.uint64, 0), "l_lo": (np.uint64, 0), "lport": (np.int64, 0),
    "r_hi": (np.uint64, 0), "r_lo": (np.uint64, 0), "rport": (np.int64, 0),
}  # fmt: skip


class Flow:
    """One flow: its key, slot, and what the rest of the program says about it."""

    __slots__ = (
        "_table",
        "by_kernel",
        "far",
        "key",
        "nat",
        "nat_asked",
        "owner",
        "reason",
        "retransmit_marks",
        "slot",
        "socket",
    )

    def __init__(self, table: FlowTable, slot: int, key: FlowKey) -> None:
        self._table = table
        self.slot = slot
        self.key = key
        self.owner: ProcessRef | None = None
        self.reason: UnknownReason | None = UnknownReason.PENDING
        self.socket: SocketInfo | None = None
        self.by_kernel = False  # the owner is one the kernel saw using the socket
        # the owner's socket is at the far end, in another namespace: its view of the
        # flow is this one reversed (what arrives here, it sent)
        self.far = False
        # seen through NAT: the endpoints of the socket that really carries it, as
        # that socket sees them (engine/owners.py: translated); and how often the
        # kernel's connection tracker was asked about it
        self.nat: tuple[int, int, int, int, int] | None = None
        self.nat_asked = 0
        # (time, retransmits, segments sent) at recent ticks, for rates over 10 s;
        # TCP only, made at the first tick (an empty deque costs 600 bytes)
        self.retransmit_marks: deque[tuple[float, int, int]] | None = None

    def attribute(self, owner: ProcessRef | None, reason: UnknownReason | None) -> None:
        self.owner, self.reason = owner, (None if owner else reason)
        self._table.arrays["owned"][self.slot] = owner is not None


class FlowTable:
    """Every flow's counters in arrays; flows found by the hash of their key."""

    def __init__(self, capacity: int = 1024) -> None:
        self.arrays: dict[str, npt.NDArray[Any]] = {}
        self.capacity = 0
        self._grow(capacity)
        self._free: list[int] = []
        self._size = 0
        self.flows: dict[int, Flow] = {}  # slot -> flow
        self._by_hash: dict[int, int] = {}  # key hash -> slot
        self._collided: dict[tuple[int, ...], int] = {}  # exact key -> slot, for the rare clash

    def _grow(self, capacity: int) -> None:
        for name, (dtype, empty) in _COUNTERS.items():
            grown = np.full(capacity, empty, dtype)
            old = self.arrays.get(name)
            if old is not None:
                grown[: len(old)] = old
            self.arrays[name] = grown
        self.capacity = capacity

    def find(self, hashes: U64, keys: list[npt.NDArray[Any]]) -> I64:
        """The slot of each flow (by hash and key columns, in KEY_COLUMNS order), -1 if new."""
        by_hash = self._by_hash
        slots = np.fromiter((by_hash.get(h, -1) for h in hashes.tolist()), np.int64, len(hashes))
        found = np.flatnonzero(slots >= 0)
        if len(found):
            at = slots[found]
            same = np.ones(len(found), np.bool_)
            for name, column in zip(KEY_COLUMNS, keys, strict=True):
                same &= self.arrays[name][at] == column[found]
            slots[found[~same]] = -1  # a different flow with the same hash
        if self._collided:  # flows whose hash another flow had first
            for i in np.flatnonzero(slots < 0).tolist():
                exact = tuple(int(column[i]) for column in keys)
                slots[i] = self._collided.get(exact, -1)
        return slots

    def create(self, key: FlowKey, columns: tuple[int, ...], key_hash: int) -> Flow:
        """A new flow; `columns` are its key columns in KEY_COLUMNS order."""
        if self._free:
            slot = self._free.pop()
        else:
            if self._size == self.capacity:
                self._grow(self.capacity * 2)
            slot = self._size
            self._size += 1
        for name, value in zip(KEY_COLUMNS, columns, strict=True):
            self.arrays[name][slot] = value
        self.arrays["key_hash"][slot] = key_hash
        if key_hash in self._by_hash:
            self._collided[columns] = slot
        else:
            self._by_hash[key_hash] = slot
        flow = self.flows[slot] = Flow(self, slot, key)
        return flow

    def traffic(self, slot: int) -> Traffic:
        """One flow's totals (a tick reads every flow's at once, from whole arrays)."""
        a = self.arrays
        return Traffic(*(int(a[name][slot]) for name in TRAFFIC_COLUMNS))

    def release(self, flow: Flow) -> None:
        slot = flow.slot
        key_hash = int(self.arrays["key_hash"][slot])
        if self._by_hash.get(key_hash) == slot:
            del self._by_hash[key_hash]
        else:
            self._collided.pop(tuple(int(self.arrays[name][slot]) for name in KEY_COLUMNS), None)
        for name, (_dtype, empty) in _COUNTERS.items():
            self.arrays[name][slot] = empty
        del self.flows[slot]
        self._free.append(slot)


class ConversationSides:
    """Which side of each conversation is local, for captures that do not say.

    Conversations are keyed by the hash of their two endpoints in a canonical
    order ("a" then "b"); a conversation is remembered while a flow of it lives.
    """

    def __init__(self) -> None:
        self._sides: dict[int, list[int]] = {}  # hash -> [local is a (0/1), flows using it]

    def lookup(self, hashes: U64) -> npt.NDArray[np.int8]:
        """1 where "a" is local, 0 where "b" is, -1 for conversations not seen."""
        sides = self._sides
        return np.fromiter(
            ((sides[h][0] if h in sides else -1) for h in hashes.tolist()), np.int8, len(hashes)
        )

    def add(self, conversation: int, local_is_a: bool) -> None:
        entry = self._sides.setdefault(conversation, [int(local_is_a), 0])
        entry[1] += 1

    def remove(self, conversation: int) -> None:
        entry = self._sides.get(conversation)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._sides[conversation]


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
