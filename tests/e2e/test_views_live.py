"""`--view connection|dns|interface` end to end, every column against an outside witness.

dnsmasq in namespace `b` answers `svc.test` with b's address; in namespace
`a`, dig asks for it (and for a name that does not exist), a named client
then talks TCP to that address and another sends UDP. Three netoproc runs
watch at once, one per view. The witnesses: tcpdump on the veth (bytes,
packets, endpoints, DNS latency), dig's own answers, the kernel's interface
counters and addresses (`/sys/class/net`, `ip -j addr`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.witness import port_traffic, tcpdump_dns, tcpdump_packets

pytestmark = pytest.mark.live

TCP_PORT, UDP_PORT = 5001, 5002
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"v{os.getpid() % 100000}")


def in_a(hosts: TwoHosts, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", hosts.a, *argv], capture_output=True,
                          text=True, timeout=30, check=True).stdout  # fmt: skip


def counters(hosts: TwoHosts) -> dict[str, int]:
    base = f"/sys/class/net/{hosts.veth_a}/statistics"
    return {c: int(in_a(hosts, "cat", f"{base}/{c}")) for c in COUNTERS}


def start_dnsmasq(hosts: TwoHosts) -> None:
    dnsmasq = hosts.start(hosts.b, [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        f"--listen-address={hosts.b4}", "--pid-file=", "--log-facility=-", "--log-queries",
        "--local=/test/", f"--address=/svc.test/{hosts.b4}",
    ])  # fmt: skip
    wait_for_line(dnsmasq.stderr, "cleared cache")
    for _ in range(50):
        probe = subprocess.run(["ip", "netns", "exec", hosts.a, "dig", "+short", "+tries=1",
                                "+time=1", f"@{hosts.b4}", "svc.test"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        if probe.stdout.strip() == hosts.b4:
            return
    raise AssertionError("dnsmasq never answered")


def test_every_view_against_its_witness(hosts: TwoHosts, tmp_path: Path) -> None:
    for server in (hosts.peer(hosts.b, "tcp-server", str(TCP_PORT)),
                   hosts.peer(hosts.b, "udp-server", str(UDP_PORT))):  # fmt: skip
        wait_for_line(server.stdout, "ready")
    start_dnsmasq(hosts)
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    before = counters(hosts)
    runs = {
        view: hosts.netoproc(hosts.a, "--duration", "8", "--view", view, "--format", fmt,
                             "--verbose")
        for view, fmt in (("connection", "json"), ("dns", "tsv"), ("interface", "json"))
    }  # fmt: skip
    for run in runs.values():
        wait_for_line(run.stderr, "capturing on")

    dig = hosts.start(hosts.a, ["dig", "+tries=1", "+time=2", "+noall", "+answer", f"@{hosts.b4}",
                                "svc.test", "A"])  # fmt: skip
    dig_out, _ = dig.communicate(timeout=30)
    answer = dig_out.split()  # svc.test. TTL IN A ADDRESS: dig's own reading of the answer
    nx = hosts.start(hosts.a, ["dig", "+tries=1", "+time=2", f"@{hosts.b4}", "nope.test", "A"])
    nx_out, _ = nx.communicate(timeout=30)
    assert "status: NXDOMAIN" in nx_out
    tcp = hosts.peer(hosts.a, "tcp-client", "np-named", hosts.b4, str(TCP_PORT), "100000", "100")
    udp = hosts.peer(hosts.a, "udp-client", "np-udp", hosts.b4, str(UDP_PORT), "20", "300")
    info = {}
    for name, proc in (("np-named", tcp), ("np-udp", udp)):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        info[name] = json.loads(out)
    results = {}
    for view, run in runs.items():
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        results[view] = out
    after = counters(hosts)
    time.sleep(1.5)  # tcpdump hands over its last packets within a second
    stop_tcpdump(witness)
    packets = tcpdump_packets(pcap)

    # connections --------------------------------------------------------------
    rows = json.loads(results["connection"])
    named = [r for r in rows if r["process"] == "np-named"]
    assert len(named) == 1, rows
    conn = named[0]
    lport = int(info["np-named"]["lport"])
    assert {k: conn[k] for k in ("pid", "local", "remote", "remote_name", "proto", "direction",
                                 "interface")} == {
        "pid": info["np-named"]["pid"], "local": f"{hosts.a4}:{lport}",
        "remote": f"{hosts.b4}:{TCP_PORT}", "remote_name": "svc.test", "proto": "TCP",
        "direction": "Out", "interface": hosts.veth_a,
    }  # fmt: skip
    assert {c: conn[c] for c in COUNTERS} == port_traffic(packets, hosts.a4, lport)
    assert conn["state"] in ("FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSED", "CLOSING")
    assert conn["rtt_ms"] is not None and 0 < conn["rtt_ms"] < 100
    assert conn["rtt_source"] in ("kernel", "packets")
    assert (conn["retransmits"], conn["retransmits_source"]) == (0, conn["retransmits_source"])
    sent_twice = [p for p in packets if p.sport == lport and p.proto == "TCP"]
    assert len({(p.ts, p.length) for p in sent_twice}) == len(sent_twice)  # veth: no loss
    (udp_row,) = [r for r in rows if r["process"] == "np-udp"]
    udp_port = int(info["np-udp"]["lport"])
    assert (udp_row["proto"], udp_row["remote"], udp_row["rtt_ms"]) == (
        "UDP", f"{hosts.b4}:{UDP_PORT}", None)  # fmt: skip
    assert {c: udp_row[c] for c in COUNTERS} == port_traffic(packets, hosts.a4, udp_port)

    # DNS (tsv) -----------------------------------------------------------------
    header, *lines = results["dns"].splitlines()
    columns = header.split("\t")
    queries = [dict(zip(columns, line.split("\t"), strict=True)) for line in lines]
    by_pid = {int(q["pid"]): q for q in queries if q["pid"] != "-"}
    ok, missing = by_pid[dig.pid], by_pid[nx.pid]
    assert {k: ok[k] for k in ("process", "name", "type", "response", "rcode", "resolver",
                               "interface", "transport")} == {
        "process": "dig", "name": "svc.test", "type": answer[3], "response": answer[4],
        "rcode": "NOERROR", "resolver": hosts.b4, "interface": hosts.veth_a, "transport": "UDP",
    }  # fmt: skip
    assert (missing["name"], missing["response"], missing["rcode"]) == (
        "nope.test", "NXDOMAIN", "NXDOMAIN")  # fmt: skip
    dns = tcpdump_dns(pcap)
    for row, qname in ((ok, "svc.test"), (missing, "nope.test")):
        ask = next(p for p in dns if p.dport == 53 and f"A? {qname}." in p.text)
        reply = next(p for p in dns if p.sport == 53 and p.ident == ask.ident
                     and p.dport == ask.sport)  # fmt: skip
        assert abs(float(row["latency_ms"]) - (reply.ts - ask.ts) * 1000) < 1.0
        assert row["time"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(ask.ts)))

    # interfaces ----------------------------------------------------------------
    cards = {r["interface"]: r for r in json.loads(results["interface"])}
    card = cards[hosts.veth_a]
    addresses = json.loads(in_a(hosts, "ip", "-j", "addr", "show", "dev", hosts.veth_a))[0]
    v4 = [a["local"] for a in addresses["addr_info"] if a["family"] == "inet"]
    v6 = [a["local"] for a in addresses["addr_info"] if a["family"] == "inet6"]
    shown_v6 = sorted(a.removesuffix(f"%{hosts.veth_a}") for a in card["ipv6"])  # link-local zone
    assert card["state"] == "UP" and card["ipv4"] == v4 and shown_v6 == sorted(v6)
    assert (card["rx_errors"], card["tx_errors"]) == (0, 0)
    known_tx = sum(1 for p in packets if p.src == hosts.a4 and p.dport in (53, TCP_PORT, UDP_PORT))
    for c in COUNTERS:
        assert card[c] <= after[c] - before[c], c  # what the kernel counted around the run
    assert card["tx_packets"] >= known_tx > 0
    assert "lo" in cards
