"""The session: replaying capture files, and the live loop under faults.

Replays go through the whole pipeline and are checked against tcpdump; time
comes from the packets, so every run of a file gives the same snapshot.

The live loop runs its real threads over a scripted capture and platform
(real packets end to end are in tests/e2e): questions to the OS that fail
for a while and a wall clock that steps back an hour must leave it running
with exact totals.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import dns.message
import pytest

from netoproc.capture.records import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    InterfaceTable,
    RecordBlock,
    build_block,
)
from netoproc.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Direction,
    FlowKey,
    InterfaceInfo,
    NatEntry,
    OwnerSighting,
    ProcessRef,
    SocketInfo,
    UnknownReason,
    parse_addr,
)
from netoproc.session import GIL_SWITCH_SECONDS, LiveSession, Settings, replay
from netoproc.snapshot import Snapshot, Traffic
from tests import builders as b
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


# the live loop under faults ---------------------------------------------------------

ME, WEB, RESOLVER = "192.0.2.10", "198.51.100.7", "192.0.2.53"
OWNER = ProcessRef(4242, "np-app", "root")
QUERY = dns.message.make_query("example.com", "A", id=99)
ANSWER = dns.message.make_response(QUERY)
EXCHANGE = [  # (frame, direction): one request and its answer per block
    (b.ipv4(b.UDP, b.udp(40000, 9000, bytes(100)), src=ME, dst=WEB), Direction.TX),
    (b.ipv4(b.UDP, b.udp(9000, 40000, bytes(300)), src=WEB, dst=ME), Direction.RX),
]
DNS_QUERY = (b.ipv4(b.UDP, b.udp(53001, 53, QUERY.to_wire()), src=ME, dst=RESOLVER), Direction.TX)
DNS_ANSWER = (
    b.ipv4(b.UDP, b.udp(53, 53001, ANSWER.to_wire()), src=RESOLVER, dst=ME),
    Direction.RX,
)


class SteppingClock:
    """The system's clocks, except that the wall clock steps back an hour
    `after` seconds into the run (an NTP correction, a user's `date -s`)."""

    def __init__(self, after: float | None) -> None:
        self.start, self.after = time.monotonic(), after

    def now(self) -> float:
        stepped = self.after is not None and self.monotonic() - self.start >= self.after
        return time.time() - (3600.0 if stepped else 0.0)

    def monotonic(self) -> float:
        return time.monotonic()


class ScriptedCapture:
    """Delivers one block per read, stamped like the kernel stamps packets:
    with the wall clock of the moment."""

    def __init__(self, script: list[list[tuple[bytes, Direction]]], clock: SteppingClock) -> None:
        self.interfaces = InterfaceTable({2: "eth0"})
        self.script, self.clock = list(script), clock

    def read(self, timeout: float) -> list[RecordBlock]:
        time.sleep(min(timeout, 0.03))
        if not self.script:
            return []
        packets = self.script.pop(0)
        return [
            build_block(
                [b.ethernet(frame) for frame, _ in packets],
                ts=[self.clock.now()] * len(packets),
                linktype=LINKTYPE_ETHERNET,
                interfaces=self.interfaces,
                iface=2,
                direction=[int(direction) for _, direction in packets],
            )
        ]

    def drain(self) -> list[RecordBlock]:
        return []

    def wake(self) -> None:
        pass

    def kernel_drops(self) -> int:
        return 0

    def counts(self, wall_offset: float) -> None:
        return None

    def counting(self) -> tuple[str, str, int]:
        return "packets", "scripted", 0

    def close(self) -> None:
        pass


class FlakyPlatform:
    """A socket table that cannot be read for its first `failures` reads (a
    process vanishing mid-read, /proc briefly unreadable), and interface
    counters that fail every other time."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reads = 0

    def _table_read(self) -> None:
        self.reads += 1
        if self.reads <= self.failures:
            raise OSError("socket table briefly unreadable")

    def lookup(self, keys: Iterable[FlowKey]) -> dict[FlowKey, SocketInfo | None] | None:
        self._table_read()
        return {key: self._owner(key) for key in keys}

    def prefetch(self, flows: Iterable[tuple[int, int, int, int, int]]) -> None:
        pass

    fast_lane = False

    def sightings(self) -> list[OwnerSighting]:
        return []

    def owner_source(self) -> tuple[str, str, int]:
        return "sockets", "turned off", 0

    def translations(self, keys: Iterable[FlowKey]) -> dict[FlowKey, NatEntry | None]:
        return dict.fromkeys(keys)  # no translation here

    def socket_table(self) -> list[SocketInfo]:
        self._table_read()
        return [self._owner(FlowKey("eth0", IPPROTO_UDP, parse_addr(ME), 40000, 0, 0))]

    def _owner(self, key: FlowKey) -> SocketInfo:
        return SocketInfo(IPPROTO_UDP, key.laddr, key.lport, 0, 0, "UNCONN", owner=OWNER)

    def interfaces(self) -> list[InterfaceInfo]:
        self.reads += 1
        if self.reads % 2:
            raise OSError("no such device")
        return [InterfaceInfo("eth0", "Ethernet", True)]

    def resolvers(self) -> dict[str, tuple[str, ...]]:
        return {"eth0": (RESOLVER,)}

    def close(self) -> None:
        pass


def _live(script: list[list[tuple[bytes, Direction]]], clock: SteppingClock,
          platform: FlakyPlatform, seconds: float) -> tuple[Snapshot, float]:  # fmt: skip
    session = LiveSession(
        Settings(interval=0.05),
        clock,
        capture=ScriptedCapture(script, clock),
        platform=platform,
    )
    started = time.monotonic()
    try:
        snapshot = session.run(seconds)
    finally:
        session.close()
    return snapshot, time.monotonic() - started


def _expected(blocks: int) -> Traffic:
    tx, rx = (len(frame) for frame, _ in EXCHANGE)
    return Traffic(rx * blocks, tx * blocks, blocks, blocks)


def test_socket_table_unreadable_for_a_while() -> None:
    platform = FlakyPlatform(failures=4)
    snapshot, _ = _live([EXCHANGE] * 8, SteppingClock(None), platform, 0.6)
    (row,) = [p for p in snapshot.processes if p.process is not None]
    assert row.process == OWNER
    assert row.total == _expected(8)  # every byte, on the owner found once the table came back
    assert snapshot.health.platform_errors >= platform.failures
    assert [i.name for i in snapshot.interfaces] == ["eth0"]


def test_wall_clock_stepping_back_mid_run() -> None:
    script = [[*EXCHANGE, DNS_QUERY]] + [EXCHANGE] * 5 + [[*EXCHANGE, DNS_ANSWER]] + [EXCHANGE] * 5
    snapshot, took = _live(script, SteppingClock(after=0.15), FlakyPlatform(failures=0), 0.6)
    assert took < 2.0  # deadlines run on the monotonic clock
    (row,) = [p for p in snapshot.processes if p.process == OWNER]
    dns_traffic = Traffic(len(DNS_ANSWER[0]), len(DNS_QUERY[0]), 1, 1)
    assert row.total == _expected(12) + dns_traffic
    assert all(c.rx_rate >= 0 and c.tx_rate >= 0 for c in snapshot.connections)
    assert snapshot.dns is not None
    (query,) = snapshot.dns.queries
    assert (query.name, query.rcode) == ("example.com", "NOERROR")
    assert query.latency_ms is not None and query.latency_ms >= 0  # not an hour below zero


class OneSyn:
    """The fast lane's socket: one outgoing SYN, its first bytes only, as the kernel
    copies them, with the packet's whole length beside them."""

    def __init__(self) -> None:
        syn = b.ipv4(b.TCP, b.tcp(40001, 443, b"\0" * 1400, flags=b.SYN), src=ME, dst=RESOLVER)
        self.arrivals = [[(LINKTYPE_IPV4, syn[:64], len(syn), "eth0")]]

    def read(self, limit: int = 256) -> list[tuple[int, bytes, int, str]]:
        time.sleep(0.01)
        return self.arrivals.pop(0) if self.arrivals else []

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


class WatchingPlatform(FlakyPlatform):
    """Notes what the fast lane asked and how the interpreter was set meanwhile."""

    fast_lane = True

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.prefetched: list[tuple[int, int, int, int, int]] = []
        self.during: tuple[float, int] | None = None

    def prefetch(self, flows: Iterable[tuple[int, int, int, int, int]]) -> None:
        self.prefetched += flows
        self.during = (sys.getswitchinterval(), gc.get_freeze_count())


@pytest.mark.parametrize("fast_lane", [True, False])
def test_the_fast_lane_sets_the_interpreter_only_while_it_runs(fast_lane: bool) -> None:
    clock = SteppingClock(None)
    platform = WatchingPlatform()
    before = sys.getswitchinterval()
    session = LiveSession(
        Settings(interval=0.05),
        clock,
        capture=ScriptedCapture([EXCHANGE], clock),
        platform=platform,
        first_packets=OneSyn() if fast_lane else None,
    )
    try:
        session.run(0.3)
    finally:
        session.close()
    assert sys.getswitchinterval() == before
    assert gc.get_freeze_count() == 0
    if fast_lane:
        assert platform.during is not None
        assert platform.during[0] == pytest.approx(GIL_SWITCH_SECONDS) and platform.during[1] > 0
        # decoded with the packet's real length: a 64-byte prefix of a 1,460-byte SYN
        assert (
            IPPROTO_TCP,
            parse_addr(ME),
            40001,
            parse_addr(RESOLVER),
            443,
        ) in platform.prefetched
    else:
        assert platform.during is None
