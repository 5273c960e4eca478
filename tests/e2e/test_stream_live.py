"""`--format jsonl` end to end: a stream of live intervals, stopped by SIGTERM.

netoproc streams from namespace `a` at a 5 s interval while named clients
talk to servers in namespace `b`, tcpdump watching. The first client moves
its data before the first tick; the second after it, and SIGTERM follows at
once, so the second client's bytes reach the stream only in the last lines
netoproc writes as it stops. Every line must parse with jq; each process's
deltas must sum to tcpdump's count for its flows, exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import TwoHosts, stop_tcpdump, two_hosts, wait_for_line
from tests.witness import port_traffic, tcpdump_packets

pytestmark = pytest.mark.live

TCP_PORT = 5001
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"s{os.getpid() % 100000}")


def test_stream_deltas_match_tcpdump_and_survive_sigterm(hosts: TwoHosts, tmp_path: Path) -> None:
    server = hosts.peer(hosts.b, "tcp-server", str(TCP_PORT))
    wait_for_line(server.stdout, "ready")
    pcap = tmp_path / "witness.pcap"
    witness = hosts.tcpdump(hosts.a, hosts.veth_a, pcap)
    netoproc = hosts.netoproc(hosts.a, "--format", "jsonl", "--interval", "5", "--verbose")
    wait_for_line(netoproc.stderr, "capturing on all interfaces until stopped")
    started = time.monotonic()

    def exchange(name: str, size: int) -> dict[str, int]:
        client = hosts.peer(hosts.a, "tcp-client", name, hosts.b4, str(TCP_PORT), str(size), "50")
        out, err = client.communicate(timeout=30)
        assert client.returncode == 0, err
        info: dict[str, int] = json.loads(out)
        return info

    first = exchange("np-first", 200_000)
    time.sleep(max(0.0, 6.0 - (time.monotonic() - started)))  # the first tick has passed
    second = exchange("np-last", 150_000)
    netoproc.send_signal(signal.SIGTERM)  # well within the second interval
    out, err = netoproc.communicate(timeout=30)
    assert netoproc.returncode == 0, err
    time.sleep(1.5)  # tcpdump hands over its last packets within a second (its buffer timeout)
    stop_tcpdump(witness)
    packets = tcpdump_packets(pcap)

    parsed = subprocess.run(["jq", "-c", "."], input=out, capture_output=True, text=True,
                            timeout=30, check=True).stdout.splitlines()  # fmt: skip
    assert len(parsed) == len(out.splitlines()) >= 2
    lines = [json.loads(line) for line in parsed]
    for info, name in ((first, "np-first"), (second, "np-last")):
        mine = [line for line in lines if line["process"] == name]
        assert mine and {line["pid"] for line in mine} == {info["pid"]}
        expected = port_traffic(packets, hosts.a4, info["lport"])
        assert expected["tx_bytes"] > 150_000
        sums = {c: sum(line[f"{c}_delta"] for line in mine) for c in COUNTERS}
        assert sums == expected, name
        assert {c: mine[-1][c] for c in COUNTERS} == expected  # the totals, too
    last_times = {line["time"] for line in lines if line["process"] == "np-last"}
    first_times = {line["time"] for line in lines if line["process"] == "np-first"}
    assert min(last_times) > min(first_times)  # np-last came only in the final lines


def test_stream_for_a_duration_of_one_view_on_one_interface(hosts: TwoHosts) -> None:
    server = hosts.peer(hosts.b, "udp-server", "5002")
    wait_for_line(server.stdout, "ready")
    netoproc = hosts.netoproc(hosts.a, "--format", "jsonl", "--view", "interface", "--duration",
                              "3", "--interface", hosts.veth_a, "--verbose")  # fmt: skip
    wait_for_line(netoproc.stderr, "for 3 s")
    client = hosts.peer(hosts.a, "udp-client", "np-udp", hosts.b4, "5002", "20", "300")
    client.communicate(timeout=30)
    out, err = netoproc.communicate(timeout=30)
    assert netoproc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and {line["interface"] for line in lines} == {hosts.veth_a}
    assert {line["view"] for line in lines} == {"interface"}
    assert sum(line["tx_packets_delta"] for line in lines) == lines[-1]["tx_packets"] >= 20
