"""Snapshot mode end to end, on real packets between two network namespaces.

netoproc runs in namespace `a` while named client processes there talk to
servers in namespace `b` over TCP/IPv4, TCP/IPv6 and UDP. tcpdump, capturing
on the same interface at the same time, is the witness: every process's
rx/tx bytes and packets must equal what tcpdump saw for that process's
flows, exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.witness import WirePacket, tcpdump_packets

pytestmark = pytest.mark.live

TCP_PORT = 5001
UDP_PORT = 5002


@pytest.fixture
def hosts(owner_source: str) -> Iterator[TwoHosts]:
    """Two hosts; every test here runs with owners from eBPF and from the fallback."""
    yield from two_hosts(f"{os.getpid() % 100000}")


def _totals(
    packets: list[WirePacket], local: str, lport: int, remote: str, rport: int
) -> dict[str, int]:
    out = {"rx_bytes": 0, "tx_bytes": 0, "rx_packets": 0, "tx_packets": 0}
    for p in packets:
        if (p.src, p.sport, p.dst, p.dport) == (local, lport, remote, rport):
            out["tx_bytes"] += p.length
            out["tx_packets"] += 1
        elif (p.src, p.sport, p.dst, p.dport) == (remote, rport, local, lport):
            out["rx_bytes"] += p.length
            out["rx_packets"] += 1
    return out


def _run_netoproc(hosts: TwoHosts, seconds: int, *extra: str):  # type: ignore[no-untyped-def]
    proc = hosts.netoproc(
        hosts.a, "--duration", str(seconds), "--format", "json", "--verbose", *extra
    )
    wait_for_line(proc.stderr, "capturing on")
    return proc


def _finish(proc) -> tuple[list[dict[str, object]], str]:  # type: ignore[no-untyped-def]
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out), err


def _by_name(rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {row["process"]: row for row in rows}


def test_three_processes_match_tcpdump_exactly(hosts: TwoHosts, tmp_path: Path) -> None:
    for server in (hosts.peer(hosts.b, "tcp-server", str(TCP_PORT)),
                   hosts.peer(hosts.b, "udp-server", str(UDP_PORT))):  # fmt: skip
        wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = _run_netoproc(hosts, 6)

    clients = {
        "np-tcp4": hosts.peer(
            hosts.a, "tcp-client", "np-tcp4", hosts.b4, str(TCP_PORT), "300000", "100"
        ),
        "np-tcp6": hosts.peer(
            hosts.a, "tcp-client", "np-tcp6", hosts.b6, str(TCP_PORT), "200000", "100"
        ),
        "np-udp": hosts.peer(hosts.a, "udp-client", "np-udp", hosts.b4, str(UDP_PORT), "50", "700"),
    }
    info = {}
    for name, client in clients.items():
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        info[name] = json.loads(out)
    rows, _ = _finish(netoproc)
    stop_tcpdump(witness)

    packets = tcpdump_packets(pcap)
    got = _by_name(rows)
    remotes = {"np-tcp4": (hosts.b4, TCP_PORT), "np-tcp6": (hosts.b6, TCP_PORT),
               "np-udp": (hosts.b4, UDP_PORT)}  # fmt: skip
    for name, (remote, rport) in remotes.items():
        expected = _totals(
            packets, str(info[name]["local"]), int(info[name]["lport"]), remote, rport
        )
        assert expected["tx_packets"] > 0 and expected["rx_packets"] > 0
        row = got[name]
        assert row["pid"] == info[name]["pid"]
        assert {k: row[k] for k in expected} == expected, name
    # the numbers are sorted by total traffic, largest first
    totals = [int(r["rx_bytes"]) + int(r["tx_bytes"]) for r in rows]  # type: ignore[call-overload]
    assert totals == sorted(totals, reverse=True)


def test_short_connections_are_attributed(hosts: TwoHosts, tmp_path: Path) -> None:
    server = hosts.peer(hosts.b, "tcp-server", str(TCP_PORT))
    wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = _run_netoproc(hosts, 14)
    client = hosts.peer(
        hosts.a, "short-conns", "np-short", hosts.b4, str(TCP_PORT), "100", "20000", "60"
    )
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    lports = json.loads(out)["lports"]
    assert len(set(lports)) == 100
    rows, _ = _finish(netoproc)
    stop_tcpdump(witness)

    packets = tcpdump_packets(pcap)
    total = sum(p.length for p in packets if p.dport == TCP_PORT or p.sport == TCP_PORT)
    row = _by_name(rows)["np-short"]
    attributed = int(row["rx_bytes"]) + int(row["tx_bytes"])  # type: ignore[call-overload]
    assert attributed >= 0.99 * total, (attributed, total)
    assert attributed <= total


def test_processes_that_live_50_ms_are_attributed(hosts: TwoHosts, tmp_path: Path) -> None:
    """Each client process connects, moves its data and exits within 50 ms; the
    first packet's immediate lookup must still find it, every time."""
    server = hosts.peer(hosts.b, "tcp-server", str(TCP_PORT))
    wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = _run_netoproc(hosts, 12)
    for _ in range(20):
        client = hosts.peer(hosts.a, "tcp-client", "np-brief", hosts.b4, str(TCP_PORT),
                            "5000", "50")  # fmt: skip
        _, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
    rows, err = _finish(netoproc)
    stop_tcpdump(witness)

    packets = tcpdump_packets(pcap)
    total = sum(p.length for p in packets if TCP_PORT in (p.dport, p.sport))
    brief = [row for row in rows if row["process"] == "np-brief"]
    attributed = sum(int(r["rx_bytes"]) + int(r["tx_bytes"]) for r in brief)  # type: ignore[call-overload]
    assert (len(brief), attributed) == (20, total), err


def test_loopback_counts_each_side_once(hosts: TwoHosts, tmp_path: Path) -> None:
    pcap = tmp_path / "lo.pcap"
    witness = hosts.tcpdump(hosts.a, "lo", pcap)
    netoproc = _run_netoproc(hosts, 4)
    pair = hosts.peer(hosts.a, "loop-pair", "np-send", "np-recv", "250000")
    out, err = pair.communicate(timeout=30)
    assert pair.returncode == 0, err
    info = json.loads(out)
    rows, _ = _finish(netoproc)
    stop_tcpdump(witness)

    packets = tcpdump_packets(pcap)  # libpcap shows each loopback packet once
    sent = _totals(packets, "127.0.0.1", info["lport"], "127.0.0.1", info["port"])
    got = _by_name(rows)
    sender, receiver = got["np-send"], got["np-recv"]
    assert sender["pid"] == info["sender"] and receiver["pid"] == info["receiver"]
    assert sent["tx_bytes"] > 250000
    # the sender's TX is the receiver's RX, and each is counted once
    assert (sender["tx_bytes"], sender["tx_packets"]) == (sent["tx_bytes"], sent["tx_packets"])
    assert (receiver["rx_bytes"], receiver["rx_packets"]) == (sent["tx_bytes"], sent["tx_packets"])
    assert (sender["rx_bytes"], sender["rx_packets"]) == (sent["rx_bytes"], sent["rx_packets"])
    assert (receiver["tx_bytes"], receiver["tx_packets"]) == (sent["rx_bytes"], sent["rx_packets"])
