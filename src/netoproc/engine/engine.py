"""The engine: all mutable state of a run, and nothing that does I/O or reads a clock.

    sight(sightings)     <- processes the kernel saw using sockets (Linux eBPF)
    nat_questions(n)     -> unknown flows to ask the connection tracker about
    translate(entries)   <- its answers: flows seen through NAT (Linux)
    untranslatable(keys) <- flows it could not be asked about
    ingest(batch)        -> flows that need a socket lookup now
    ingest_counts(counts)-> the same, for flows the kernel counted (Linux eBPF)
    add_rtt(samples)     <- RTT samples the kernel took for those flows
    attribute(found)     <- the platform's answers for those flows
    update_sockets(all)  <- the full socket table, every few ticks
    update_interfaces()  <- the OS's interface counters, every tick
    update_resolvers()   <- the DNS servers each interface uses
    note_*()             <- how the capture and the platform are doing, for CaptureHealth
    tick(now)            -> a frozen Snapshot (its rows made when read: report.py)

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
import itertools
import operator
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
    key_rows,
)
from netoproc.engine.grouping import (
    FlowGroups,
    conversation_hashes,
    counted_groups,
    group,
    key_hashes,
    orient,
)
from netoproc.engine.history import RateHistory
from netoproc.engine.interfaces import InterfaceStats
from netoproc.engine.owners import SightedOwners, translated
from netoproc.engine.report import (
    FlowAttributes,
    FlowFigures,
    HealthFigures,
    OwnerFigures,
    connection_rows,
    process_rows,
)
from netoproc.engine.tcp import TcpTracker
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
    address,
)
from netoproc.snapshot import (
    EXITED_PID,
    TRAFFIC_COLUMNS,
    CaptureHealth,
    FloodRow,
    ProcessRow,
    Rows,
    Snapshot,
    Traffic,
)

ACTIVE_SECONDS = 10.0
# Exited processes kept as rows of their own; older ones fold into one row
# per name and user, and past as many names into one row called OTHER_EXITED.
KEEP_EXITED = 1_000
OTHER_EXITED = "other"
NAT_ASKS = 2  # times an unknown flow is asked about (its entry may not be confirmed yet)
NAT_DEFERRED = "conntrack lookups deferred to a later tick"

Owner = ProcessRef | None


_fields = operator.attrgetter(*TRAFFIC_COLUMNS)  # a Traffic's counts, in order


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
        self.table = FlowTable()  # the flows, by slot and by key
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
        self.tcp = TcpTracker(self.table.capacity)
        self.floods = Floods(max_flows=max_flows)
        self._retired: dict[Owner, Traffic] = {}  # oldest retirement first
        self._folded: dict[tuple[str, str], ProcessRow] = {}  # (name, user) -> exited ones
        self._retired_reasons: dict[str, int] = {}
        self._history = RateHistory()  # each process's rates over the last minute
        self._floods: tuple[FloodRow, ...] = ()  # CaptureHealth's, as of the last tick
        self._last_tick = started
        self._packets = self._bytes = 0
        self._malformed = self._not_ip = self._portless = 0
        self._kernel_drops = self._queue_drops = 0
        self._platform_errors = 0  # questions to the OS that failed (and were retried later)
        self._nat_deferred = 0

    @property
    def flows(self) -> Mapping[FlowKey, Flow]:
        """Every flow, by key."""
        return self.table.by_key

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
        slots = self.table.find(groups.key_hash, groups)
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
            closed = opening[self.table.arrays.closed[slots[opening]]]
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
        slots = self.table.find(groups.key_hash, groups)
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
        slots = self.table.find(key_hashes(samples.key), samples.key)
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
        columns = key_rows(groups, fresh)
        lookups: list[FlowKey] = []
        table = self.table
        for i, row, conversation, a_is_local in zip(
            fresh.tolist(), columns, conversations.tolist(), local_is_a.tolist(), strict=True
        ):
            iface, proto, l_hi, l_lo, lport, r_hi, r_lo, rport = row
            key = FlowKey(interface(iface), proto, address((l_hi << 64) | l_lo), lport,
                          address((r_hi << 64) | r_lo), rport)  # fmt: skip
            flow = table.create(key, row, int(groups.key_hash[i]))
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
        table.arrays.first_seen[made] = groups.first_ts[fresh]
        table.arrays.conversation[made] = conversations
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
            (a.rx_bytes, groups.rx_bytes), (a.tx_bytes, groups.tx_bytes),
            (a.rx_packets, groups.rx_packets), (a.tx_packets, groups.tx_packets),
            (a.tick_rx, groups.rx_bytes), (a.tick_tx, groups.tx_bytes),
        ):  # fmt: skip
            counter[slots] += values
        a.last_seen[slots] = np.maximum(a.last_seen[slots], groups.last_ts)
        a.closed[slots] |= groups.closed
        opened = (a.outbound[slots] < 0) & (groups.syn_out | groups.syn_in)
        a.outbound[slots[opened]] = groups.syn_out[opened]
        # a process the capture names (PKTAP) for a flow that had none
        named = np.flatnonzero((groups.pid >= 0) & ~a.owned[slots])
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

    def untranslatable(self, keys: Iterable[FlowKey]) -> None:
        """Flows `nat_questions` gave that the connection tracker could not be asked
        about (no CAP_NET_ADMIN, no nf_conntrack_netlink): unknown, saying why, and
        not asked again."""
        for key in keys:
            flow = self.flows.get(key)
            if flow is not None:
                flow.nat_asked = NAT_ASKS
                if flow.owner is None:
                    flow.attribute(None, UnknownReason.NAT_UNASKED)

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
        sockets = tuple(sockets)
        old = self.sockets.sockets
        if len(sockets) != len(old) or not all(map(operator.is_, sockets, old)):
            self.sockets = SocketIndex(sockets)
        index = self.sockets
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

    def update_resolvers(self, resolvers: Mapping[str, tuple[str, ...]]) -> None:
        """The DNS servers each interface is configured with."""
        self.resolvers = dict(resolvers)

    def note_platform_errors(self, failed: int) -> None:
        """How many questions to the OS have failed so far (see CaptureHealth)."""
        self._platform_errors = failed

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
        flows = list(self.table.by_key.values())
        figures = self._figures(flows, elapsed)
        attributes = self._attributes(flows)
        health = self._health(attributes, figures, now)
        connections = Rows(len(flows), lambda: connection_rows(attributes, figures, health))
        owners = self._owner_figures(flows, figures, now, elapsed)
        processes = Rows(len(owners.owners) + len(owners.folded), lambda: process_rows(owners))
        a = self.table.arrays
        a.tick_rx[:] = 0
        a.tick_tx[:] = 0
        for i in np.flatnonzero(figures.last < now - self.retire_after).tolist():
            self._retire(flows[i])
        unattributed = int(owners.totals[owners.unknown, :2].sum()) if owners.unknown >= 0 else 0
        dns = None
        if self.dns is not None:
            self.dns.expire(now)
            dns = self.dns.view(self._owner_of, self.resolvers)
        return Snapshot(
            time=now,
            started=self.started,
            interval=elapsed,
            processes=processes,
            connections=connections,
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
                platform_errors=self._platform_errors,
                owners=self._owners[0],
                owners_why=self._owners[1],
                owner_events_lost=self._owners[2],
                counting=self._counting[0],
                counting_why=self._counting[1],
                counter_overflow=self._counting[2],
                floods=self._floods,
                limits=(
                    *self.floods.limits(),
                    *(self.dns.limits() if self.dns else ()),
                    *(((NAT_DEFERRED, self._nat_deferred),) if self._nat_deferred else ()),
                ),
            ),
        )

    def _figures(self, flows: list[Flow], elapsed: float) -> FlowFigures:
        """Every flow's counters as arrays, from its owner's side (see Flow.far)."""
        a = self.table.arrays
        slots = np.fromiter((flow.slot for flow in flows), np.int64, len(flows))
        far = np.fromiter((flow.far for flow in flows), np.bool_, len(flows))

        def side(mine: str, theirs: str) -> npt.NDArray[Any]:
            column: npt.NDArray[Any] = np.where(
                far, getattr(a, theirs)[slots], getattr(a, mine)[slots]
            )
            return column

        outbound = a.outbound[slots]
        return FlowFigures(
            rx_bytes=side("rx_bytes", "tx_bytes"),
            tx_bytes=side("tx_bytes", "rx_bytes"),
            rx_packets=side("rx_packets", "tx_packets"),
            tx_packets=side("tx_packets", "rx_packets"),
            rx_rate=side("tick_rx", "tick_tx") / elapsed,
            tx_rate=side("tick_tx", "tick_rx") / elapsed,
            first=a.first_seen[slots], last=a.last_seen[slots],
            outbound=np.where(far & (outbound >= 0), 1 - outbound, outbound),
            closed=a.closed[slots], slots=slots,
        )  # fmt: skip

    def _attributes(self, flows: list[Flow]) -> FlowAttributes:
        """Each flow's key from its owner's side, owner, reason, socket and remote
        name, as they are now (the flows change after the tick; its rows must not)."""
        keys = [flow.key for flow in flows]
        for i in [i for i, flow in enumerate(flows) if flow.far]:
            k = keys[i]  # the owner is the far end: its local end is our remote one
            keys[i] = k._replace(laddr=k.raddr, lport=k.rport, raddr=k.laddr, rport=k.lport)
        for i, ends in [(i, f.nat) for i, f in enumerate(flows) if f.nat is not None]:
            if not flows[i].far and flows[i].owner is not None:
                _, laddr, lport, raddr, rport = ends  # as the socket behind the NAT sees it
                keys[i] = keys[i]._replace(laddr=laddr, lport=lport, raddr=raddr, rport=rport)
        name = self.dns.name_for if self.dns is not None else lambda _addr: None
        return FlowAttributes(
            keys=keys,
            owners=[flow.owner for flow in flows],
            reasons=[flow.reason for flow in flows],
            sockets=[flow.socket for flow in flows],
            domains=[name(key.raddr) for key in keys],
            listening=self.sockets.listening,
        )

    def _health(self, flows: FlowAttributes, figures: FlowFigures, now: float) -> HealthFigures:
        """The TCP flows' health: the packets' (or the kernel filter's) figures, and
        the socket's own where the kernel keeps them; marks retransmits for rates."""
        a = self.table.arrays
        proto = a.proto[figures.slots]
        at = np.flatnonzero(proto == IPPROTO_TCP)
        no_ports = UnknownReason.NO_PORTS
        ported = (flows.reasons[i] is not no_ports for i in at.tolist())
        at = at[np.fromiter(ported, np.bool_, len(at))]
        slots = figures.slots[at]
        packets = self.tcp.figures_of(slots, now)
        kernel = a.kernel_tcp[slots]
        kernel_count = a.kernel_retransmits[slots]
        counted = kernel_count >= 0
        retransmits = np.where(counted, kernel_count, packets.retransmits)
        seconds, resent, sent = self.tcp.recent(slots, now, retransmits, packets.segments_sent)
        jitter = packets.jitter_ms
        # the kernel's mean deviation, where there are no samples of our own
        jitter = np.where(np.isnan(jitter) & kernel, a.kernel_rttvar[slots], jitter)
        return HealthFigures(
            at=at,
            packets=packets,
            kernel=kernel,
            rtt_ms=np.where(kernel, a.kernel_rtt[slots], packets.rtt_ms),
            jitter_ms=jitter,
            retransmits=retransmits,
            kernel_retransmits=counted,
            retransmit_rate=np.divide(resent, seconds, out=np.zeros(len(at)), where=seconds > 0),
            retransmit_percent=np.divide(
                100.0 * resent, sent, out=np.full(len(at), np.nan), where=sent > 0
            ),
        )

    def _owner_figures(
        self, flows: list[Flow], figures: FlowFigures, now: float, elapsed: float
    ) -> OwnerFigures:
        """Every process with a row, and its figures: processes that exited
        (retired flows' totals) first, then those with flows, with folded floods,
        then those holding sockets but no traffic yet."""
        everyone = list(self._retired)
        position = {owner: i for i, owner in enumerate(everyone)}
        group = np.fromiter((position.setdefault(flow.owner, len(position)) for flow in flows),
                            np.int64, len(flows))  # fmt: skip
        everyone.extend(itertools.islice(position, len(everyone), None))
        reasons = dict(self._retired_reasons)
        for i in np.flatnonzero(group == position.get(None, -1)).tolist():
            reason = str(flows[i].reason or UnknownReason.NO_SOCKET)
            reasons[reason] = reasons.get(reason, 0) + figures.total(i).bytes
        shares, self._floods = self.floods.tick(elapsed)
        for share in shares:  # floods and scans folded into aggregate rows
            if share.owner not in position:
                position[share.owner] = len(everyone)
                everyone.append(share.owner)
            if share.reason is not None:
                reasons[share.reason] = reasons.get(share.reason, 0) + share.total.bytes
        holders = self.sockets.holders
        for owner in holders:  # sockets, no traffic yet
            if owner not in position:
                position[owner] = len(everyone)
                everyone.append(owner)
        n = len(everyone)

        def summed(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.bincount(group, weights=values, minlength=n)

        totals = np.zeros((n, 4), np.int64)
        if self._retired:
            totals[: len(self._retired)] = [list(t) for t in map(_fields, self._retired.values())]
        for c, values in enumerate((figures.rx_bytes, figures.tx_bytes, figures.rx_packets,
                                    figures.tx_packets)):  # fmt: skip
            totals[:, c] += summed(values).astype(np.int64)
        rx_rate, tx_rate = summed(figures.rx_rate), summed(figures.tx_rate)
        moving = np.bincount(group, minlength=n) > 0  # has flows (or folded floods)
        for share in shares:
            i = position[share.owner]
            totals[i] += _fields(share.total)
            rx_rate[i] += share.rx_rate
            tx_rate[i] += share.tx_rate
            moving[i] = True
        live = moving.copy()
        if holders:
            live |= np.fromiter((o in holders for o in everyone), np.bool_, n)
        active = ~figures.closed & (figures.last >= now - ACTIVE_SECONDS)
        connections = np.bincount(group[active], minlength=n)
        histories = self._history.record(everyone, rx_rate, tx_rate, live)
        per_pid = self.sockets.per_pid
        result = OwnerFigures(
            owners=everyone,
            totals=totals,
            rx_rate=rx_rate,
            tx_rate=tx_rate,
            sockets=[per_pid.get(o.pid, 0) if o else 0 for o in everyone],
            connections=connections,
            histories=histories,
            unknown_reasons=tuple(sorted(reasons.items(), key=lambda r: -r[1])),
            folded=list(self._folded.values()),
            unknown=position.get(None, -1),
        )
        self._fold_exited(live[: len(self._retired)])
        return result

    def _fold_exited(self, live: npt.NDArray[np.bool_]) -> None:
        """Keep rows of their own for the `keep_exited` processes that went quiet
        last (no flows, no sockets); fold older ones into one row per name and
        user, so that a machine starting processes all day costs the same memory
        on its second day as on its first. Every byte stays in some row. `live`:
        for each process with retired flows, in order, whether it has flows or
        sockets still."""
        exited = [owner for owner, alive in zip(self._retired, live.tolist(), strict=True)
                  if owner is not None and not alive]  # fmt: skip
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
        self._sides.remove(int(self.table.arrays.conversation[flow.slot]))
        if self.dns is not None:
            self.dns.forget_flow(flow.key)
        self.table.release(flow)
