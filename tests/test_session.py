"""Replaying capture files through the whole pipeline, checked against tcpdump.

The live session is covered end to end in tests/e2e; here time comes from
the packets, so every run of a file must give the same snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netoproc.model import UnknownReason
from netoproc.session import Settings, replay
from netoproc.snapshot import Snapshot
from tests.witness import tcpdump_packets

CAPTURES = Path(__file__).parent / "data" / "captures" / "tcpdump"
CLEAN = ["dns_tcp.pcap", "edns-opts.pcap", "ntp.pcap", "tcp-handshake-nano.pcap", "geneve.pcap"]


def _replay(name: str) -> Snapshot:
    snapshot, problem = replay(str(CAPTURES / name), duration=None, settings=Settings())
    assert problem is None
    return snapshot


@pytest.mark.parametrize("name", CLEAN)
def test_replay_totals_are_tcpdumps(name: str) -> None:
    packets = tcpdump_packets(CAPTURES / name)
    snapshot = _replay(name)
    assert snapshot.health.packets == len(packets)
    assert snapshot.health.bytes == sum(p.length for p in packets)
    (row,) = snapshot.by_traffic()  # a plain pcap names no processes
    assert row.process is None
    assert row.total.packets == len(packets)
    assert row.total.bytes == sum(p.length for p in packets)
    assert dict(row.unknown_reasons) == {
        str(UnknownReason.NO_PROCESS_INFO): sum(p.length for p in packets)
    }


def test_replay_is_deterministic() -> None:
    assert _replay("edns-opts.pcap") == _replay("edns-opts.pcap")


def test_duration_window_starts_at_the_first_packet() -> None:
    packets = tcpdump_packets(CAPTURES / "edns-opts.pcap")
    first = packets[0].ts
    window = 1.0
    # the window end is exclusive; skip the case where a packet sits on it
    inside = [p for p in packets if p.ts < first + window]
    assert 0 < len(inside) < len(packets)
    snapshot, _ = replay(str(CAPTURES / "edns-opts.pcap"), duration=window, settings=Settings())
    assert snapshot.health.packets == len(inside)
    assert snapshot.health.bytes == sum(p.length for p in inside)


def test_interface_filter_on_replay() -> None:
    name = "LINKTYPE_PKTAP.pcap"
    everything = _replay(name)
    assert everything.health.packets == 1
    (conn,) = everything.connections
    kept, _ = replay(str(CAPTURES / name), duration=None, settings=Settings(interface=conn.iface))
    other, _ = replay(str(CAPTURES / name), duration=None, settings=Settings(interface="nope0"))
    assert kept.health.packets == 1
    assert other.health.packets == 0
