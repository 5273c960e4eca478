"""Owners the kernel reported (`OwnerSighting`s, Linux eBPF), indexed for flows.

A sighting names the process that used a socket at the moment it sent or
received, so it beats the socket table, which is read after the fact. A flow
matches, in the kernel's own delivery order: a connected socket of this
namespace by its exact endpoints, then an unconnected one bound to the local
address and port, then one bound to the wildcard address (for IPv4, the IPv4
wildcard before a dual-stack IPv6 one). Sockets in other namespaces (behind a
veth) sit at the far end of the flows netoproc captures, so they match by the
flow's remote endpoint, exactly or by a bound address, never by a wildcard,
which would catch any traffic to that port.

Every index is bounded: the least recently sighted socket gives way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from netoproc.model import V4_MAPPED_PREFIX, FlowKey, OwnerSighting, ProcessRef, is_v4

MAX_SIGHTED = 65536  # sockets remembered per index; as many as the kernel's de-dup map
K = TypeVar("K")
Tuple5 = tuple[int, int, int, int, int]


class Seen(NamedTuple):
    """Who the kernel saw using a flow's socket; `far`: a socket of another
    namespace, at the flow's remote end (its sends arrive here, its receives leave)."""

    process: ProcessRef
    far: bool = False


class SightedOwners:
    def __init__(self, capacity: int = MAX_SIGHTED) -> None:
        self.capacity = capacity
        self._exact: OrderedDict[Tuple5, ProcessRef] = OrderedDict()
        self._bound: OrderedDict[tuple[int, int, int], ProcessRef] = OrderedDict()
        # other namespaces' sockets, under the endpoints flows here see them by
        self._far_exact: OrderedDict[Tuple5, ProcessRef] = OrderedDict()
        self._far_bound: OrderedDict[tuple[int, int, int], ProcessRef] = OrderedDict()
        # connected sockets another process has used since the last `changed()`
        self._moved: set[Tuple5] = set()

    def add(self, sightings: Iterable[OwnerSighting]) -> None:
        for s in sightings:
            if s.foreign:
                if s.connected:
                    key = (s.proto, s.raddr, s.rport, s.laddr, s.lport)
                    self._keep(self._far_exact, key, s.process)
                elif s.laddr not in (0, V4_MAPPED_PREFIX):
                    self._keep(self._far_bound, (s.proto, s.laddr, s.lport), s.process)
            elif s.connected:
                key = (s.proto, s.laddr, s.lport, s.raddr, s.rport)
                old = self._keep(self._exact, key, s.process)
                if old is not None and old.pid != s.process.pid:
                    self._moved.add(key)
            else:
                self._keep(self._bound, (s.proto, s.laddr, s.lport), s.process)

    def _keep(
        self, index: OrderedDict[K, ProcessRef], key: K, process: ProcessRef
    ) -> ProcessRef | None:
        """Remember `process` under `key` as the latest; returns who was there."""
        old = index.pop(key, None)
        index[key] = process
        if len(index) > self.capacity:
            index.popitem(last=False)
        return old

    def match(self, key: FlowKey) -> Seen | None:
        """The process the kernel saw using the flow's socket, if it did."""
        proto, laddr, lport, raddr, rport = key[1:]
        found = self._exact.get((proto, laddr, lport, raddr, rport))
        if found is None and self._bound:
            bound = self._bound
            found = bound.get((proto, laddr, lport))
            if found is None and is_v4(laddr):
                found = bound.get((proto, V4_MAPPED_PREFIX, lport))
            found = found or bound.get((proto, 0, lport))
        if found is not None:
            return Seen(found)
        if self._far_exact:
            found = self._far_exact.get((proto, laddr, lport, raddr, rport))
        if found is None and self._far_bound:
            found = self._far_bound.get((proto, raddr, rport))
        return Seen(found, far=True) if found is not None else None

    def moved(self) -> set[Tuple5]:
        """Connected sockets used by another process than before, since the last
        call; each is then forgotten."""
        moved, self._moved = self._moved, set()
        return moved

    def __len__(self) -> int:
        return len(self._exact) + len(self._bound) + len(self._far_exact) + len(self._far_bound)
