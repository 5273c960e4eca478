"""Flows the kernel counted (Linux eBPF) meet the flows the packet path made."""

from __future__ import annotations

import numpy as np

from netoproc.capture.records import CounterBatch, FlowColumns, InterfaceTable, RttSamples
from netoproc.engine import Engine
from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, FlowKey, parse_addr
from netoproc.snapshot import Traffic
from tests.engine.frames import ETH0, INTERFACES, RX, SYN, TX, Pkt, batch, ip, sock, tcp

A, B = "192.0.2.1", "198.51.100.2"
T0 = 1_000.0


def _halves(text: str) -> tuple[int, int]:
    value = parse_addr(text)
    return value >> 64, value & ((1 << 64) - 1)


def counts(*rows: tuple[int, str, int, str, int, int, int, int, int], **tcp: int) -> CounterBatch:
    """Rows of (proto, local, lport, remote, rport, rx_bytes, tx_bytes, rx_packets, tx_packets)."""
    n = len(rows)

    def column(i: int) -> np.ndarray:
        return np.array([row[i] for row in rows], np.int64)

    l_hi, l_lo = zip(*(_halves(row[1]) for row in rows), strict=True)
    r_hi, r_lo = zip(*(_halves(row[3]) for row in rows), strict=True)
    key = FlowColumns(
        iface=np.full(n, ETH0, np.int64), proto=column(0),
        l_hi=np.array(l_hi, np.uint64), l_lo=np.array(l_lo, np.uint64), lport=column(2),
        r_hi=np.array(r_hi, np.uint64), r_lo=np.array(r_lo, np.uint64), rport=column(4),
    )  # fmt: skip
    return CounterBatch(
        key=key, rx_bytes=column(5), tx_bytes=column(6), rx_packets=column(7), tx_packets=column(8),
        first_ts=np.full(n, T0 + 0.5), last_ts=np.full(n, T0 + 0.9),
        retransmits=np.full(n, tcp.get("retransmits", 0), np.int64),
        segments_sent=np.full(n, tcp.get("segments", 0), np.int64),
        peer_retransmits=np.zeros(n, np.int64), dup_acks=np.full(n, tcp.get("dup_acks", 0)),
        interfaces=InterfaceTable(INTERFACES),
    )  # fmt: skip


def test_counts_and_packets_of_one_flow_add_up() -> None:
    """The SYN comes as a packet, the data as the kernel's counts: one flow."""
    engine = Engine(started=T0)
    new = engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 443, SYN)), T0, TX)))
    engine.attribute({k: sock(IPPROTO_TCP, A, 40000, B, 443, pid=7, name="curl") for k in new})
    again = engine.ingest_counts(
        counts((IPPROTO_TCP, A, 40000, B, 443, 5000, 800, 5, 10), segments=9, retransmits=2)
    )
    assert again == []  # the same flow: no new lookup
    snapshot = engine.tick(T0 + 1)
    (row,) = [r for r in snapshot.processes if r.pid == 7]
    assert row.total == Traffic(5000, 840, 5, 11)
    (conn,) = snapshot.connections
    assert conn.health is not None
    # the SYN is a segment too (the packet path counted it), the kernel counted nine
    assert (conn.health.packet_retransmits, conn.health.segments_sent) == (2, 10)
    assert snapshot.health.packets == 16 and snapshot.health.bytes == 5840


def test_a_flow_only_the_kernel_saw_is_looked_up_once() -> None:
    engine = Engine(started=T0)
    batch_ = counts((IPPROTO_UDP, A, 5000, B, 9, 0, 2800, 0, 100))
    key = FlowKey("eth0", IPPROTO_UDP, parse_addr(A), 5000, parse_addr(B), 9)
    assert engine.ingest_counts(batch_) == [key]
    assert engine.ingest_counts(batch_) == []
    rows = {r.pid: r.total for r in engine.tick(T0 + 1).processes}
    assert rows[None] == Traffic(0, 5600, 0, 200)


def test_the_kernels_rtt_samples_reach_the_flow() -> None:
    engine = Engine(started=T0)
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 443, SYN)), T0, TX)))
    l_hi, l_lo = _halves(A)
    r_hi, r_lo = _halves(B)

    def one(value: int | float, dtype: type[np.generic]) -> np.ndarray:
        return np.array([value, value], dtype)

    engine.add_rtt(RttSamples(
        key=FlowColumns(
            iface=one(ETH0, np.int64), proto=one(IPPROTO_TCP, np.int64),
            l_hi=one(l_hi, np.uint64), l_lo=one(l_lo, np.uint64), lport=one(40000, np.int64),
            r_hi=one(r_hi, np.uint64), r_lo=one(r_lo, np.uint64), rport=one(443, np.int64),
        ),
        rtt=np.array([0.030, 0.050]), at=np.array([T0 + 0.2, T0 + 0.4]),
    ))  # fmt: skip
    (conn,) = engine.tick(T0 + 1).connections
    assert conn.health is not None and conn.health.packet_rtt_ms is not None
    assert abs(conn.health.packet_rtt_ms - (30 + (50 - 30) / 8)) < 1e-9  # srtt, RFC 6298's 1/8
    assert abs((conn.jitter_ms or 0) - 10.0) < 1e-9  # their standard deviation


def test_received_packets_orient_as_the_packet_path_does() -> None:
    engine = Engine(started=T0)
    engine.ingest(batch(Pkt(ip(B, A, tcp(443, 40000, SYN | 0x10)), T0, RX)))
    engine.ingest_counts(counts((IPPROTO_TCP, A, 40000, B, 443, 900, 0, 3, 0)))
    (conn,) = engine.tick(T0 + 1).connections
    assert conn.total == Traffic(940, 0, 4, 0)
