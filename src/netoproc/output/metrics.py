"""The Prometheus exporter's metrics, kept from tick to tick (no I/O here).

`Metrics.update(snapshot)` adds each tick's deltas (deltas.py) to its own
cumulative sums, keyed by label set, so a counter never goes backwards: not
when a process exits, not when exited processes fold into one row, not when
a flow expires. `collect()` hands prometheus_client the families to expose
(the HTTP side is in exporter.py).

Label sets are bounded: process metrics are per process *name, user and
group* (its container or systemd unit, "" for none; never per pid, never per
remote address or port); the first `PROCESS_LABEL_CAP` such label sets seen
keep labels of their own for the run and the rest are counted under
`process="other", user="", group=""`. Interfaces,
protocols, DNS types, rcodes and resolvers have caps of their own (below),
past which they are counted as `other` too. Label values are the names with
control characters escaped, as every other format shows them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from netoproc.model import IPPROTO_TCP, proto_name
from netoproc.output.deltas import Deltas, Interval
from netoproc.output.text import printable
from netoproc.snapshot import Snapshot, Traffic

PROCESS_LABEL_CAP = 200  # process name + user + group label sets
DNS_PROCESS_CAP = 200  # process names in DNS metrics
INTERFACE_CAP = 64
PROTOCOL_CAP = 16
DNS_TYPE_CAP = 32
DNS_RCODE_CAP = 16
RESOLVER_CAP = 64
OTHER = "other"

DNS_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
               0.25, 0.5, 1.0)  # fmt: skip
DIRECTIONS = ("rx", "tx")


class LabelCap:
    """The first `limit` label tuples seen keep their own; later ones become `other`."""

    def __init__(self, limit: int, other: tuple[str, ...]) -> None:
        self.limit = limit
        self.other = other
        self.known: set[tuple[str, ...]] = set()

    def __call__(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels in self.known:
            return labels
        if len(self.known) < self.limit:
            self.known.add(labels)
            return labels
        return self.other


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last is +Inf

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


def _add(sums: dict[tuple[str, ...], int], key: tuple[str, ...], value: int) -> None:
    if value:
        sums[key] = sums.get(key, 0) + value


def _add_traffic(
    bytes_: dict[tuple[str, ...], int],
    packets: dict[tuple[str, ...], int],
    labels: tuple[str, ...],
    t: Traffic,
) -> None:
    _add(bytes_, (*labels, "rx"), t.rx_bytes)
    _add(bytes_, (*labels, "tx"), t.tx_bytes)
    _add(packets, (*labels, "rx"), t.rx_packets)
    _add(packets, (*labels, "tx"), t.tx_packets)


class Metrics:
    """Cumulative sums by label set, updated each tick, read by scrapes (thread-safe)."""

    def __init__(self, pattern: str | None = None) -> None:
        self.pattern = pattern
        self._deltas = Deltas()
        self._lock = threading.Lock()
        self._process_labels = LabelCap(PROCESS_LABEL_CAP, (OTHER, "", ""))
        self._dns_process = LabelCap(DNS_PROCESS_CAP, (OTHER,))
        self._interfaces = LabelCap(INTERFACE_CAP, (OTHER,))
        self._protocols = LabelCap(PROTOCOL_CAP, (OTHER,))
        self._dns_types = LabelCap(DNS_TYPE_CAP, (OTHER,))
        self._rcodes = LabelCap(DNS_RCODE_CAP, (OTHER,))
        self._resolvers = LabelCap(RESOLVER_CAP, (OTHER,))
        self.process_bytes: dict[tuple[str, ...], int] = {}
        self.process_packets: dict[tuple[str, ...], int] = {}
        self.interface_bytes: dict[tuple[str, ...], int] = {}
        self.interface_packets: dict[tuple[str, ...], int] = {}
        self.interface_errors: dict[tuple[str, ...], int] = {}
        self.traffic_bytes: dict[tuple[str, ...], int] = {}
        self.traffic_packets: dict[tuple[str, ...], int] = {}
        self.dns_queries: dict[tuple[str, ...], int] = {}
        self.dns_latency: dict[tuple[str, ...], _Histogram] = {}
        self.tcp_rtt = _Histogram(RTT_BUCKETS)
        self._errors: dict[str, tuple[int, int]] = {}
        self.health: dict[str, int] = {}
        self.unattributed_ratio = 0.0
        self.owners = ""
        self.ticks = 0

    def update(self, snapshot: Snapshot) -> None:
        interval = self._deltas.step(snapshot)
        with self._lock:
            # the whole capture's: interfaces, protocols, RTT, health
            self._update_interfaces(interval)
            self._update_traffic(interval)
            self._update_health(snapshot)
            # only what --filter keeps: processes and their DNS queries
            self._update_processes(interval.filtered(self.pattern))
            self.ticks += 1

    def _update_processes(self, interval: Interval) -> None:
        for row, delta in interval.processes:
            labels = self._process_labels(
                (printable(row.name), printable(row.user), printable(row.group))
            )
            _add_traffic(self.process_bytes, self.process_packets, labels, delta)
        for query in interval.dns:
            process = printable(query.process.name) if query.process else "unknown"
            resolver = self._resolvers((printable(query.resolver),))
            key = (
                *self._dns_process((process,)),
                *self._dns_types((printable(query.qtype),)),
                *self._rcodes((printable(query.rcode),)),
                *resolver,
            )
            _add(self.dns_queries, key, 1)
            if query.latency_ms is not None:
                histogram = self.dns_latency.setdefault(resolver, _Histogram(DNS_LATENCY_BUCKETS))
                histogram.observe(query.latency_ms / 1000)

    def _update_traffic(self, interval: Interval) -> None:
        for conn, delta in interval.connections:
            labels = (
                self._interfaces((printable(conn.iface),))[0],
                self._protocols((proto_name(conn.proto),))[0],
            )
            _add_traffic(self.traffic_bytes, self.traffic_packets, labels, delta)
            if conn.proto == IPPROTO_TCP and conn.rtt_ms is not None and delta.packets:
                self.tcp_rtt.observe(conn.rtt_ms / 1000)

    def _update_interfaces(self, interval: Interval) -> None:
        for row, delta in interval.interfaces:
            labels = self._interfaces((printable(row.name),))
            _add_traffic(self.interface_bytes, self.interface_packets, labels, delta)
            before = self._errors.get(row.name, (0, 0))
            now = (row.rx_errors, row.tx_errors)
            for direction, old, new in zip(DIRECTIONS, before, now, strict=True):
                _add(self.interface_errors, (*labels, direction), new - old if new >= old else new)
            self._errors[row.name] = now

    def _update_health(self, snapshot: Snapshot) -> None:
        h = snapshot.health
        figures = {
            "packets": h.packets,
            "bytes": h.bytes,
            "kernel_drops": h.kernel_drops,
            "queue_drops": h.queue_drops,
            "malformed": h.malformed,
            "unattributed_bytes": h.unattributed_bytes,
            "owner_events_lost": h.owner_events_lost,
        }
        for name, value in figures.items():  # counters: never below what was exposed
            self.health[name] = max(self.health.get(name, 0), value)
        self.unattributed_ratio = h.unattributed_share
        self.owners = h.owners

    # exposition ---------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            return iter(list(self._families()))

    def _families(self) -> Iterator[Metric]:
        yield from _counters(
            "netoproc_process_bytes",
            "IP-layer bytes per process name, user and container or unit, by direction "
            "(rx/tx from the process)",
            ("process", "user", "group", "direction"),
            self.process_bytes,
        )
        yield from _counters(
            "netoproc_process_packets",
            "IP packets per process name, user and container or unit, by direction",
            ("process", "user", "group", "direction"),
            self.process_packets,
        )
        yield from _counters(
            "netoproc_traffic_bytes",
            "Captured IP-layer bytes per interface, protocol and direction",
            ("interface", "protocol", "direction"),
            self.traffic_bytes,
        )
        yield from _counters(
            "netoproc_traffic_packets",
            "Captured IP packets per interface, protocol and direction",
            ("interface", "protocol", "direction"),
            self.traffic_packets,
        )
        yield from _counters(
            "netoproc_interface_bytes",
            "Bytes through each interface since netoproc started (the OS's counters)",
            ("interface", "direction"),
            self.interface_bytes,
        )
        yield from _counters(
            "netoproc_interface_packets",
            "Packets through each interface since netoproc started (the OS's counters)",
            ("interface", "direction"),
            self.interface_packets,
        )
        yield from _counters(
            "netoproc_interface_errors",
            "Interface errors since netoproc started (the OS's counters)",
            ("interface", "direction"),
            self.interface_errors,
        )
        yield from _counters(
            "netoproc_dns_queries",
            "DNS queries answered or timed out, by asking process name, type, rcode and resolver",
            ("process", "type", "rcode", "resolver"),
            self.dns_queries,
        )
        latency = HistogramMetricFamily(
            "netoproc_dns_latency_seconds",
            "DNS answer latency from the packet timestamps, by resolver",
            labels=("resolver",),
        )
        for labels, histogram in sorted(self.dns_latency.items()):
            latency.add_metric(labels, histogram.cumulative(), histogram.total)
        yield latency
        rtt = HistogramMetricFamily(
            "netoproc_tcp_rtt_seconds",
            "Smoothed RTT of each TCP connection that moved data, once per interval",
            labels=(),
        )
        rtt.add_metric((), self.tcp_rtt.cumulative(), self.tcp_rtt.total)
        yield rtt
        h = self.health
        yield CounterMetricFamily(
            "netoproc_capture_packets", "IP packets captured", h.get("packets", 0)
        )
        yield CounterMetricFamily(
            "netoproc_capture_bytes", "IP-layer bytes captured", h.get("bytes", 0)
        )
        drops = CounterMetricFamily(
            "netoproc_capture_drops",
            "Packets lost before netoproc counted them: in the kernel or its own queue",
            labels=("where",),
        )
        drops.add_metric(("kernel",), h.get("kernel_drops", 0))
        drops.add_metric(("queue",), h.get("queue_drops", 0))
        yield drops
        yield CounterMetricFamily(
            "netoproc_malformed_packets", "Packets too damaged to decode", h.get("malformed", 0)
        )
        yield CounterMetricFamily(
            "netoproc_unattributed_bytes",
            "Bytes no process could be given (the unknown row)",
            h.get("unattributed_bytes", 0),
        )
        yield GaugeMetricFamily(
            "netoproc_unattributed_ratio",
            "Share of captured bytes no process could be given",
            self.unattributed_ratio,
        )
        yield CounterMetricFamily(
            "netoproc_owner_events_lost",
            "Kernel socket-owner events lost to a full ring buffer (eBPF)",
            h.get("owner_events_lost", 0),
        )
        source = GaugeMetricFamily(
            "netoproc_attribution_source",
            "Where process owners come from: 1 for the source in use (eBPF, sockets, capture)",
            labels=("source",),
        )
        for name in ("eBPF", "sockets", "capture"):
            source.add_metric((name,), 1.0 if self.owners == name else 0.0)
        yield source
        yield CounterMetricFamily("netoproc_ticks", "Intervals netoproc has counted", self.ticks)


def _counters(
    name: str, doc: str, labels: Sequence[str], sums: dict[tuple[str, ...], int]
) -> Iterator[Metric]:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(sums.items()):
        family.add_metric(key, value)
    yield family
