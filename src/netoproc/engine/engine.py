"""The engine: all mutable state of a run, and nothing that does I/O or reads a clock.

    ingest(batch)        -> flows that need a socket lookup now
    attribute(found)     <- the platform's answers for those flows
    update_sockets(all)  <- the full socket table, every few ticks
    update_interfaces()  <- the OS's interface counters, every tick
    tick(now)            -> a frozen Snapshot

Time arrives as data (packet timestamps, `now`), so replaying a capture gives
the same snapshots every time. A flow that appears triggers an immediate
lookup so that a connection living a few milliseconds is still attributed;
flows still unknown are retried against every full table.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from netoproc.decode.batch import PacketBatch
from netoproc.engine.attribution import SocketIndex, reason_for
from netoproc.engine.dns import DnsTracker
from netoproc.engine.floods import MAX_FLOWS, Floods
from netoproc.engine.flows import (
    TRAFFIC_COLUMNS,
    ConversationSides,
    Flow,
    FlowTable,
    FragmentPorts,
)
from netoproc.engine.grouping import FlowGroups, conversation_hashes, group, orient
from netoproc.engine.interfaces import InterfaceStats
from netoproc.engine.tcp import JITTER_SECONDS, TcpHealth
from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Direction,
    FlowKey,
    InterfaceInfo,
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

Owner = ProcessRef | None


class _Figures(NamedTuple):
    """A flow's counters at a tick, as plain numbers."""

    total: Traffic
    rx_rate: float
    tx_rate: float
    first_seen: float
    last_seen: float
    outbound: bool | None  # from the SYN: True we opened it; None not seen
    closed: bool


