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
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from netoproc.decode.batch import PacketBatch
from netoproc.engine.attribution import SocketIndex, reason_for
from netoproc.engine.dns import DnsTracker
from netoproc.engine.flows import Flow, FragmentPorts
from netoproc.engine.grouping import FlowGroups, group, orient
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

Owner = ProcessRef | None


class Engine:
    def __init__(
        self,
        *,
        started: float,
        interval: float = 1.0,
        process_lookups: bool = True,
        retire_after: float = 300.0,
        dns: bool = True,
    ) -> None:
        """`process_lookups` False: no socket table exists (a replayed file), so
        only processes the capture itself names are known. `dns` False: no DNS
        observatory (--no-dns)."""
        self.started = started
        self.interval = interval
        self.process_lookups = process_lookups
        self.retire_after = retire_after
        self.flows: dict[FlowKey, Flow] = {}
        # (proto, local, local port, remote, remote port) of every flow, any interface:
        # orients packets whose direction the capture does not know
        self._endpoints: dict[tuple[int, int, int, int, int], int] = {}
        self.sockets = SocketIndex()
        self._fragments = FragmentPorts()
        self.interfaces = InterfaceStats()
        self.resolvers: dict[str, tuple[str, ...]] = {}  # interface -> configured DNS servers
        self.dns = DnsTracker() if dns else None
        self.tcp = TcpHealth()
        self._retired: dict[Owner, Traffic] = {}
        self._retired_reasons: dict[str, int] = {}
        self._process_history: dict[Owner, tuple[deque[float], deque[float]]] = {}
        self._last_tick = started
        self._packets = self._bytes = 0
        self._malformed = self._not_ip = self._portless = 0
        self._kernel_drops = self._queue_drops = 0

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
        direction = orient(batch, self._local_is_src)
        groups = group(batch, direction)
        new, slots = self._apply(groups, batch)
        tcp = np.flatnonzero((batch.proto == IPPROTO_TCP) & batch.transport)
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

    def _local_is_src(
        self, iface: int, proto: int, s_hi: int, s_lo: int, sport: int, d_hi: int, d_lo: int,
        dport: int,
    ) -> bool | None:  # fmt: skip
        src, dst = (s_hi << 64) | s_lo, (d_hi << 64) | d_lo
        if (proto, src, sport, dst, dport) in self._endpoints:
            return True
        if (proto, dst, dport, src, sport) in self._endpoints:
            return False
        return None

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

    def _apply(
        self, groups: FlowGroups, batch: PacketBatch
    ) -> tuple[list[FlowKey], npt.NDArray[np.int64]]:
        """Add each flow's share of the batch; returns the flows to look up and,
        per flow of the batch, its TCP analysis slot (-1 if not TCP)."""
        names = batch.process_names
        interface = batch.interfaces.name
        new: list[FlowKey] = []
        slots: list[int] = []
        columns = (
            groups.iface.tolist(), groups.proto.tolist(),
            groups.l_hi.tolist(), groups.l_lo.tolist(), groups.lport.tolist(),
            groups.r_hi.tolist(), groups.r_lo.tolist(), groups.rport.tolist(),
            groups.rx_bytes.tolist(), groups.tx_bytes.tolist(),
            groups.rx_packets.tolist(), groups.tx_packets.tolist(),
            groups.first_ts.tolist(), groups.last_ts.tolist(), groups.transport.tolist(),
            groups.syn_out.tolist(), groups.syn_in.tolist(), groups.closed.tolist(),
            groups.pid.tolist(),
        )  # fmt: skip
        flows = self.flows
        for (
            iface, proto, l_hi, l_lo, lport, r_hi, r_lo, rport,
            rx_b, tx_b, rx_p, tx_p, first, last, transport, syn_out, syn_in, closed, pid,
        ) in zip(*columns, strict=True):  # fmt: skip
            key = FlowKey(
                interface(iface), proto, (l_hi << 64) | l_lo, lport, (r_hi << 64) | r_lo, rport
            )
            flow = flows.get(key)
            if flow is None:
                flow = flows[key] = Flow(key, first, HISTORY_SECONDS)
                if proto == IPPROTO_TCP and transport:
                    flow.tcp_slot = self.tcp.allocate()
                endpoints = (proto, key.laddr, lport, key.raddr, rport)
                self._endpoints[endpoints] = self._endpoints.get(endpoints, 0) + 1
                if pid >= 0:
                    flow.attribute(ProcessRef(pid, names.get(pid, str(pid))), None)
                elif proto not in (IPPROTO_TCP, IPPROTO_UDP):
                    flow.attribute(None, UnknownReason.NOT_SOCKET)
                elif not transport:
                    flow.attribute(None, UnknownReason.NO_PORTS)
                elif not self.process_lookups:
                    flow.attribute(None, UnknownReason.NO_PROCESS_INFO)
                else:
                    new.append(key)
            elif flow.owner is None and pid >= 0:
                flow.attribute(ProcessRef(pid, names.get(pid, str(pid))), None)
            flow.rx_bytes += rx_b
            flow.tx_bytes += tx_b
            flow.rx_packets += rx_p
            flow.tx_packets += tx_p
            flow.tick_rx += rx_b
            flow.tick_tx += tx_b
            flow.last_seen = max(flow.last_seen, last)
            if flow.outbound is None and (syn_out or syn_in):
                flow.outbound = syn_out
            flow.closed = flow.closed or closed
            slots.append(flow.tcp_slot)
        return new, np.asarray(slots, np.int64)

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
        for flow in self.flows.values():
            rx_rate, tx_rate = flow.tick_rx / elapsed, flow.tick_tx / elapsed
            flow.tick_rx = flow.tick_tx = 0
            flow.rx_history.append(rx_rate)
            flow.tx_history.append(tx_rate)
            owner = flow.owner
            traffic = Traffic(flow.rx_bytes, flow.tx_bytes, flow.rx_packets, flow.tx_packets)
            totals[owner] = totals.get(owner, Traffic()) + traffic
            pair = rates.setdefault(owner, [0.0, 0.0])
            pair[0] += rx_rate
            pair[1] += tx_rate
            if owner is None:
                reason = str(flow.reason or UnknownReason.NO_SOCKET)
                reasons[reason] = reasons.get(reason, 0) + traffic.bytes
            if not flow.closed and flow.last_seen >= now - ACTIVE_SECONDS:
                active[owner] = active.get(owner, 0) + 1
            if flow.last_seen < now - self.retire_after:
                retire.append(flow)
            connections.append(self._connection_row(flow, rx_rate, tx_rate, now))
        for flow in retire:
            self._retire(flow)

        sockets_per_pid: dict[int, int] = {}
        for sock in self.sockets.sockets:
            if sock.owner:
                sockets_per_pid[sock.owner.pid] = sockets_per_pid.get(sock.owner.pid, 0) + 1
        owners = set(totals) | {s.owner for s in self.sockets.sockets if s.owner}
        processes = []
        for owner in owners:
            rx_rate, tx_rate = rates.get(owner, (0.0, 0.0))
            rx_hist, tx_hist = self._process_history.setdefault(
                owner, (deque(maxlen=HISTORY_SECONDS), deque(maxlen=HISTORY_SECONDS))
            )
            rx_hist.append(rx_rate)
            tx_hist.append(tx_rate)
            processes.append(
                ProcessRow(
                    process=owner,
                    total=totals.get(owner, Traffic()),
                    rx_rate=rx_rate,
                    tx_rate=tx_rate,
                    sockets=sockets_per_pid.get(owner.pid, 0) if owner else 0,
                    connections=active.get(owner, 0),
                    rx_history=tuple(rx_hist),
                    tx_history=tuple(tx_hist),
                    unknown_reasons=(
                        tuple(sorted(reasons.items(), key=lambda r: -r[1])) if owner is None else ()
                    ),
                )
            )
        for gone in set(self._process_history) - owners:
            del self._process_history[gone]
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
            ),
        )

    def _owner_of(self, key: FlowKey) -> ProcessRef | None:
        flow = self.flows.get(key)
        return flow.owner if flow is not None else None

    def _retire(self, flow: Flow) -> None:
        """Fold an idle flow's totals into its process and forget the flow."""
        traffic = Traffic(flow.rx_bytes, flow.tx_bytes, flow.rx_packets, flow.tx_packets)
        self._retired[flow.owner] = self._retired.get(flow.owner, Traffic()) + traffic
        if flow.owner is None:
            reason = str(flow.reason or UnknownReason.NO_SOCKET)
            self._retired_reasons[reason] = self._retired_reasons.get(reason, 0) + traffic.bytes
        del self.flows[flow.key]
        if flow.tcp_slot >= 0:
            self.tcp.release(flow.tcp_slot)
        if self.dns is not None:
            self.dns.forget_flow(flow.key)
        k = flow.key
        endpoints = (k.proto, k.laddr, k.lport, k.raddr, k.rport)
        if self._endpoints[endpoints] == 1:
            del self._endpoints[endpoints]
        else:
            self._endpoints[endpoints] -= 1

    def _tcp_health(self, flow: Flow, now: float) -> TcpHealthRow | None:
        if flow.tcp_slot < 0:
            return None
        figures = self.tcp.figures(flow.tcp_slot, now)
        sock = flow.socket
        kernel = sock.tcp if sock is not None and sock.connected else None
        kernel_count = kernel.total_retrans if kernel else None
        retransmits = figures.retransmits if kernel_count is None else kernel_count
        marks = flow.retransmit_marks
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

    def _connection_row(
        self, flow: Flow, rx_rate: float, tx_rate: float, now: float
    ) -> ConnectionRow:
        key, sock = flow.key, flow.socket
        if sock is not None and sock.connected:
            state = sock.state
        elif key.proto == IPPROTO_TCP:
            state = "CLOSED" if flow.closed else "ESTABLISHED" if flow.outbound is not None else "-"
        else:
            state = "-"
        if flow.outbound is not None:
            direction = "Out" if flow.outbound else "In"
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
            total=Traffic(flow.rx_bytes, flow.tx_bytes, flow.rx_packets, flow.tx_packets),
            rx_rate=rx_rate,
            tx_rate=tx_rate,
            first_seen=flow.first_seen,
            last_seen=flow.last_seen,
            fd=sock.fd if sock is not None and sock.owner == flow.owner else None,
            domain=self.dns.name_for(key.raddr) if self.dns is not None else None,
            rtt_ms=health.rtt_ms if health else None,
            jitter_ms=health.jitter_ms if health else None,
            retransmits=health.retransmits if health else None,
            health=health,
            rx_history=tuple(flow.rx_history),
            tx_history=tuple(flow.tx_history),
        )
