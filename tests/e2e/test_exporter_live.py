"""The Prometheus exporter end to end: a real Prometheus server scrapes netoproc.

netoproc (`--listen`) and Prometheus (Debian's `prometheus`, run directly
with a generated configuration, a 1 s scrape interval and a temporary
storage directory) both run in namespace `a`, on its loopback. Named clients
there move known traffic to servers in namespace `b`; tcpdump on the veth is
the witness. The value Prometheus returns through its HTTP API for each
process's byte counters must be tcpdump's, exactly. While a paced UDP stream
runs, 20 clients scrape at once; the stream must still be counted exactly,
with no packet dropped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.test_contrib import dashboard_queries
from tests.witness import port_traffic, tcpdump_packets

pytestmark = pytest.mark.live

HTTP = str(Path(__file__).with_name("http_get.py"))
TCP_PORT, UDP_PORT = 5001, 5003
EXPORTER = "127.0.0.1:9786"
PROMETHEUS = "127.0.0.1:9090"


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"x{os.getpid() % 100000}")


def http(hosts: TwoHosts, *args: str) -> dict[str, object]:
    """http_get.py inside namespace a; its JSON answer."""
    proc = hosts.start(hosts.a, [sys.executable, HTTP, *args])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def start_prometheus(hosts: TwoHosts, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: netoproc\n"
        f"    static_configs:\n      - targets: ['{EXPORTER}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", hosts.a, "prometheus", f"--config.file={config}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={PROMETHEUS}"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log.close()
    hosts.procs.append(proc)  # stopped by pid on teardown
    ready = hosts.start(
        hosts.a, [sys.executable, HTTP, "ready", f"http://{PROMETHEUS}/-/ready", "60"]
    )
    out, _ = ready.communicate(timeout=90)
    assert "ready" in out.splitlines()[-1:], (tmp_path / "prometheus.log").read_text()[-2000:]


def query(hosts: TwoHosts, expr: str) -> float | None:
    answer = http(hosts, "query", f"http://{PROMETHEUS}", expr)
    result = answer["result"]
    assert answer["status"] == 200, (expr, result)
    assert isinstance(result, list)
    return float(result[0]["value"][1]) if result else None


def eventually(hosts: TwoHosts, expr: str, expected: float, seconds: float = 30.0) -> float | None:
    """Ask Prometheus until `expr` is `expected` (it scrapes every second), or time runs out."""
    deadline = time.monotonic() + seconds
    value = None
    while time.monotonic() < deadline:
        value = query(hosts, expr)
        if value == expected:
            break
        time.sleep(0.5)
    return value


def test_prometheus_scrapes_exact_process_bytes(hosts: TwoHosts, tmp_path: Path) -> None:
    for server in (hosts.peer(hosts.b, "tcp-server", str(TCP_PORT)),
                   hosts.peer(hosts.b, "udp-sink", "np-sink", str(UDP_PORT))):  # fmt: skip
        wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = hosts.netoproc(hosts.a, "--listen", EXPORTER, "--verbose")
    wait_for_line(netoproc.stderr, "serving metrics on http://127.0.0.1:9786/metrics")
    start_prometheus(hosts, tmp_path)

    tcp = hosts.peer(hosts.a, "tcp-client", "np-exported", hosts.b4, str(TCP_PORT), "400000", "100")
    stream = hosts.peer(hosts.a, "udp-stream", "np-stream", hosts.b4, str(UDP_PORT), "1000", "4")
    time.sleep(0.5)
    # 20 clients scrape at once, 10 times each, while the stream runs
    storm = http(hosts, "parallel", f"http://{EXPORTER}/metrics", "20", "10")
    client = {}
    for name, proc in (("np-exported", tcp), ("np-stream", stream)):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        client[name] = json.loads(out)
    time.sleep(1.5)  # a tick after the last packet
    stop_tcpdump(witness)
    packets = tcpdump_packets(pcap)

    assert storm["statuses"] == [200] * 200
    bad = http(hosts, "get", f"http://{EXPORTER}/nope")
    assert bad["status"] == 404
    up = eventually(hosts, 'up{job="netoproc"}', 1.0)
    assert up == 1.0, (tmp_path / "prometheus.log").read_text()[-3000:]

    exported = port_traffic(packets, hosts.a4, int(client["np-exported"]["lport"]))
    assert exported["tx_bytes"] > 400_000
    streamed = {"tx_bytes": 0, "tx_packets": 0}
    for p in packets:
        if p.dport == UDP_PORT and p.proto == "UDP":
            streamed["tx_bytes"] += p.length
            streamed["tx_packets"] += 1
    assert streamed["tx_packets"] == client["np-stream"]["sent"]
    checks = {
        ("np-exported", "bytes", "tx"): exported["tx_bytes"],
        ("np-exported", "bytes", "rx"): exported["rx_bytes"],
        ("np-exported", "packets", "tx"): exported["tx_packets"],
        ("np-exported", "packets", "rx"): exported["rx_packets"],
        ("np-stream", "bytes", "tx"): streamed["tx_bytes"],
        ("np-stream", "packets", "tx"): streamed["tx_packets"],
    }
    for (name, unit, direction), expected in checks.items():
        expr = (f'netoproc_process_{unit}_total{{process="{name}",user="root",'
                f'direction="{direction}"}}')  # fmt: skip
        assert eventually(hosts, expr, float(expected)) == expected, expr
    assert query(hosts, 'netoproc_capture_drops_total{where="kernel"}') == 0.0
    assert query(hosts, 'netoproc_capture_drops_total{where="queue"}') == 0.0
    # per pid or per port would be unbounded: no such labels
    assert query(hosts, 'count({__name__=~"netoproc_.*", pid!=""})') is None
    assert query(hosts, 'count({__name__=~"netoproc_.*", port!=""})') is None
    assert query(hosts, "netoproc_tcp_rtt_seconds_count") is not None

    # every query of the Grafana dashboard parses and finds data in Prometheus
    for expr in dashboard_queries():
        expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        if "label_values" in expr:
            continue  # a Grafana function, not PromQL
        if "dns" in expr:  # no DNS in this test: the query need only be valid PromQL
            query(hosts, expr)
            continue
        deadline, found = time.monotonic() + 20, None
        while found is None and time.monotonic() < deadline:
            found = query(hosts, f"count({expr})")  # rates need two scrapes of a series
            time.sleep(0 if found is not None else 1)
        assert found is not None, expr

    netoproc.send_signal(signal.SIGTERM)
    out, err = netoproc.communicate(timeout=30)
    assert netoproc.returncode == 0, err
    assert out == ""  # the exporter alone prints nothing


def test_exporter_with_a_stream_a_filter_an_interface_and_a_duration(hosts: TwoHosts) -> None:
    server = hosts.peer(hosts.b, "udp-server", str(UDP_PORT))
    wait_for_line(server.stdout, "ready")
    netoproc = hosts.netoproc(hosts.a, "--listen", EXPORTER, "--duration", "5", "--format",
                              "jsonl", "--filter", "np-kept", "--interface", hosts.veth_a,
                              "--verbose")  # fmt: skip
    wait_for_line(netoproc.stderr, "serving metrics")
    for name in ("np-kept", "np-other"):
        client = hosts.peer(hosts.a, "udp-client", name, hosts.b4, str(UDP_PORT), "10", "200")
        client.communicate(timeout=30)
    time.sleep(1.5)  # a tick
    scraped = http(hosts, "get", f"http://{EXPORTER}/metrics")
    out, err = netoproc.communicate(timeout=30)
    assert netoproc.returncode == 0, err
    body = str(scraped["body"])
    assert 'process="np-kept"' in body and 'process="np-other"' not in body
    interfaces = {
        line.split('interface="')[1].split('"')[0]
        for line in body.splitlines()
        if line.startswith("netoproc_interface_bytes")
    }
    assert interfaces == {hosts.veth_a}  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and {line["process"] for line in lines} == {"np-kept"}
    assert sum(line["tx_packets_delta"] for line in lines) == 10

    # with --duration and a table format, the snapshot is printed at the end
    table = hosts.netoproc(hosts.a, "--listen", EXPORTER, "--duration", "1", "--format", "json")
    out, err = table.communicate(timeout=30)
    assert table.returncode == 0, err
    assert isinstance(json.loads(out), list)
