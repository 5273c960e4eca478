"""Connection health end to end, over an emulated slow and lossy link.

The link emulator adds a known delay, or drops a known share of packets;
a live session in namespace `a` watches a client there. The kernel's own
tcp_info for the client's socket, read by the client itself, is the witness.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.netns import TwoHosts, two_hosts, wait_for_line

pytestmark = pytest.mark.live

OBSERVE = str(Path(__file__).with_name("observe.py"))
SERVER = "198.18.1.2"  # across the emulated link
PORT = 5007


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts(f"h{os.getpid() % 100000}")


def observe(
    hosts: TwoHosts, seconds: float, client_args: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a client under a live session; returns (the client's report, its connection row)."""
    server = hosts.peer(hosts.b, "tcp-echo", SERVER, str(PORT))
    wait_for_line(server.stdout, "ready")
    observer = hosts.start(hosts.a, [sys.executable, OBSERVE, str(seconds)])
    wait_for_line(observer.stderr, "ready")
    client = hosts.peer(hosts.a, *client_args)
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    report = json.loads(out)
    out, err = observer.communicate(timeout=120)
    assert observer.returncode == 0, err
    rows = [
        c
        for c in json.loads(out)["connections"]
        if c["lport"] == report["lport"] and c["rport"] == PORT
    ]
    assert len(rows) == 1, rows
    return report, rows[0]


def test_rtt_over_a_50_ms_path(hosts: TwoHosts) -> None:
    hosts.slow_link(delay=0.025)  # each way: 50 ms round trip
    report, row = observe(hosts, 6, ["rtt-client", "np-rtt", SERVER, str(PORT), "20", "60"])
    health = row["health"]
    assert row["process"]["pid"] == report["pid"]
    assert health["packet_rtt_ms"] == pytest.approx(50.0, abs=5.0)
    assert report["rtt_ms"] == pytest.approx(50.0, abs=5.0)  # the kernel agrees with the link
    assert health["jitter_ms"] is not None
    assert health["jitter_ms"] < 5.0
    assert health["retransmits"] == health["packet_retransmits"] == 0


def test_retransmissions_on_a_lossy_path_match_the_kernels_count(hosts: TwoHosts) -> None:
    hosts.slow_link(delay=0.002, loss=0.02, seed=7)
    report, row = observe(hosts, 15, ["bulk-client", "np-bulk", SERVER, str(PORT), "3000000"])
    health = row["health"]
    assert report["total_retrans"] > 0
    assert abs(health["packet_retransmits"] - report["total_retrans"]) <= 2, (health, report)
    assert health["segments_sent"] > 2000
    assert health["peer_retransmits"] > 0  # the echo crossed the same lossy link
