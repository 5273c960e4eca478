"""The exporter's metrics: counters that never go backwards, bounded labels, safe label values.

Exposition goes through prometheus_client's own encoder and is read back with
its parser, so what is checked is what a Prometheus server would store.
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netoproc.model import ProcessRef
from netoproc.output.metrics import PROCESS_LABEL_CAP, Metrics
from netoproc.snapshot import EXITED_PID, CaptureHealth, ProcessRow, Snapshot, Traffic
from tests.fixtures import T0, hostile_snapshot, monitor_snapshot

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def process_bytes(samples: Samples, name: str, user: str, direction: str, group: str = "") -> float:
    labels = (("direction", direction), ("group", group), ("process", name), ("user", user))
    return samples.get(("netoproc_process_bytes_total", labels), 0.0)


def snap(t: float, *rows: ProcessRow, health: CaptureHealth | None = None) -> Snapshot:
    return Snapshot(time=T0 + t, started=T0, interval=1.0, processes=rows,
                    health=health or CaptureHealth())  # fmt: skip


def test_counters_survive_exit_and_folding() -> None:
    m = Metrics()
    a, b = ProcessRef(10, "curl", "ann"), ProcessRef(11, "curl", "ann")
    m.update(snap(1, ProcessRow(a, Traffic(100, 10, 1, 1)), ProcessRow(b, Traffic(50, 5, 1, 1))))
    assert process_bytes(scrape(m), "curl", "ann", "rx") == 150
    # both exit and are folded into one row per name and user
    folded = ProcessRow(ProcessRef(EXITED_PID, "curl", "ann"), Traffic(150, 15, 2, 2), exited=2)
    m.update(snap(2, folded))
    assert process_bytes(scrape(m), "curl", "ann", "rx") == 150
    # a new curl comes and goes; the folded row grows by exactly its total
    c = ProcessRef(12, "curl", "ann")
    m.update(snap(3, folded, ProcessRow(c, Traffic(7, 0, 1, 0))))
    m.update(snap(4, replace(folded, total=Traffic(157, 15, 3, 2), exited=3)))
    samples = scrape(m)
    assert process_bytes(samples, "curl", "ann", "rx") == 157
    assert process_bytes(samples, "curl", "ann", "tx") == 15


def test_counters_never_go_backwards_across_a_long_sequence() -> None:
    m = Metrics()
    seen: Samples = {}
    unknown = 0
    for t in range(1, 40):
        rows = [ProcessRow(ProcessRef(100 + t, f"job{t % 3}", "u"), Traffic(t * 10, t, 1, 1))]
        unknown = unknown + 100 if t % 4 else unknown - 50  # pending bytes found an owner
        rows.append(ProcessRow(None, Traffic(unknown, 0, t, 0)))
        m.update(snap(t, *rows, health=CaptureHealth(packets=t * 10, bytes=t * 1000)))
        now = scrape(m)
        for key, value in seen.items():
            if key[0].endswith("_total"):
                assert now.get(key, 0.0) >= value, key
        seen = now


def test_process_labels_are_capped_with_an_other_bucket() -> None:
    m = Metrics()
    rows = [ProcessRow(ProcessRef(1000 + i, f"p{i}", "u"), Traffic(1, 0, 1, 0))
            for i in range(PROCESS_LABEL_CAP + 50)]  # fmt: skip
    m.update(snap(1, *rows))
    samples = scrape(m)
    names = {dict(k[1])["process"] for k in samples if k[0] == "netoproc_process_bytes_total"}
    assert len(names) == PROCESS_LABEL_CAP + 1 and "other" in names
    assert process_bytes(samples, "other", "", "rx") == 50
    total = sum(v for k, v in samples.items() if k[0] == "netoproc_process_bytes_total")
    assert total == PROCESS_LABEL_CAP + 50  # nothing lost to the cap
    # never per pid, never per port
    labels = {name for k in samples for name, _ in k[1]}
    assert not labels & {"pid", "port", "lport", "rport", "remote", "local"}


def test_every_family_of_a_full_snapshot() -> None:
    m = Metrics()
    m.update(replace(monitor_snapshot(), health=CaptureHealth(
        packets=10, bytes=1000, kernel_drops=3, queue_drops=4, malformed=1,
        unattributed_bytes=100, owners="eBPF", owner_events_lost=2)))  # fmt: skip
    s = scrape(m)
    assert process_bytes(s, "firefox", "admin", "rx") == 98_500_000 + 30_000_000 + 20_000
    assert s[("netoproc_interface_bytes_total", (("direction", "tx"), ("interface", "en0")))] == (
        102_000_000
    )
    assert (
        s[("netoproc_interface_errors_total", (("direction", "rx"), ("interface", "utun3")))] == 3
    )
    tcp = (("direction", "rx"), ("interface", "en0"), ("protocol", "TCP"))
    assert s[("netoproc_traffic_bytes_total", tcp)] == 98_500_000 + 30_000_000 + 5_200_000 + (
        4_000_000 + 48_000
    )
    nx = (("process", "node"), ("rcode", "NXDOMAIN"), ("resolver", "10.0.0.1"), ("type", "A"))
    assert s[("netoproc_dns_queries_total", nx)] == 1
    assert s[("netoproc_dns_latency_seconds_count", (("resolver", "192.168.1.1"),))] == 3
    assert (
        s[("netoproc_dns_latency_seconds_bucket", (("le", "0.025"), ("resolver", "192.168.1.1")))]
        == 3
    )
    assert s[("netoproc_tcp_rtt_seconds_count", ())] == 5  # five TCP connections with an RTT
    assert s[("netoproc_tcp_rtt_seconds_bucket", (("le", "0.001"),))] == 1  # node's 0.5 ms
    assert s[("netoproc_capture_drops_total", (("where", "kernel"),))] == 3
    assert s[("netoproc_capture_drops_total", (("where", "queue"),))] == 4
    assert s[("netoproc_owner_events_lost_total", ())] == 2
    assert s[("netoproc_unattributed_ratio", ())] == 0.1
    assert s[("netoproc_attribution_source", (("source", "eBPF"),))] == 1
    assert s[("netoproc_attribution_source", (("source", "sockets"),))] == 0


def test_filter_keeps_matching_processes_only() -> None:
    m = Metrics("curl")
    m.update(monitor_snapshot())
    s = scrape(m)
    names = {dict(k[1])["process"] for k in s if k[0] == "netoproc_process_bytes_total"}
    assert names == {"curl"}
    queries = {dict(k[1])["process"] for k in s if k[0] == "netoproc_dns_queries_total"}
    assert queries == {"curl"}
    # interfaces, protocols and RTT stay the whole capture's
    assert s[("netoproc_interface_bytes_total", (("direction", "tx"), ("interface", "en0")))] > 0
    udp = (("direction", "rx"), ("interface", "en0"), ("protocol", "UDP"))
    assert s[("netoproc_traffic_bytes_total", udp)] == 20_000 + 45_000  # firefox's and unknown
    assert s[("netoproc_tcp_rtt_seconds_count", ())] == 5


def test_hostile_names_are_escaped_label_values() -> None:
    m = Metrics()
    m.update(hostile_snapshot())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(m)
    text = generate_latest(registry).decode()
    assert "\x1b" not in text and "\x07" not in text
    assert all(line.count('"') % 2 == 0 for line in text.splitlines())
    values = {v for (_, labels) in scrape(m) for _, v in labels}
    assert "\\x1b[2J\\x1b[31mevil[bold]x[/]" in values
    assert "root\\x07" in values
