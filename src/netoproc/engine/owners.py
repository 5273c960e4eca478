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

A flow seen through NAT (a masqueraded uplink, a published port) carries
translated addresses that no socket has; `translated` turns the kernel's
conntrack entry for it into the endpoints of the socket that really carries
it, and `match_socket` finds who was seen using that socket, in this
namespace or another.

Every index is bounded: the least recently sighted socket gives way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from netoproc.model import (
    V4_MAPPED_PREFIX,
    FlowKey,
    NatEntry,
    OwnerSighting,
    ProcessRef,
    is_v4,
)

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

    def match_socket(self, ends: Tuple5) -> ProcessRef | None:
        """Who was seen using the socket with these endpoints (proto, local address,
        port, remote address, port, as the socket itself sees them), in this
        namespace or another; a socket bound to that exact local address too."""
        proto, laddr, lport, raddr, rport = ends
        found = self._exact.get(ends) or self._far_exact.get((proto, raddr, rport, laddr, lport))
        return (
            found
            or self._bound.get((proto, laddr, lport))
            or self._far_bound.get((proto, laddr, lport))
        )

    def moved(self) -> set[Tuple5]:
        """Connected sockets used by another process than before, since the last
        call; each is then forgotten."""
        moved, self._moved = self._moved, set()
        return moved

    def __len__(self) -> int:
        return len(self._exact) + len(self._bound) + len(self._far_exact) + len(self._far_bound)


def translated(key: FlowKey, entry: NatEntry) -> Tuple5 | None:
    """The socket behind a flow seen through NAT: (proto, local address, port,
    remote address, port) as that socket sees them, with its local end at the
    flow's local end. None when the entry does not translate this side of the
    flow (or does not belong to it).

    The entry's original tuple is the initiator's own (its source is its socket,
    its destination the address it dialled); the reply tuple is the responder's
    (its source is the responder's socket, its destination the initiator as
    the responder sees it). A flow whose remote end sent the original tuple is
    the responder's side (a published port: the container that answers); one
    whose remote end sent the reply tuple is the initiator's side (a
    masqueraded connection: the container that dialled out)."""
    if entry.proto != key.proto:
        return None
    local, remote = (key.laddr, key.lport), (key.raddr, key.rport)
    orig_src, orig_dst = entry.orig[:2], entry.orig[2:]
    reply_src, reply_dst = entry.reply[:2], entry.reply[2:]
    if remote == orig_src and local == orig_dst:
        mine, theirs = reply_src, reply_dst
    elif remote == reply_src and local == reply_dst:
        mine, theirs = orig_src, orig_dst
    else:
        return None
    if mine == local:
        return None  # this side's local end is not translated: its socket is the flow's own
    return (key.proto, *mine, *theirs)
