"""The engine: all mutable state of a run, and nothing that does I/O or reads a clock.

    sight(sightings)     <- processes the kernel saw using sockets (Linux eBPF)
    nat_questions(n)     -> unknown flows to ask the connection tracker about
    translate(entries)   <- its answers: flows seen through NAT (Linux)
    ingest(batch)        -> flows that need a socket lookup now
    ingest_counts(counts)-> the same, for flows the kernel counted (Linux eBPF)
    add_rtt(samples)     <- RTT samples the kernel took for those flows
    attribute(found)     <- the platform's answers for those flows
    update_sockets(all)  <- the full socket table, every few ticks
    update_interfaces()  <- the OS's interface counters, every tick
    tick(now)            -> a frozen Snapshot

Time arrives as data (packet timestamps, `now`), so replaying a capture gives
the same snapshots every time. A new flow takes the owner the kernel saw
using its socket, if it did (see engine/owners.py); otherwise it triggers an
immediate lookup so that a connection living a few milliseconds is still
attributed, and flows still unknown are retried against every full table and
every later sighting. A flow no socket here carries may have been seen
through NAT (a container behind a masquerading bridge, a published port): the
platform's conntrack entry for it names the socket that does.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from netoproc.capture.records import CounterBatch, RttSamples
from netoproc.decode.batch import PacketBatch
from netoproc.engine.attribution import SocketIndex, reason_for
from netoproc.engine.dns import DnsTracker
from netoproc.engine.floods import MAX_FLOWS, Floods
from netoproc.engine.flows import (
    ConversationSides,
    Flow,
    FlowTable,
    FragmentPorts,
)
from netoproc.engine.grouping import (
    FlowGroups,
    conversation_hashes,
    counted_groups,
    group,
    key_hashes,
    orient,
)
from netoproc.engine.interfaces import InterfaceStats
from netoproc.engine.owners import SightedOwners, translated
from netoproc.engine.tcp import JITTER_SECONDS, TcpHealth
from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Direction,
    FlowKey,
    InterfaceInfo,
    NatEntry,
    OwnerSighting,
    ProcessRef,
    SocketInfo,
    UnknownReason,
)
from netoproc.snapshot import (
    EXITED_PID,
    CaptureHealth,
    ConnectionRow,
    ProcessRow,
    Snapshot,
    Traffic,
)
from netoproc.snapshot import (
    TcpHealth as TcpHealthRow,
)

HISTORY_SECONDS = 60
ACTIVE_SECONDS = 10.0
# Exited processes kept as rows of their own; older ones fold into one row
# per name and user, and past as many names into one row called OTHER_EXITED.
KEEP_EXITED = 1_000
OTHER_EXITED = "other"
NAT_ASKS = 2  # times an unknown flow is asked about (its entry may not be confirmed yet)
NAT_DEFERRED = "conntrack lookups deferred to a later tick"

Owner = ProcessRef | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Figures:
    """Every flow's counters at a tick, as arrays in the order of the flows, each
    from its owner's side."""

    rx_bytes: npt.NDArray[np.int64]
    tx_bytes: npt.NDArray[np.int64]
    rx_packets: npt.NDArray[np.int64]
    tx_packets: npt.NDArray[np.int64]
    rx_rate: npt.NDArray[np.float64]
    tx_rate: npt.NDArray[np.float64]
    first: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    outbound: npt.NDArray[np.int8]  # from the SYN: 1 its owner opened it, 0 the peer, -1 unknown
    closed: npt.NDArray[np.bool_]
    slots: npt.NDArray[np.int64]

    def total(self, i: int) -> Traffic:
        return Traffic(int(self.rx_bytes[i]), int(self.tx_bytes[i]), int(self.rx_packets[i]),
                       int(self.tx_packets[i]))  # fmt: skip


def _owners_of(flows: list[Flow]) -> tuple[list[Owner], npt.NDArray[np.int64]]:
    """The flows' distinct owners, and each flow's index among them. Flows of one
    process mostly share one ProcessRef object: they are told apart by identity
    first, and only the distinct objects are hashed."""
    seen: dict[int, int] = {}
    distinct: list[Owner] = []
    group = np.empty(len(flows), np.int64)
    for i, flow in enumerate(flows):
        owner = flow.owner
        g = seen.get(id(owner))
        if g is None:
            g = seen[id(owner)] = len(distinct)
            distinct.append(owner)
        group[i] = g
    canonical: dict[Owner, int] = {}
    remap = np.fromiter((canonical.setdefault(o, len(canonical)) for o in distinct), np.int64,
                        len(distinct))  # fmt: skip
    return list(canonical), remap[group] if len(group) else group