# the table's arrays `_Figures` is read from, in the order `_figures` unpacks them
_FIGURES = (*TRAFFIC_COLUMNS, "tick_rx", "tick_tx", "first_seen", "last_seen", "outbound",
            "closed")  # fmt: skip


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

    # packets ---------------------------------------------------------------

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
        new = self._create_flows(groups, slots, batch)
        if new:
            new = self.floods.allow_lookups(new, float(batch.ts.max()))
        self._add(groups, slots, batch)
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

    def _create_flows(
        self, groups: FlowGroups, slots: npt.NDArray[np.int64], batch: PacketBatch
    ) -> list[FlowKey]:
        """Make the batch's new flows (filling their `slots`); returns those to look up."""
        fresh = np.flatnonzero(slots < 0)
        if not len(fresh):
            return []
        names, interface = batch.process_names, batch.interfaces.name
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
            else:
                lookups.append(key)
        made = slots[fresh]
        table.arrays["first_seen"][made] = groups.first_ts[fresh]
        table.arrays["conversation"][made] = conversations
        self.tcp.ensure(table.capacity)
        self.tcp.reset(made)  # a slot freed by a retired flow starts afresh
        return lookups

    def _add(self, groups: FlowGroups, slots: npt.NDArray[np.int64], batch: PacketBatch) -> None:
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
            flow.attribute(ProcessRef(pid, batch.process_names.get(pid, str(pid))), None)

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

    # ticks -----------------------------------------------------------------

    def tick(self, now: float) -> Snapshot:
        elapsed = now - self._last_tick
        if elapsed <= 0:  # the clock stepped back, or two ticks at once
            elapsed = self.interval
        self._last_tick = now
        totals: dict[Owner, Traffic] = dict(self._retired)
        rates: dict[Owner, list[float]] = {}
        active: dict[Owner, int] = {}
        reasons = dict(self._retired_reasons)
        connections: list[ConnectionRow] = []
        retire: list[Flow] = []
        for flow, figures in self._figures(elapsed):
            owner, traffic = flow.owner, figures.total
            totals[owner] = totals.get(owner, Traffic()) + traffic
            pair = rates.setdefault(owner, [0.0, 0.0])
            pair[0] += figures.rx_rate
            pair[1] += figures.tx_rate
            if owner is None:
                reason = str(flow.reason or UnknownReason.NO_SOCKET)
                reasons[reason] = reasons.get(reason, 0) + traffic.bytes
            if not figures.closed and figures.last_seen >= now - ACTIVE_SECONDS:
                active[owner] = active.get(owner, 0) + 1
            if figures.last_seen < now - self.retire_after:
                retire.append(flow)
            connections.append(self._connection_row(flow, figures, now))
        shares, floods = self.floods.tick(elapsed)
        for share in shares:
            totals[share.owner] = totals.get(share.owner, Traffic()) + share.total
            pair = rates.setdefault(share.owner, [0.0, 0.0])
            pair[0] += share.rx_rate
            pair[1] += share.tx_rate
            if share.reason is not None:
                reasons[share.reason] = reasons.get(share.reason, 0) + share.total.bytes
        a = self.table.arrays
        a["tick_rx"][:] = 0
        a["tick_tx"][:] = 0
        for flow in retire:
            self._retire(flow)

        sockets_per_pid: dict[int, int] = {}
        for sock in self.sockets.sockets:
            if sock.owner:
                sockets_per_pid[sock.owner.pid] = sockets_per_pid.get(sock.owner.pid, 0) + 1
        holders = {s.owner for s in self.sockets.sockets if s.owner}
        owners = set(totals) | holders
        processes = []
        for owner in owners:
            rx_rate, tx_rate = rates.get(owner, (0.0, 0.0))
            live = owner in rates or owner in holders
            rx_history, tx_history = self._history(owner, rx_rate, tx_rate, live)
            processes.append(
                ProcessRow(
                    process=owner,
                    total=totals.get(owner, Traffic()),
                    rx_rate=rx_rate,
                    tx_rate=tx_rate,
                    sockets=sockets_per_pid.get(owner.pid, 0) if owner else 0,
                    connections=active.get(owner, 0),
                    rx_history=rx_history,
                    tx_history=tx_history,
                    unknown_reasons=(
                        tuple(sorted(reasons.items(), key=lambda r: -r[1])) if owner is None else ()
                    ),
                )
            )
        processes.extend(self._folded.values())
        for gone in set(self._process_history) - owners:
            del self._process_history[gone]
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
                floods=floods,
                limits=(*self.floods.limits(), *(self.dns.limits() if self.dns else ())),
            ),
        )

    def _figures(self, elapsed: float) -> Iterator[tuple[Flow, _Figures]]:
        """Every flow with its counters, each array read once: picking a flow's ten
        values out of numpy one by one cost ~6 µs, an eighth of a 1,000-flow tick."""
        a = self.table.arrays
        rx_b, tx_b, rx_p, tx_p, tick_rx, tick_tx, first, last, outbound, closed = (
            a[name].tolist() for name in _FIGURES
        )
        for flow in self.flows.values():
            s = flow.slot
            yield (
                flow,
                _Figures(
                    Traffic(rx_b[s], tx_b[s], rx_p[s], tx_p[s]),
                    tick_rx[s] / elapsed,
                    tick_tx[s] / elapsed,
                    first[s],
                    last[s],
                    None if outbound[s] < 0 else outbound[s] == 1,
                    closed[s],
                ),
            )

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

    def _tcp_health(self, flow: Flow, now: float) -> TcpHealthRow | None:
        if flow.key.proto != IPPROTO_TCP or flow.reason is UnknownReason.NO_PORTS:
            return None
        figures = self.tcp.figures(flow.slot, now)
        sock = flow.socket
        kernel = sock.tcp if sock is not None and sock.connected else None
        kernel_count = kernel.total_retrans if kernel else None
        retransmits = figures.retransmits if kernel_count is None else kernel_count
        marks = flow.retransmit_marks
        if marks is None:
            marks = flow.retransmit_marks = deque()
        marks.append((now, retransmits, figures.segments_sent))
        while len(marks) > 2 and marks[1][0] <= now - JITTER_SECONDS:
            marks.popleft()
        then, old_retransmits, old_segments = marks[0]
        elapsed = now - then
        sent = figures.segments_sent - old_segments
        resent = retransmits - old_retransmits
        jitter = figures.jitter_ms
        if jitter is None and kernel is not None:
            jitter = kernel.rttvar_ms  # the kernel's mean deviation, when no samples of our own
        return TcpHealthRow(
            rtt_source="kernel" if kernel else "packets",
            retransmits_source="kernel" if kernel_count is not None else "packets",
            rtt_ms=kernel.rtt_ms if kernel else figures.rtt_ms,
            jitter_ms=jitter,
            retransmits=retransmits,
            retransmit_rate=resent / elapsed if elapsed > 0 else 0.0,
            retransmit_percent=100.0 * resent / sent if sent > 0 else None,
            packet_rtt_ms=figures.rtt_ms,
            packet_retransmits=figures.retransmits,
            segments_sent=figures.segments_sent,
            peer_retransmits=figures.peer_retransmits,
            dup_acks=figures.dup_acks,
        )

    def _connection_row(self, flow: Flow, figures: _Figures, now: float) -> ConnectionRow:
        key, sock, outbound = flow.key, flow.socket, figures.outbound
        if sock is not None and sock.connected:
            state = sock.state
        elif key.proto == IPPROTO_TCP:
            state = "CLOSED" if figures.closed else "ESTABLISHED" if outbound is not None else "-"
        else:
            state = "-"
        if outbound is not None:
            direction = "Out" if outbound else "In"
        else:
            pid = flow.owner.pid if flow.owner else -1
            listening = (key.proto, pid, key.lport) in self.sockets.listening
            direction = "In" if listening else "Out"
        health = self._tcp_health(flow, now)
        return ConnectionRow(
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
            total=figures.total,
            rx_rate=figures.rx_rate,
            tx_rate=figures.tx_rate,
            first_seen=figures.first_seen,
            last_seen=figures.last_seen,
            fd=sock.fd if sock is not None and sock.owner == flow.owner else None,
            domain=self.dns.name_for(key.raddr) if self.dns is not None else None,
            rtt_ms=health.rtt_ms if health else None,
            jitter_ms=health.jitter_ms if health else None,
            retransmits=health.retransmits if health else None,
            health=health,
        )
