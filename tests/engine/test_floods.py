"""Floods and scans fold into aggregate rows: totals stay exact, real flows keep
their rows, every table stays bounded, and each bound reached is counted."""

from __future__ import annotations

import numpy as np

from netoproc.engine import Engine
from netoproc.engine.attribution import SocketIndex
from netoproc.engine.floods import PRESSURE_PER_SECOND, DistinctCount, Floods
from netoproc.engine.grouping import FlowGroups
from netoproc.model import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, UnknownReason
from netoproc.snapshot import ANY_PORT, Snapshot, Traffic
from tests.engine.frames import (
    ACK,
    ICMP_HEADER,
    RST,
    RX,
    SYN,
    TCP4,
    TX,
    UDP4,
    Pkt,
    batch,
    icmp_echo,
    ip,
    sock,
    tcp,
    udp,
)

HOST = "192.0.2.1"
PEER = "198.51.100.7"


def spoofed(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def syn_flood(first: int, count: int, ts: float, port: int = 80, answer: int = 0) -> list[Pkt]:
    """SYNs from `count` spoofed sources; `answer` RST (refused) or SYN|ACK (half-open)."""
    packets = []
    for i in range(first, first + count):
        packets.append(Pkt(ip(spoofed(i), HOST, tcp(1024 + i % 60000, port, SYN)), ts, RX))
        if answer:
            packets.append(Pkt(ip(HOST, spoofed(i), tcp(port, 1024 + i % 60000, answer)), ts, TX))
    return packets


def legit(ts: float, payload: int) -> list[Pkt]:
    """An outbound connection of our own, with data both ways."""
    return [
        Pkt(ip(HOST, PEER, tcp(40000, 443, SYN)), ts, TX),
        Pkt(ip(PEER, HOST, tcp(443, 40000, SYN | ACK)), ts, RX),
        Pkt(ip(HOST, PEER, tcp(40000, 443, ACK, payload)), ts, TX),
        Pkt(ip(PEER, HOST, tcp(443, 40000, ACK, 2 * payload)), ts, RX),
    ]


def everything(snapshot: Snapshot) -> Traffic:
    return sum((row.total for row in snapshot.processes), Traffic())


def test_a_spoofed_syn_flood_folds_into_one_row_and_every_byte_stays() -> None:
    engine = Engine(started=0.0)
    sent = 0
    for second in range(4):
        packets = syn_flood(second * 1000, 1000, float(second), answer=RST | ACK)
        packets += legit(float(second), 100) if second == 0 else []
        engine.ingest(batch(*packets))
        sent += len(packets)
    engine.update_sockets([sock(IPPROTO_TCP, HOST, 40000, PEER, 443, pid=5, name="curl")])
    snapshot = engine.tick(4.0)
    # the first batch went over the bound: from it on, nothing of the flood is a flow
    assert len(engine.flows) == 1
    assert everything(snapshot).packets == sent == snapshot.health.packets
    assert everything(snapshot).bytes == snapshot.health.bytes
    (flood,) = snapshot.health.floods
    assert (flood.iface, flood.proto, flood.lport) == ("eth0", IPPROTO_TCP, 80)
    assert flood.total == Traffic(4000 * TCP4, 4000 * TCP4, 4000, 4000)
    assert not flood.sources_exact  # past 1,024: the estimate
    assert abs(flood.sources - 4000) <= 4000 * 0.05
    assert flood.process is None and flood.reason == str(UnknownReason.FLOOD)
    (curl,) = [row for row in snapshot.processes if row.name == "curl"]
    assert curl.total == Traffic((TCP4 * 2 + 200), TCP4 * 2 + 100, 2, 2)
    (unknown,) = [row for row in snapshot.processes if row.process is None]
    assert dict(unknown.unknown_reasons) == {str(UnknownReason.FLOOD): 8000 * TCP4}


def test_below_the_pressure_bound_every_flow_keeps_its_row() -> None:
    engine = Engine(started=0.0)
    for second in range(3):
        engine.ingest(batch(*syn_flood(second * 100, PRESSURE_PER_SECOND // 2, float(second))))
    snapshot = engine.tick(3.0)
    assert len(engine.flows) == 3 * PRESSURE_PER_SECOND // 2
    assert snapshot.health.floods == ()


def test_a_burst_across_a_second_boundary_is_pressure() -> None:
    # 150 candidates at the end of one second and 150 at the start of the next:
    # under the bound in each second, over it within one
    engine = Engine(started=0.0)
    burst = 3 * PRESSURE_PER_SECOND // 4
    engine.ingest(batch(*syn_flood(0, burst, 0.99)))
    engine.ingest(batch(*syn_flood(burst, burst, 1.01)))
    assert len(engine.flows) == burst  # the first burst alone kept its rows
    assert engine.tick(1.1).health.floods[0].total.packets == burst


def test_pressure_ends_after_a_calm_spell() -> None:
    engine = Engine(started=0.0)
    engine.ingest(batch(*syn_flood(0, 1000, 0.0)))
    engine.ingest(batch(*syn_flood(5000, 10, 10.0)))
    assert len(engine.flows) == 0  # still under pressure: folded
    engine.ingest(batch(*syn_flood(6000, 10, 100.0)))
    assert len(engine.flows) == 10


def test_half_open_handshakes_of_a_listener_fold_into_its_process() -> None:
    engine = Engine(started=0.0)
    engine.update_sockets([sock(IPPROTO_TCP, "0.0.0.0", 80, state="LISTEN", pid=7, name="web")])
    engine.ingest(batch(*syn_flood(0, 1000, 0.0, answer=SYN | ACK)))
    # a real client of the listener, during the flood: its handshake folds, its data does not
    client = "203.0.113.9"
    engine.ingest(
        batch(
            Pkt(ip(client, HOST, tcp(5555, 80, SYN)), 1.0, RX),
            Pkt(ip(HOST, client, tcp(80, 5555, SYN | ACK)), 1.0, TX),
        )
    )
    engine.ingest(
        batch(
            Pkt(ip(client, HOST, tcp(5555, 80, ACK, 500)), 1.1, RX),
            Pkt(ip(HOST, client, tcp(80, 5555, ACK, 1500)), 1.1, TX),
        )
    )
    engine.update_sockets(
        [
            sock(IPPROTO_TCP, "0.0.0.0", 80, state="LISTEN", pid=7, name="web"),
            sock(IPPROTO_TCP, HOST, 80, client, 5555, pid=7, name="web"),
        ]
    )
    snapshot = engine.tick(2.0)
    (web,) = [row for row in snapshot.processes if row.name == "web"]
    assert web.total == everything(snapshot)  # every byte is the listener's
    assert web.total.packets == 2004
    (flood,) = snapshot.health.floods
    assert flood.process is not None and flood.process.pid == 7
    (conn,) = snapshot.connections
    assert conn.total == Traffic(TCP4 + 500, TCP4 + 1500, 1, 1)


def test_the_flow_table_is_bounded_and_says_so() -> None:
    engine = Engine(started=0.0, max_flows=100)
    engine.update_sockets([sock(IPPROTO_UDP, "0.0.0.0", 9999, pid=3, name="sender")])
    packets = [Pkt(ip(HOST, spoofed(i), udp(9999, 53, 10)), 0.5, TX) for i in range(300)]
    engine.ingest(batch(*packets))
    snapshot = engine.tick(1.0)
    assert len(engine.flows) == 100
    assert everything(snapshot) == Traffic(0, 300 * (UDP4 + 10), 0, 300)
    (full,) = snapshot.health.floods
    assert full.process is not None and full.process.pid == 3  # the socket bound on its port
    assert full.total.packets == 200
    assert dict(snapshot.health.limits) == {"flow table full (100): flows folded": 200}


def test_owner_lookups_are_rate_limited_and_the_rest_wait_for_the_table() -> None:
    engine = Engine(started=0.0)
    packets = [Pkt(ip(HOST, PEER, tcp(20000 + i, 443, SYN)), 0.0, TX) for i in range(2000)]
    asked = engine.ingest(batch(*packets))
    assert len(asked) == engine.floods.lookup_burst
    assert len(engine.flows) == 2000  # outbound SYNs are ours: never folded
    engine.update_sockets(
        [sock(IPPROTO_TCP, HOST, 20000 + i, PEER, 443, pid=4, name="c") for i in range(2000)]
    )
    snapshot = engine.tick(1.0)
    assert [row.name for row in snapshot.processes if row.total.packets] == ["c"]
    assert dict(snapshot.health.limits) == {
        "owner lookups deferred to the socket table": 2000 - engine.floods.lookup_burst
    }
    # a second later the bucket has refilled
    later = [Pkt(ip(HOST, PEER, tcp(30000 + i, 443, SYN)), 1.0, TX) for i in range(10)]
    assert len(engine.ingest(batch(*later))) == 10


def test_a_port_scan_uses_a_bounded_number_of_rows() -> None:
    engine = Engine(started=0.0)
    scanner = "203.0.113.66"
    packets = []
    for port in range(1, 1001):
        packets.append(Pkt(ip(scanner, HOST, tcp(61000, port, SYN)), 0.0, RX))
        packets.append(Pkt(ip(HOST, scanner, tcp(port, 61000, RST | ACK)), 0.0, TX))
    engine.ingest(batch(*packets))
    snapshot = engine.tick(1.0)
    floods = snapshot.health.floods
    assert len(engine.flows) == 0
    assert len(floods) == engine.floods.max_aggregates + 1
    (many,) = [row for row in floods if row.lport == ANY_PORT]
    assert many.ports == 1000 - engine.floods.max_aggregates
    assert all(row.sources == 1 and row.sources_exact for row in floods)
    assert sum(row.total.packets for row in floods) == 2000 == everything(snapshot).packets
    merged = 1000 - engine.floods.max_aggregates  # flows (a SYN and its RST each)
    assert dict(snapshot.health.limits) == {"flood rows past 128 ports: folded together": merged}


def test_a_udp_flood_on_a_closed_port_and_an_icmp_flood_fold() -> None:
    engine = Engine(started=0.0)
    engine.update_sockets([sock(IPPROTO_UDP, "0.0.0.0", 53, pid=2, name="dns")])
    packets = [Pkt(ip(spoofed(i), HOST, udp(i % 65000 + 1, 9, 20)), 0.0, RX) for i in range(600)]
    packets += [Pkt(ip(spoofed(i), HOST, icmp_echo(56)), 0.0, RX) for i in range(600)]
    packets += [Pkt(ip(HOST, spoofed(i), icmp_echo(56)), 0.0, TX) for i in range(600)]
    # a real question to the resolver's port, in the middle of it, keeps its flow
    packets += [Pkt(ip(PEER, HOST, udp(3333, 53, 30)), 0.0, RX)]
    engine.ingest(batch(*packets))
    snapshot = engine.tick(1.0)
    assert len(engine.flows) == 1
    by_proto = {row.proto: row for row in snapshot.health.floods}
    assert by_proto[IPPROTO_UDP].total == Traffic(600 * (UDP4 + 20), 0, 600, 0)
    assert by_proto[IPPROTO_UDP].lport == 9
    assert by_proto[IPPROTO_ICMP].total.packets == 1200
    assert by_proto[IPPROTO_ICMP].total.bytes == 1200 * (20 + ICMP_HEADER + 56)
    assert everything(snapshot).packets == 1801


def test_folded_flows_keep_no_tcp_state_and_ask_no_lookups() -> None:
    engine = Engine(started=0.0)
    asked = engine.ingest(batch(*syn_flood(0, 3000, 0.0, answer=RST | ACK)))
    assert asked == []
    assert engine.table.capacity == 1024  # never grew, nor did the TCP state with it


def test_distinct_count_is_exact_then_estimated() -> None:
    rng = np.random.default_rng(1)
    count = DistinctCount(exact=1000)
    values = rng.integers(0, 2**63, 900, dtype=np.uint64)
    count.add(values)
    count.add(values)  # the same again counts once
    assert (count.exact, count.count()) == (True, 900)
    for _ in range(20):
        count.add(rng.integers(0, 2**63, 10_000, dtype=np.uint64) * np.uint64(2) + np.uint64(1))
    assert not count.exact
    assert abs(count.count() - 200_900) <= 200_900 * 0.05


def test_the_folding_rows_stay_bounded_whatever_the_keys() -> None:
    floods = Floods(max_aggregates=4)
    n = 1000
    rng = np.random.default_rng(2)
    floods.fold_rows(
        iface=np.arange(n, dtype=np.int64) % 50,
        iface_name=lambda i: f"if{i}",
        proto=rng.integers(0, 256, n).astype(np.int64),
        lport=rng.integers(0, 65536, n).astype(np.int64),
        kind=np.zeros(n, np.int64),
        r_hi=np.zeros(n, np.uint64),
        r_lo=np.arange(n, dtype=np.uint64),
        traffic=(np.ones(n, np.int64), np.zeros(n, np.int64),
                 np.ones(n, np.int64), np.zeros(n, np.int64)),
        first_seen=np.zeros(n),
        last_seen=np.zeros(n),
        owner_of=lambda _i: (None, None),
    )  # fmt: skip
    _, rows = floods.tick(1.0)
    assert len(rows) <= 2 * 4 + 1
    assert sum(row.total.packets for row in rows) == n


def counted(n: int, *, lport: int, tx_packets: int) -> FlowGroups:
    """Per-flow counts as a counter source without packets gives them: one row a flow."""
    none = np.zeros(n, np.bool_)
    r_lo = np.arange(n, dtype=np.uint64) + np.uint64(0xFFFF0A000000)  # ::ffff:10.0.0.0 + i
    groups = FlowGroups(
        iface=np.ones(n, np.int64), proto=np.full(n, IPPROTO_UDP, np.int64),
        l_hi=np.zeros(n, np.uint64), l_lo=np.full(n, 0xFFFFC0000201, np.uint64),
        lport=np.full(n, lport, np.int64), r_hi=np.zeros(n, np.uint64), r_lo=r_lo,
        rport=np.arange(n, dtype=np.int64) % 60000 + 1024,
        rx_bytes=np.full(n, 100, np.int64), tx_bytes=np.full(n, 50 * tx_packets, np.int64),
        rx_packets=np.ones(n, np.int64), tx_packets=np.full(n, tx_packets, np.int64),
        first_ts=np.zeros(n), last_ts=np.zeros(n), transport=~none, syn_out=none, syn_in=none,
        closed=none, pid=np.full(n, -1, np.int64), row_group=np.zeros(0, np.int64),
        key_hash=np.arange(n, dtype=np.uint64),
    )  # fmt: skip
    return groups


def test_counted_flows_fold_by_the_same_rules_and_bounds() -> None:
    floods = Floods(max_flows=1000)
    index = SocketIndex([sock(IPPROTO_UDP, "0.0.0.0", 53, pid=2, name="dns")])
    # a UDP flood on a closed port, counted per flow: folded, every counter kept
    flood = counted(5000, lport=9, tx_packets=0)
    left, slots, kept = floods.fold_counted(
        flood, np.full(5000, -1, np.int64), index, 0, lambda _i: "eth0"
    )
    assert len(left) == len(slots) == 0 and not kept.any()
    # answered flows on the resolver's port are real: they keep rows, up to the bound
    answered = counted(1500, lport=53, tx_packets=1)
    left, slots, kept = floods.fold_counted(
        answered, np.full(1500, -1, np.int64), index, 0, lambda _i: "eth0"
    )
    assert len(left) == 1000 and kept.sum() == 1000 and (slots == -1).all()
    _, rows = floods.tick(1.0)
    by_port = {row.lport: row for row in rows}
    assert by_port[9].total == Traffic(500_000, 0, 5000, 0)
    assert by_port[9].process is None and by_port[9].reason == str(UnknownReason.FLOOD)
    assert by_port[53].total.packets == 1000  # 500 flows past the bound, 2 packets each
    assert by_port[53].process is not None and by_port[53].process.pid == 2
    assert floods.table_full == 500