class Engine:
    def __init__(
        self,
        *,
        started: float,
        interval: float = 1.0,
        process_lookups: bool = True,
        retire_after: float = 300.0,
        keep_exited: int = KEEP_EXITED,
        dns: bool = True,
        max_flows: int = MAX_FLOWS,
    ) -> None:
        """`process_lookups` False: no socket table exists (a replayed file), so
        only processes the capture itself names are known. `dns` False: no DNS
        observatory (--no-dns). `keep_exited`: how many exited processes keep a
        row of their own (see _fold_exited). `max_flows`: the flow table's bound
        (see floods.py, which also folds floods and scans into aggregate rows)."""
        self.started = started
        self.interval = interval
        self.process_lookups = process_lookups
        self.retire_after = retire_after
        self.keep_exited = keep_exited
        self.flows: dict[FlowKey, Flow] = {}
        self.table = FlowTable()
        self._sides = ConversationSides()  # orients packets whose direction is not captured
        self.sockets = SocketIndex()
        self.sighted = SightedOwners()
        self._new_sightings = False
        self._owners = ("", "", 0)  # CaptureHealth's owners, owners_why, owner_events_lost
        self._counting = ("", "", 0)  # CaptureHealth's counting, counting_why, counter_overflow
        self._fragments = FragmentPorts()
        self.interfaces = InterfaceStats()
        self.resolvers: dict[str, tuple[str, ...]] = {}  # interface -> configured DNS servers
        self.dns = DnsTracker() if dns else None
        self.tcp = TcpHealth(self.table.capacity)
        self.floods = Floods(max_flows=max_flows)
        self._retired: dict[Owner, Traffic] = {}  # oldest retirement first
        self._folded: dict[tuple[str, str], ProcessRow] = {}  # (name, user) -> exited ones
        self._retired_reasons: dict[str, int] = {}
        self._process_history: dict[Owner, tuple[deque[float], deque[float]]] = {}
        self._last_tick = started
        self._packets = self._bytes = 0
        self._malformed = self._not_ip = self._portless = 0
        self._kernel_drops = self._queue_drops = 0
        self.platform_errors = 0  # questions to the OS that failed (and were retried later)
        self._nat_deferred = 0

    # packets ---------------------------------------------------------------

    def sight(self, sightings: Iterable[OwnerSighting]) -> None:
        """Processes the kernel saw using sockets: new flows take them first; flows
        already made take them at the next tick. A connected socket now used by
        another process (a socket passed on, or its ports taken again by a new
        one) ends its flow at once: the kernel's word comes before the packets it
        sent reach the engine, so they start a new flow under the new owner."""
        sightings = list(sightings)
        if not sightings:
            return
        self.sighted.add(sightings)
        self._new_sightings = True
        moved = self.sighted.moved()
        if moved:
            for flow in [f for f in self.flows.values() if f.key[1:] in moved]:
                seen = self.sighted.match(flow.key)
                if (flow.by_kernel and not flow.far and seen is not None and flow.owner
                        and seen.process.pid != flow.owner.pid):  # fmt: skip
                    self._retire(flow)  # its bytes so far stay with the process that moved them

    def ingest(self, batch: PacketBatch) -> list[FlowKey]:
        """Count a batch; return the new flows that need a socket lookup."""
        counts = batch.counts
        self._malformed += counts.malformed
        self._not_ip += counts.not_ip
        self._portless += counts.portless
        if not len(batch):
            return []
        if (batch.fragment_id >= 0).any():
            batch = self._join_fragments(batch)
        self._packets += len(batch)
        self._bytes += int(batch.ip_length.sum())
        direction, grouping = orient(batch, self._sides.lookup)
        groups = group(batch, direction, grouping)
        keys = [groups.iface, groups.proto, groups.l_hi, groups.l_lo, groups.lport,
                groups.r_hi, groups.r_lo, groups.rport]  # fmt: skip
        slots = self.table.find(groups.key_hash, keys)
        self._reopen(groups, slots)
        groups, slots = self.floods.fold(
            groups, slots, batch, direction, self.sockets, len(self.flows)
        )
        new = self._create_flows(groups, slots, batch.process_names, batch.interfaces.name)
        if new:
            new = self.floods.allow_lookups(new, float(batch.ts.max()))
        self._add(groups, slots, batch.process_names)
        # packets of folded flows (group -1) have no flow to keep TCP state for
        tcp = np.flatnonzero(
            (batch.proto == IPPROTO_TCP) & batch.transport & (groups.row_group >= 0)
        )
        if len(tcp):
            self.tcp.analyse(
                slots[groups.row_group[tcp]], direction[tcp], batch.ts[tcp], batch.seq[tcp],
                batch.ack[tcp], batch.tcp_flags[tcp], batch.payload_length[tcp],
                batch.window[tcp], batch.tsval[tcp], batch.tsecr[tcp],
            )  # fmt: skip
        if self.dns is not None and batch.dns:
            self._observe_dns(batch, direction)
        return new

    def _observe_dns(self, batch: PacketBatch, direction: npt.NDArray[np.int8]) -> None:
        assert self.dns is not None
        interface = batch.interfaces.name
        for row, payload in batch.dns:
            src = (int(batch.src_hi[row]) << 64) | int(batch.src_lo[row])
            dst = (int(batch.dst_hi[row]) << 64) | int(batch.dst_lo[row])
            sport, dport = int(batch.sport[row]), int(batch.dport[row])
            outbound = direction[row] != Direction.RX
            local, lport, remote, rport = (
                (src, sport, dst, dport) if outbound else (dst, dport, src, sport)
            )
            key = FlowKey(
                interface(int(batch.iface[row])), int(batch.proto[row]), local, lport, remote, rport
            )
            self.dns.observe(float(batch.ts[row]), key, outbound, payload, int(batch.seq[row]))

    def _join_fragments(self, batch: PacketBatch) -> PacketBatch:
        sport, dport, transport = batch.sport.copy(), batch.dport.copy(), batch.transport.copy()
        for i in np.flatnonzero(batch.fragment_id >= 0).tolist():
            key = (
                (int(batch.src_hi[i]) << 64) | int(batch.src_lo[i]),
                (int(batch.dst_hi[i]) << 64) | int(batch.dst_lo[i]),
                int(batch.proto[i]),
                int(batch.fragment_id[i]),
            )
            if transport[i]:
                self._fragments.learn(key, (int(sport[i]), int(dport[i])))
            elif (ports := self._fragments.ports(key)) is not None:
                sport[i], dport[i] = ports
                transport[i] = True
                self._portless -= 1
        return dataclasses.replace(batch, sport=sport, dport=dport, transport=transport)

    def _reopen(self, groups: FlowGroups, slots: npt.NDArray[np.int64]) -> None:
        """A SYN on the ports of a connection that closed opens a new one, maybe of
        another process: the old flow retires (its bytes stay with its owner) and
        the group makes a new flow (its slot set to -1), which is looked up afresh."""
        opening = np.flatnonzero((slots >= 0) & (groups.syn_out | groups.syn_in))
        if len(opening):
            closed = opening[self.table.arrays["closed"][slots[opening]]]
            for i in closed.tolist():
                self._retire(self.table.flows[int(slots[i])])
                slots[i] = -1

    def ingest_counts(self, counts: CounterBatch) -> list[FlowKey]:
        """Add what the kernel counted per flow (its packets never reach `ingest`);
        returns the new flows that need a socket lookup."""
        if not len(counts):
            return []
        groups = counted_groups(counts)
        self._packets += int(counts.rx_packets.sum() + counts.tx_packets.sum())
        self._bytes += int(counts.rx_bytes.sum() + counts.tx_bytes.sum())
        keys = [groups.iface, groups.proto, groups.l_hi, groups.l_lo, groups.lport,
                groups.r_hi, groups.r_lo, groups.rport]  # fmt: skip
        slots = self.table.find(groups.key_hash, keys)
        groups, slots, kept = self.floods.fold_counted(
            groups, slots, self.sockets, len(self.flows), counts.interfaces.name
        )
        new = self._create_flows(groups, slots, {}, counts.interfaces.name)
        if new:
            new = self.floods.allow_lookups(new, float(groups.last_ts.max()))
        self._add(groups, slots, {})
        tcp = groups.proto == IPPROTO_TCP
        self.tcp.add_counts(slots[tcp], *(getattr(counts, name)[kept][tcp] for name in (
            "retransmits", "segments_sent", "peer_retransmits", "dup_acks")))  # fmt: skip
        return new

    def add_rtt(self, samples: RttSamples) -> None:
        """RTT samples the kernel took, for the flows they belong to."""
        if not len(samples):
            return
        slots = self.table.find(key_hashes(samples.key), samples.key.columns())
        known = slots >= 0
        self.tcp.add_samples(slots[known], samples.rtt[known], samples.at[known])

    def _create_flows(
        self,
        groups: FlowGroups,
        slots: npt.NDArray[np.int64],
        names: Mapping[int, str],
        interface: Callable[[int], str],
    ) -> list[FlowKey]:
        """Make the batch's new flows (filling their `slots`); returns those to look up."""
        fresh = np.flatnonzero(slots < 0)
        if not len(fresh):
            return []
        conversations, local_is_a = conversation_hashes(
            groups.iface[fresh], groups.proto[fresh],
            groups.l_hi[fresh], groups.l_lo[fresh], groups.lport[fresh],
            groups.r_hi[fresh], groups.r_lo[fresh], groups.rport[fresh],
        )  # fmt: skip
        columns = zip(
            groups.iface[fresh].tolist(), groups.proto[fresh].tolist(),
            groups.l_hi[fresh].tolist(), groups.l_lo[fresh].tolist(),
            groups.lport[fresh].tolist(), groups.r_hi[fresh].tolist(),
            groups.r_lo[fresh].tolist(), groups.rport[fresh].tolist(),
            strict=True,
        )  # fmt: skip
        lookups: list[FlowKey] = []
        table = self.table
        for i, row, conversation, a_is_local in zip(
            fresh.tolist(), columns, conversations.tolist(), local_is_a.tolist(), strict=True
        ):
            iface, proto, l_hi, l_lo, lport, r_hi, r_lo, rport = row
            key = FlowKey(interface(iface), proto, (l_hi << 64) | l_lo, lport,
                          (r_hi << 64) | r_lo, rport)  # fmt: skip
            flow = self.flows[key] = table.create(key, row, int(groups.key_hash[i]))
            slots[i] = flow.slot
            self._sides.add(conversation, a_is_local)
            pid = int(groups.pid[i])
            if pid >= 0:
                flow.attribute(ProcessRef(pid, names.get(pid, str(pid))), None)
            elif proto not in (IPPROTO_TCP, IPPROTO_UDP):
                flow.attribute(None, UnknownReason.NOT_SOCKET)
            elif not groups.transport[i]:
                flow.attribute(None, UnknownReason.NO_PORTS)
            elif not self.process_lookups:
                flow.attribute(None, UnknownReason.NO_PROCESS_INFO)
            elif (seen := self.sighted.match(key)) is not None:
                flow.attribute(seen.process, None)
                flow.by_kernel, flow.far = True, seen.far
            else:
                lookups.append(key)
        made = slots[fresh]
        table.arrays["first_seen"][made] = groups.first_ts[fresh]
        table.arrays["conversation"][made] = conversations
        self.tcp.ensure(table.capacity)
        self.tcp.reset(made)  # a slot freed by a retired flow starts afresh
        return lookups

    def _add(
        self, groups: FlowGroups, slots: npt.NDArray[np.int64], names: Mapping[int, str]
    ) -> None:
        """Each flow's share of the batch, added with array operations."""
        a = self.table.arrays
        # a flow appears once per batch, so plain fancy-index updates are exact
        for counter, values in (
            ("rx_bytes", groups.rx_bytes), ("tx_bytes", groups.tx_bytes),
            ("rx_packets", groups.rx_packets), ("tx_packets", groups.tx_packets),
            ("tick_rx", groups.rx_bytes), ("tick_tx", groups.tx_bytes),
        ):  # fmt: skip
            a[counter][slots] += values
        a["last_seen"][slots] = np.maximum(a["last_seen"][slots], groups.last_ts)
        a["closed"][slots] |= groups.closed
        opened = (a["outbound"][slots] < 0) & (groups.syn_out | groups.syn_in)
        a["outbound"][slots[opened]] = groups.syn_out[opened]
        # a process the capture names (PKTAP) for a flow that had none
        named = np.flatnonzero((groups.pid >= 0) & ~a["owned"][slots])
        for i in named.tolist():
            pid = int(groups.pid[i])
            flow = self.table.flows[int(slots[i])]
            flow.attribute(ProcessRef(pid, names.get(pid, str(pid))), None)

    # address translation -----------------------------------------------------

    def nat_questions(self, limit: int) -> list[FlowKey]:
        """Flows no socket here was found for, to ask the connection tracker about
        (a flow seen through NAT carries no local socket's addresses), and flows
        given to a socket at their far end (a hairpin, or an uplink whose far end
        is on this machine too: the translated socket at their near end comes
        first): those never asked first, then once more those it had no entry for
        (an entry the kernel had not confirmed yet); at most `limit`, the rest
        wait for the next tick (counted in CaptureHealth.limits)."""
        if not self.process_lookups:
            return []
        ported = (IPPROTO_TCP, IPPROTO_UDP)
        unknown = UnknownReason.NO_SOCKET
        first = [f for f in self.flows.values() if f.nat_asked == 0 and f.nat is None
                 and f.key.proto in ported
                 and (f.far or (f.owner is None and f.reason is unknown))]  # fmt: skip
        again = [f for f in self.flows.values() if f.owner is None and f.nat_asked == 1
                 and f.reason is UnknownReason.NAT_NO_ENTRY]  # fmt: skip
        waiting = first + again
        self._nat_deferred += max(0, len(waiting) - limit)
        for flow in waiting[:limit]:
            flow.nat_asked += 1
        return [flow.key for flow in waiting[:limit]]

    def translate(self, found: Mapping[FlowKey, NatEntry | None]) -> None:
        """The connection tracker's answers for `nat_questions`: a flow seen
        through NAT takes the owner of the socket that really carries it, its
        counts from that socket's side (the same as this flow's: its local end
        is the translated socket's local end)."""
        for key, entry in found.items():
            flow = self.flows.get(key)
            if flow is None or (flow.owner is not None and not flow.far):
                continue
            ends = translated(key, entry) if entry is not None else None
            if ends is None:
                if entry is not None:  # tracked, not translated: asking again tells nothing
                    flow.nat_asked = NAT_ASKS
                if flow.owner is None:
                    flow.attribute(None, UnknownReason.NAT_NO_ENTRY)
                continue
            flow.nat = ends
            self._attribute_translated(flow, ends)

    def _attribute_translated(self, flow: Flow, ends: tuple[int, int, int, int, int]) -> None:
        """The owner of the socket behind a translated flow, if it is known; a far
        owner the flow had stays until then."""
        owner = self.sighted.match_socket(ends)
        if owner is not None:
            flow.attribute(owner, None)
            flow.by_kernel, flow.far = True, False
            return
        sock = self.sockets.exact.get(ends)  # a socket of this namespace (a redirect)
        if sock is not None and sock.owner is not None:
            flow.socket = sock
            flow.attribute(sock.owner, None)
            flow.far = False
            return
        if flow.owner is None:
            # another namespace's socket is seen only by the kernel's owner events
            reason = (UnknownReason.NAT_NO_OWNER if self._owners[0] == "eBPF"
                      else UnknownReason.NAT_NEEDS_EBPF)  # fmt: skip
            flow.attribute(None, reason)

    # sockets ---------------------------------------------------------------

    def attribute(self, found: Mapping[FlowKey, SocketInfo | None]) -> None:
        """Apply the platform's answers for flows `ingest` asked about."""
        for key, sock in found.items():
            flow = self.flows.get(key)
            if flow is not None and flow.owner is None:
                flow.socket = sock
                flow.attribute(sock.owner if sock else None, reason_for(sock))

    def update_sockets(self, sockets: Iterable[SocketInfo]) -> None:
        """Take the full socket table; retry flows that are still unknown."""
        self.sockets = index = SocketIndex(sockets)
        for flow in self.flows.values():
            if flow.owner is None and flow.reason in (
                UnknownReason.PENDING,
                UnknownReason.NO_SOCKET,
                UnknownReason.NO_OWNER,
            ):
                sock = index.match(flow.key)
                if sock is not None:
                    flow.socket = sock
                    flow.attribute(sock.owner, reason_for(sock))
                elif flow.reason is UnknownReason.PENDING:
                    flow.attribute(None, UnknownReason.NO_SOCKET)
            elif flow.owner is not None:
                k = flow.key
                sock = index.exact.get((k.proto, k.laddr, k.lport, k.raddr, k.rport))
                if sock is not None and sock.owner is not None and sock.owner.pid == flow.owner.pid:
                    # fresher state and kernel TCP figures; and the table names the process
                    # fully (a capture's per-packet name is cut at 16 bytes and has no user)
                    flow.socket, flow.owner = sock, sock.owner

    def update_interfaces(self, infos: Iterable[InterfaceInfo], now: float) -> None:
        self.interfaces.update(infos, now)

    def note_capture_drops(self, kernel: int, queue: int) -> None:
        self._kernel_drops, self._queue_drops = kernel, queue

    def note_counting(self, source: str, why: str = "", overflow: int = 0) -> None:
        """How packets are counted, for CaptureHealth (see its `counting`)."""
        self._counting = (source, why, overflow)

    def note_owner_source(self, source: str, why: str = "", lost: int = 0) -> None:
        """Where owners come from, for CaptureHealth (see its `owners`)."""
        self._owners = (source, why, lost)

    def _apply_sightings(self) -> None:
        """Flows made before the kernel's word on their socket arrived take it now:
        it beats an owner guessed from the socket table (a pre-fork server's
        listener rather than the worker that served the connection), and a socket
        of this namespace beats one at the far end that was reported first."""
        if not self._new_sightings:
            return
        self._new_sightings = False
        match = self.sighted.match
        for flow in self.flows.values():
            if flow.by_kernel and not flow.far:
                continue
            if flow.nat is not None:  # seen through NAT: its translated socket's owner
                self._attribute_translated(flow, flow.nat)
                continue
            if flow.reason in (UnknownReason.NOT_SOCKET, UnknownReason.NO_PORTS):
                continue
            seen = match(flow.key)
            # a socket of this namespace, once reported, beats one at the far end
            # (a local server's peer in a container may send before the server reads)
            if seen is not None and not (flow.far and seen.far):
                flow.attribute(seen.process, None)
                flow.by_kernel, flow.far = True, seen.far

    # ticks -----------------------------------------------------------------

    def tick(self, now: float) -> Snapshot:
        elapsed = now - self._last_tick
        if elapsed <= 0:  # the clock stepped back, or two ticks at once
            elapsed = self.interval
        self._last_tick = now
        self._apply_sightings()
        flows = list(self.flows.values())
        figures = self._figures(flows, elapsed)
        owners, group = _owners_of(flows)
        totals, rates, active = self._per_owner(figures, owners, group, now)
        reasons = dict(self._retired_reasons)
        none = owners.index(None) if None in owners else -1
        for i in np.flatnonzero(group == none).tolist():
            flow = flows[i]
            reason = str(flow.reason or UnknownReason.NO_SOCKET)
            reasons[reason] = reasons.get(reason, 0) + figures.total(i).bytes
        shares, floods = self.floods.tick(elapsed)
        for share in shares:  # floods and scans folded into aggregate rows
            totals[share.owner] = totals.get(share.owner, Traffic()) + share.total
            rx_rate, tx_rate = rates.get(share.owner, (0.0, 0.0))
            rates[share.owner] = (rx_rate + share.rx_rate, tx_rate + share.tx_rate)
            if share.reason is not None:
                reasons[share.reason] = reasons.get(share.reason, 0) + share.total.bytes
        connections = self._connection_rows(flows, figures, now)
        a = self.table.arrays
        a["tick_rx"][:] = 0
        a["tick_tx"][:] = 0
        for i in np.flatnonzero(figures.last < now - self.retire_after).tolist():
            self._retire(flows[i])

        sockets_per_pid: dict[int, int] = {}
        holders: set[ProcessRef] = set()
        for sock in self.sockets.sockets:
            if sock.owner:
                sockets_per_pid[sock.owner.pid] = sockets_per_pid.get(sock.owner.pid, 0) + 1
                holders.add(sock.owner)
        unknown_reasons = tuple(sorted(reasons.items(), key=lambda r: -r[1]))
        processes = []
        history = self._process_history
        for owner, total in totals.items():
            rx_rate, tx_rate = rates.get(owner, (0.0, 0.0))
            rx_history, tx_history = self._history(
                owner, rx_rate, tx_rate, owner in rates or owner in holders
            )
            processes.append(
                ProcessRow(
                    owner,
                    total,
                    rx_rate,
                    tx_rate,
                    sockets_per_pid.get(owner.pid, 0) if owner else 0,
                    active.get(owner, 0),
                    rx_history,
                    tx_history,
                    unknown_reasons if owner is None else (),
                )
            )
        for owner in holders - totals.keys():  # sockets, no traffic yet
            rx_history, tx_history = self._history(owner, 0.0, 0.0, True)
            processes.append(ProcessRow(owner, Traffic(), sockets=sockets_per_pid[owner.pid],
                                        rx_history=rx_history, tx_history=tx_history))  # fmt: skip
        processes.extend(self._folded.values())
        for gone in [o for o in history if o not in totals and o not in holders]:
            del history[gone]
        self._fold_exited(rates.keys() | holders)
        unattributed = totals.get(None, Traffic()).bytes
        dns = None
        if self.dns is not None:
            self.dns.expire(now)
            dns = self.dns.view(self._owner_of, self.resolvers)
        return Snapshot(
            time=now,
            started=self.started,
            interval=elapsed,
            processes=tuple(processes),
            connections=tuple(connections),
            sockets=self.sockets.sockets,
            interfaces=self.interfaces.rows(self.resolvers),
            dns=dns,
            health=CaptureHealth(
                packets=self._packets,
                bytes=self._bytes,
                kernel_drops=self._kernel_drops,
                queue_drops=self._queue_drops,
                malformed=self._malformed,
                not_ip=self._not_ip,
                portless=self._portless,
                unattributed_bytes=unattributed,
                platform_errors=self.platform_errors,
                owners=self._owners[0],
                owners_why=self._owners[1],
                owner_events_lost=self._owners[2],
                counting=self._counting[0],
                counting_why=self._counting[1],
                counter_overflow=self._counting[2],
                floods=floods,
                limits=(
                    *self.floods.limits(),
                    *(self.dns.limits() if self.dns else ()),
                    *(((NAT_DEFERRED, self._nat_deferred),) if self._nat_deferred else ()),
                ),
            ),
        )

    def _figures(self, flows: list[Flow], elapsed: float) -> _Figures:
        """Every flow's counters as arrays, from its owner's side (see Flow.far)."""
        a = self.table.arrays
        slots = np.fromiter((flow.slot for flow in flows), np.int64, len(flows))
        far = np.fromiter((flow.far for flow in flows), np.bool_, len(flows))

        def side(mine: str, theirs: str) -> npt.NDArray[Any]:
            return np.where(far, a[theirs][slots], a[mine][slots])

        outbound = a["outbound"][slots]
        return _Figures(
            rx_bytes=side("rx_bytes", "tx_bytes"),
            tx_bytes=side("tx_bytes", "rx_bytes"),
            rx_packets=side("rx_packets", "tx_packets"),
            tx_packets=side("tx_packets", "rx_packets"),
            rx_rate=side("tick_rx", "tick_tx") / elapsed,
            tx_rate=side("tick_tx", "tick_rx") / elapsed,
            first=a["first_seen"][slots], last=a["last_seen"][slots],
            outbound=np.where(far & (outbound >= 0), 1 - outbound, outbound),
            closed=a["closed"][slots], slots=slots,
        )  # fmt: skip

    def _per_owner(
        self, figures: _Figures, owners: list[Owner], group: npt.NDArray[np.int64], now: float
    ) -> tuple[dict[Owner, Traffic], dict[Owner, tuple[float, float]], dict[Owner, int]]:
        """Totals (with retired flows'), rates and active connections per owner."""
        m = len(owners)

        def summed(values: npt.NDArray[Any]) -> list[Any]:
            return np.bincount(group, weights=values, minlength=m).tolist()  # type: ignore[no-any-return]

        rx_b, tx_b = summed(figures.rx_bytes), summed(figures.tx_bytes)
        rx_p, tx_p = summed(figures.rx_packets), summed(figures.tx_packets)
        totals = dict(self._retired)
        for owner, *counts in zip(owners, rx_b, tx_b, rx_p, tx_p, strict=True):
            traffic = Traffic(*(int(c) for c in counts))
            old = totals.get(owner)
            totals[owner] = traffic if old is None else old + traffic
        rates = dict(zip(owners, zip(summed(figures.rx_rate), summed(figures.tx_rate),
                                     strict=True), strict=True))  # fmt: skip
        live = ~figures.closed & (figures.last >= now - ACTIVE_SECONDS)
        counted = np.bincount(group[live], minlength=m).tolist()
        active = {owner: n for owner, n in zip(owners, counted, strict=True) if n}
        return totals, rates, active

    def _connection_rows(
        self, flows: list[Flow], figures: _Figures, now: float
    ) -> list[ConnectionRow]:
        tcp = [i for i, flow in enumerate(flows) if flow.key.proto == IPPROTO_TCP
               and flow.reason is not UnknownReason.NO_PORTS]  # fmt: skip
        health = dict(zip(tcp, self._tcp_health([flows[i] for i in tcp], figures.slots[tcp], now),
                          strict=True))  # fmt: skip
        rows = []
        columns = zip(flows, figures.rx_bytes.tolist(), figures.tx_bytes.tolist(),
                      figures.rx_packets.tolist(), figures.tx_packets.tolist(),
                      figures.rx_rate.tolist(), figures.tx_rate.tolist(), figures.first.tolist(),
                      figures.last.tolist(), figures.outbound.tolist(), figures.closed.tolist(),
                      strict=True)  # fmt: skip
        name_for = self.dns.name_for if self.dns is not None else None
        listening = self.sockets.listening
        for i, (flow, rx_b, tx_b, rx_p, tx_p, rx_rate, tx_rate, first, last, opened,
                closed) in enumerate(columns):  # fmt: skip
            key, sock = flow.key, flow.socket
            if flow.far:  # from the owner's side, as its figures are
                key = key._replace(laddr=key.raddr, lport=key.rport, raddr=key.laddr,
                                   rport=key.lport)  # fmt: skip
            elif flow.nat is not None and flow.owner is not None:  # as its socket sees it
                _, laddr, lport, raddr, rport = flow.nat
                key = key._replace(laddr=laddr, lport=lport, raddr=raddr, rport=rport)
            if sock is not None and sock.connected:
                state = sock.state
            elif key.proto == IPPROTO_TCP:
                state = "CLOSED" if closed else "ESTABLISHED" if opened >= 0 else "-"
            else:
                state = "-"
            if opened >= 0:
                direction = "Out" if opened else "In"
            else:
                pid = flow.owner.pid if flow.owner else -1
                direction = "In" if (key.proto, pid, key.lport) in listening else "Out"
            h = health.get(i)
            rows.append(
                ConnectionRow(
                    process=flow.owner,
                    unknown_reason=str(flow.reason) if flow.owner is None and flow.reason else None,
                    proto=key.proto,
                    iface=key.iface,
                    laddr=key.laddr,
                    lport=key.lport,
                    raddr=key.raddr,
                    rport=key.rport,
                    state=state,
                    direction=direction,
                    total=Traffic(rx_b, tx_b, rx_p, tx_p),
                    rx_rate=rx_rate,
                    tx_rate=tx_rate,
                    first_seen=first,
                    last_seen=last,
                    fd=sock.fd if sock is not None and sock.owner == flow.owner else None,
                    domain=name_for(key.raddr) if name_for is not None else None,
                    rtt_ms=h.rtt_ms if h else None,
                    jitter_ms=h.jitter_ms if h else None,
                    retransmits=h.retransmits if h else None,
                    health=h,
                )
            )
        return rows

    def _history(
        self, owner: Owner, rx_rate: float, tx_rate: float, live: bool
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The owner's rates over the last minute. An owner with no flows and no
        sockets left (a process that has exited) keeps its row and totals, but its
        history only while the minute still shows traffic: with processes coming
        and going all day, memory stays the same."""
        kept = self._process_history.get(owner)
        if kept is None:
            if not live:
                return (), ()
            kept = (deque(maxlen=HISTORY_SECONDS), deque(maxlen=HISTORY_SECONDS))
            self._process_history[owner] = kept
        rx_hist, tx_hist = kept
        rx_hist.append(rx_rate)
        tx_hist.append(tx_rate)
        if not live and not any(rx_hist) and not any(tx_hist):
            del self._process_history[owner]
            return (), ()
        return tuple(rx_hist), tuple(tx_hist)

    def _fold_exited(self, live: set[Owner]) -> None:
        """Keep rows of their own for the `keep_exited` processes that went quiet
        last (no flows, no sockets); fold older ones into one row per name and
        user, so that a machine starting processes all day costs the same memory
        on its second day as on its first. Every byte stays in some row."""
        exited = [owner for owner in self._retired if owner is not None and owner not in live]
        for owner in exited[: max(0, len(exited) - self.keep_exited)]:
            assert owner is not None
            traffic = self._retired.pop(owner)
            group = (owner.name, owner.user)
            if group not in self._folded and len(self._folded) >= self.keep_exited:
                group = (OTHER_EXITED, "")
            row = self._folded.get(group)
            self._folded[group] = (
                ProcessRow(ProcessRef(EXITED_PID, *group), traffic, exited=1)
                if row is None
                else dataclasses.replace(row, total=row.total + traffic, exited=row.exited + 1)
            )

    def _owner_of(self, key: FlowKey) -> ProcessRef | None:
        flow = self.flows.get(key)
        return flow.owner if flow is not None else None

    def _retire(self, flow: Flow) -> None:
        """Fold an idle flow's totals into its process and forget the flow."""
        traffic = self.table.traffic(flow.slot)
        if flow.far:
            traffic = traffic.reversed()
        # popped and put back: the dict stays in order of last retirement
        self._retired[flow.owner] = self._retired.pop(flow.owner, Traffic()) + traffic
        if flow.owner is None:
            reason = str(flow.reason or UnknownReason.NO_SOCKET)
            self._retired_reasons[reason] = self._retired_reasons.get(reason, 0) + traffic.bytes
        del self.flows[flow.key]
        self._sides.remove(int(self.table.arrays["conversation"][flow.slot]))
        if self.dns is not None:
            self.dns.forget_flow(flow.key)
        self.table.release(flow)

    def _tcp_health(
        self, flows: list[Flow], slots: npt.NDArray[np.int64], now: float
    ) -> list[TcpHealthRow]:
        """Health rows for TCP flows: the packets' (or the kernel filter's) figures,
        with the socket's own where the kernel keeps them."""
        figures = self.tcp.figures_of(slots, now)
        rows = []
        for flow, rtt, jitter, retransmits, sent, peer, dups in zip(flows, *figures, strict=True):
            sock = flow.socket
            kernel = sock.tcp if sock is not None and sock.connected else None
            kernel_count = kernel.total_retrans if kernel else None
            counted = retransmits if kernel_count is None else kernel_count
            marks = flow.retransmit_marks
            if marks is None:
                marks = flow.retransmit_marks = deque()
            marks.append((now, counted, sent))
            while len(marks) > 2 and marks[1][0] <= now - JITTER_SECONDS:
                marks.popleft()
            then, old_retransmits, old_segments = marks[0]
            elapsed, resent, sent_since = now - then, counted - old_retransmits, sent - old_segments
            if jitter is None and kernel is not None:
                jitter = kernel.rttvar_ms  # the kernel's mean deviation, when no samples of our own
            rows.append(
                TcpHealthRow(
                    rtt_source="kernel" if kernel else "packets",
                    retransmits_source="kernel" if kernel_count is not None else "packets",
                    rtt_ms=kernel.rtt_ms if kernel else rtt,
                    jitter_ms=jitter,
                    retransmits=counted,
                    retransmit_rate=resent / elapsed if elapsed > 0 else 0.0,
                    retransmit_percent=100.0 * resent / sent_since if sent_since > 0 else None,
                    packet_rtt_ms=rtt,
                    packet_retransmits=retransmits,
                    segments_sent=sent,
                    peer_retransmits=peer,
                    dup_acks=dups,
                )
            )
        return rows
