"""Under a spoofed-source SYN flood, real traffic is still counted exactly.

Namespace `b` floods `a` with SYNs from random sources to port 80 (nothing
listens there; `a` answers each with a RST that leaves through `b`) for
about 15 s, while a process in `a` moves data over TCP to a server in `b`
and `dig` asks dnsmasq in `b` three questions. A live session in `a` must
fold the flood into a row of its own, keep the legitimate flows' rows
exact (tcpdump, filtered to the legitimate hosts, is the witness), account
for every byte, and stay small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netoproc.engine.floods import PRESSURE_PER_SECOND
from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.witness import tcpdump_packets

pytestmark = pytest.mark.live

OBSERVE = str(Path(__file__).with_name("observe.py"))
SENDER = str(Path(__file__).with_name("flood_sender.py"))
TCP_PORT = 5001
FLOOD_PORT = 80
FLOOD_PPS = 20_000
FLOOD_SECONDS = 15
MAX_RSS_MIB = 150
SLOW_LINK, RESOLVER = "npta", "198.18.1.2"  # the emulated link (netns.py) and b's end of it


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"x{os.getpid() % 100000}")


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS")), "VmRSS: 0 kB")
    return int(line.split()[1]) / 1024


def test_a_syn_flood_folds_and_real_traffic_stays_exact(hosts: TwoHosts, tmp_path: Path) -> None:
    subprocess.run(["ip", "-n", hosts.a, "route", "add", "default", "via", hosts.b4], check=True)
    mac = json.loads(
        subprocess.check_output(["ip", "-n", hosts.a, "-j", "link", "show", hosts.veth_a])
    )[0]["address"]
    server = hosts.peer(hosts.b, "tcp-server", str(TCP_PORT))
    wait_for_line(server.stdout, "ready")
    # DNS goes over a second link that adds 25 ms each way: a `dig` that exits the
    # moment its answer arrives is beyond any lookup, flood or not (README, Limitations)
    hosts.slow_link(0.025)
    dnsmasq = hosts.start(hosts.b, [
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file=",
        "--bind-interfaces", f"--listen-address={RESOLVER}", "--log-facility=-",
        "--address=/flood.test/198.18.5.1",
    ])  # fmt: skip
    wait_for_line(dnsmasq.stderr, "cleared cache")
    dig = ["dig", "+tries=1", "+time=2", f"@{RESOLVER}"]
    for _ in range(50):  # dnsmasq logs before its sockets answer
        probe = subprocess.run(["ip", "netns", "exec", hosts.a, *dig, "+short", "flood.test"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        if probe.stdout.strip() == "198.18.5.1":
            break
    pcap, dns_pcap = tmp_path / "legit.pcap", tmp_path / "dns.pcap"
    legit_only = f"host {hosts.b4} and tcp port {TCP_PORT}"
    witness = hosts.start(
        hosts.a, ["tcpdump", "-i", hosts.veth_a, "-n", "-U", "-s", "0", "-w", str(pcap), legit_only]
    )
    wait_for_line(witness.stderr, "listening on")
    dns_witness = hosts.tcpdump(hosts.a, SLOW_LINK, dns_pcap)
    observer = hosts.start(hosts.a, [sys.executable, OBSERVE, str(FLOOD_SECONDS + 8)])
    wait_for_line(observer.stderr, "ready")
    flood = ["syn", hosts.veth_b, mac, hosts.a4, str(FLOOD_PORT), str(FLOOD_SECONDS)]
    sender = hosts.start(hosts.b, [sys.executable, SENDER, *flood, str(FLOOD_PPS)])
    wait_for_line(sender.stderr, "ready")
    peak = 0.0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, rss_mib(observer.pid))
        time.sleep(0.2)
    client = hosts.peer(hosts.a, "tcp-client", "np-legit", hosts.b4, str(TCP_PORT), "300000", "0")
    legit = json.loads(client.communicate(timeout=60)[0])
    digs = []
    for name in ("flood.test", "a.flood.test", "b.flood.test"):
        asked = hosts.start(hosts.a, [*dig, name])
        asked.communicate(timeout=30)
        digs.append(asked.pid)
    while sender.poll() is None and time.monotonic() < deadline + FLOOD_SECONDS + 30:
        peak = max(peak, rss_mib(observer.pid))
        time.sleep(0.2)
    sent = int(sender.communicate(timeout=30)[0])
    out, err = observer.communicate(timeout=60)
    assert observer.returncode == 0, err
    assert "Traceback" not in err
    stop_tcpdump(witness)
    stop_tcpdump(dns_witness)
    snapshot: dict[str, Any] = json.loads(out)
    health = snapshot["health"]
    packets = tcpdump_packets(pcap)

    def wire(local: str, lport: int, remote: str, rport: int) -> dict[str, int]:
        mine = [
            p for p in packets if (p.src, p.sport, p.dst, p.dport) == (local, lport, remote, rport)
        ]
        theirs = [
            p for p in packets if (p.src, p.sport, p.dst, p.dport) == (remote, rport, local, lport)
        ]
        return {"rx_bytes": sum(p.length for p in theirs), "tx_bytes": sum(p.length for p in mine),
                "rx_packets": len(theirs), "tx_packets": len(mine)}  # fmt: skip

    rows = {(row["process"] or {}).get("pid"): row for row in snapshot["processes"]}
    expected = wire(str(legit["local"]), int(legit["lport"]), hosts.b4, TCP_PORT)
    assert expected["tx_bytes"] > 300_000
    assert rows[legit["pid"]]["process"]["name"] == "np-legit"
    assert rows[legit["pid"]]["total"] == expected
    dns_wire = sum(p.length for p in tcpdump_packets(dns_pcap) if 53 in (p.sport, p.dport))
    dns_rows = [rows[pid] for pid in digs]
    assert all(row["process"]["name"] == "dig" for row in dns_rows)
    assert sum(r["total"]["rx_bytes"] + r["total"]["tx_bytes"] for r in dns_rows) == dns_wire
    logged = [q for q in snapshot["dns"]["queries"] if q["name"].endswith("flood.test")]
    assert [(q["process"]["pid"], q["response"]) for q in logged[-3:]] == [
        (pid, "198.18.5.1") for pid in digs
    ]
    # the flood: one row, no flow each; every byte in some process row
    top = health["floods"][0]
    assert (top["proto"], top["lport"], top["process"]) == (6, FLOOD_PORT, None)
    assert top["total"]["rx_packets"] >= sent // 2 - health["kernel_drops"]
    assert top["sources"] > 1000
    # until the flood is recognised its flows keep rows: at most one bucket of them
    assert len(snapshot["connections"]) <= PRESSURE_PER_SECOND + 10
    counted = sum(r["total"]["rx_bytes"] + r["total"]["tx_bytes"] for r in snapshot["processes"])
    assert counted == health["bytes"]
    assert 0 < peak <= MAX_RSS_MIB
