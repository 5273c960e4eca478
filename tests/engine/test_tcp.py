"""Connection health from packets: handshake and data RTT samples (Karn's rule,
timestamp echo), jitter, retransmissions versus keep-alives and window probes,
duplicate ACKs, state across batches, and the kernel's figures preferred.

Every expectation comes from the segments the test writes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netoproc.engine import Engine
from netoproc.engine.tcp import TcpTracker
from netoproc.model import IPPROTO_TCP, FlowKey, ProcessRef, SocketInfo, TcpKernelInfo, parse_addr
from netoproc.snapshot import ConnectionRow, TcpHealth
from tests import builders as b
from tests.engine.frames import RX, TX, Pkt, batch

LOCAL, REMOTE = "192.0.2.1", "198.51.100.2"
LPORT, RPORT = 40000, 443
T0 = 1_800_000_000.0
SYN, ACK, FIN, PSH = b.SYN, b.ACK, b.FIN, b.PSH


def seg(
    t: float,
    direction: int,
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    payload: int = 0,
    *,
    window: int = 65535,
    ts: tuple[int, int] | None = None,
    lport: int = LPORT,
) -> Pkt:
    """A segment at T0 + t ms, sent (TX) or received (RX) by the local socket."""
    options = (
        b"\x01\x01\x08\x0a" + ts[0].to_bytes(4, "big") + ts[1].to_bytes(4, "big") if ts else b""
    )
    sport, dport = (lport, RPORT) if direction == TX else (RPORT, lport)
    src, dst = (LOCAL, REMOTE) if direction == TX else (REMOTE, LOCAL)
    body = b.tcp(sport, dport, bytes(payload), flags=flags, seq=seq, ack=ack, window=window,
                 options=options)  # fmt: skip
    return Pkt(b.ipv4(6, body, src=src, dst=dst), ts=T0 + t / 1000, direction=direction)


def health(engine: Engine, at_ms: float = 1000.0, lport: int = LPORT) -> TcpHealth:
    snapshot = engine.tick(T0 + at_ms / 1000)
    (row,) = [c for c in snapshot.connections if c.lport == lport]
    assert row.health is not None
    return row.health


def run(*batches: list[Pkt], lookups: bool = False) -> Engine:
    engine = Engine(started=T0, process_lookups=lookups)
    for packets in batches:
        engine.ingest(batch(*packets))
    return engine


def test_outbound_handshake_gives_one_rtt_sample() -> None:
    engine = run(
        [seg(0, TX, 100, flags=SYN), seg(48, RX, 900, 101, SYN | ACK), seg(48.1, TX, 101, 901)]
    )
    h = health(engine)
    assert (h.rtt_source, h.retransmits_source) == ("packets", "packets")
    assert h.rtt_ms == pytest.approx(48.0, abs=0.01)
    assert h.packet_rtt_ms == h.rtt_ms
    assert (h.retransmits, h.peer_retransmits, h.dup_acks) == (0, 0, 0)


def test_inbound_handshake_is_timed_from_our_syn_ack() -> None:
    engine = run(
        [seg(0, RX, 900, flags=SYN), seg(0.2, TX, 100, 901, SYN | ACK), seg(30.2, RX, 901, 101)]
    )
    assert health(engine).rtt_ms == pytest.approx(30.0, abs=0.01)


def test_data_samples_are_smoothed_like_tcp() -> None:
    batches = [[seg(0, TX, 100, flags=SYN), seg(10, RX, 900, 101, SYN | ACK)]]
    seq, t = 101, 10.0
    for rtt in (20.0, 40.0):  # one segment in flight at a time, acked after `rtt`
        batches.append([seg(t, TX, seq, 901, PSH | ACK, 1000), seg(t + rtt, RX, 901, seq + 1000)])
        seq += 1000
        t += rtt
    h = health(run(*batches))
    srtt = 10.0
    for sample in (20.0, 40.0):
        srtt += (sample - srtt) / 8
    assert h.rtt_ms == pytest.approx(srtt, abs=0.01)
    assert h.jitter_ms == pytest.approx(float(np.std([10.0, 20.0, 40.0])), abs=0.01)


def test_a_batch_times_few_round_trips_per_flow_and_none_stale() -> None:
    # four round trips in one batch: only the first is timed (batches come every few
    # ms, so that is plenty), and no probe is left open for a later, unrelated ACK
    packets, seq, t = [], 100, 0.0
    for rtt in (10.0, 20.0, 30.0, 40.0):
        packets += [seg(t, TX, seq, 1, PSH | ACK, 100), seg(t + rtt, RX, 1, seq + 100)]
        seq, t = seq + 100, t + rtt
    engine = run(packets, [seg(500, RX, 1, seq)])  # a late duplicate ACK for everything
    h = health(engine)
    assert h.rtt_ms == pytest.approx(10.0, abs=0.01)


def test_jitter_keeps_to_its_ten_seconds_days_into_a_run() -> None:
    tracker = TcpTracker()
    slot = np.array([3])
    tracker.add_samples(slot, np.array([0.010]), np.array([T0]))
    later = T0 + 3 * 86_400.0  # sample times are kept from an epoch moved once a day
    for i, rtt in enumerate((0.020, 0.030, 0.050)):
        tracker.add_samples(slot, np.array([rtt]), np.array([later + i * 4.0]))
    figures = tracker.figures_of(slot, later + 13.0)  # the 20 ms one is 13 s old
    assert figures.jitter_ms[0] == pytest.approx(10.0, abs=1e-4)  # 30 and 50 ms
    assert math.isnan(tracker.figures_of(slot, later + 30.0).jitter_ms[0])  # none recent


def test_rates_hold_past_four_billion_segments_and_days_into_a_run() -> None:
    tracker = TcpTracker()
    slot = np.array([5])
    start = 2**32 - 40  # marks keep counts modulo 2**32
    tracker.recent(slot, T0, np.array([0]), np.array([0]))  # the epoch: five days before
    for second in range(12):
        sent = np.array([start + 100 * second])
        seconds, resent, sent_since = tracker.recent(
            slot, T0 + 5 * 86_400 + second, sent // 50, sent
        )
    assert (seconds[0], sent_since[0]) == (pytest.approx(10.0, abs=0.01), 1000)
    assert resent[0] == (start + 1100) // 50 - (start + 100) // 50


def test_karns_rule_drops_samples_of_resent_segments() -> None:
    # the first data segment is lost and resent; its ACK times neither copy
    packets = [
        seg(0, TX, 100, 900, PSH | ACK, 500),
        seg(200, TX, 100, 900, PSH | ACK, 500),  # retransmission
        seg(210, RX, 900, 600),
    ]
    h = health(run(packets))
    assert h.rtt_ms is None
    assert h.retransmits == 1
    assert h.segments_sent == 2


def test_an_exact_timestamp_echo_times_even_a_resent_segment() -> None:
    packets = [
        seg(0, TX, 100, 900, PSH | ACK, 500, ts=(1000, 1)),
        seg(200, TX, 100, 900, PSH | ACK, 500, ts=(1200, 1)),  # resent, new TSval
        seg(215, RX, 900, 600, ts=(7, 1200)),  # echoes the resend's stamp... the probe's is 1000
    ]
    assert health(run(packets)).rtt_ms is None  # the echo is not the probe's: still ambiguous
    packets[-1] = seg(215, RX, 900, 600, ts=(7, 1000))  # the original copy arrived after all
    assert health(run(packets)).rtt_ms == pytest.approx(215.0, abs=0.01)


def test_retransmissions_are_counted_and_keep_alives_and_window_probes_are_not() -> None:
    packets = [
        seg(0, TX, 1000, 5000, PSH | ACK, 100),  # 1000..1100
        seg(1, TX, 1100, 5000, PSH | ACK, 100),  # 1100..1200
        seg(2, TX, 1050, 5000, PSH | ACK, 100),  # resends 1050..1150: a retransmission
        seg(3, RX, 5000, 1200),
        seg(4, TX, 1199, 5000, ACK, 1),  # keep-alive: one byte below the high-water mark
        seg(5, TX, 1199, 5000, ACK, 0),  # zero-length keep-alive
        seg(6, RX, 5000, 1200, window=0),  # the peer's window closes
        seg(7, TX, 1200, 5000, ACK, 1),  # a zero-window probe: new data
        seg(8, TX, 1200, 5000, ACK, 1),  # the probe again: not a retransmission
    ]
    h = health(run(packets))
    assert h.retransmits == 1
    assert h.segments_sent == 6  # everything that carried sequence space


def test_state_carries_across_batches() -> None:
    first = [seg(0, TX, 100, 900, PSH | ACK, 1000)]
    second = [seg(30, RX, 900, 1100), seg(31, TX, 100, 900, PSH | ACK, 1000)]  # ack, then a resend
    h = health(run(first, second))
    assert h.rtt_ms == pytest.approx(30.0, abs=0.01)
    assert h.retransmits == 1


def test_sequence_numbers_wrap() -> None:
    top = 2**32 - 300
    packets = [
        seg(0, TX, top, 1, PSH | ACK, 500),  # crosses zero
        seg(5, RX, 1, (top + 500) % 2**32),
        seg(6, TX, (top + 500) % 2**32, 1, PSH | ACK, 100),
        seg(7, TX, top + 100, 1, PSH | ACK, 100),  # resends from before the wrap
    ]
    h = health(run(packets))
    assert h.rtt_ms == pytest.approx(5.0, abs=0.01)
    assert h.retransmits == 1


def test_peer_retransmissions_and_duplicate_acks() -> None:
    packets = [
        seg(0, RX, 5000, 100, PSH | ACK, 100),
        seg(1, RX, 5000, 100, PSH | ACK, 100),  # the peer sends it again
        seg(2, RX, 5100, 150),  # pure ACKs, same ack and window: the 2nd and 3rd are duplicates
        seg(3, RX, 5100, 150),
        seg(4, RX, 5100, 150),
        seg(5, RX, 5100, 150, window=1000),  # a window update is not a duplicate
    ]
    h = health(run(packets))
    assert (h.peer_retransmits, h.dup_acks, h.retransmits) == (1, 2, 0)


def test_flows_in_one_batch_do_not_mix() -> None:
    a = [seg(0, TX, 100, 1, PSH | ACK, 10), seg(10, RX, 1, 110)]
    c = [seg(1, TX, 100, 1, PSH | ACK, 10, lport=41000), seg(51, RX, 1, 110, lport=41000)]
    engine = run([a[0], c[0], a[1], c[1]])
    assert health(engine).rtt_ms == pytest.approx(10.0, abs=0.01)
    assert health(engine, lport=41000).rtt_ms == pytest.approx(50.0, abs=0.01)


def test_retransmit_rate_and_share_over_the_last_ten_seconds() -> None:
    engine = Engine(started=T0, process_lookups=False)
    seq = 100
    for second in range(12):
        packets = [seg(second * 1000, TX, seq, 1, PSH | ACK, 100)]
        if second >= 8:
            packets.append(seg(second * 1000 + 1, TX, seq, 1, PSH | ACK, 100))  # resend each
        seq += 100
        engine.ingest(batch(*packets))
        h = health(engine, second * 1000 + 500)
    assert h.retransmits == 4
    # over the last 10 s: 4 resends among the 14 segments sent in ticks 2..11
    assert h.retransmit_percent == pytest.approx(100 * 4 / (10 + 4), abs=0.01)
    assert h.retransmit_rate == pytest.approx(4 / 10, abs=0.01)


def test_the_kernels_figures_win_and_the_packets_stay_beside_them() -> None:
    engine = run([seg(0, TX, 100, flags=SYN), seg(48, RX, 900, 101, SYN | ACK)], lookups=True)
    key = FlowKey("eth0", IPPROTO_TCP, parse_addr(LOCAL), LPORT, parse_addr(REMOTE), RPORT)
    owner = ProcessRef(7, "curl")
    sock = SocketInfo(IPPROTO_TCP, key.laddr, LPORT, key.raddr, RPORT, "ESTABLISHED", 99, 0,
                      owner, 3, TcpKernelInfo(47.5, 2.0, 3))  # fmt: skip
    engine.update_sockets([sock])
    snapshot = engine.tick(T0 + 1)
    (row,) = snapshot.connections
    assert isinstance(row, ConnectionRow)
    h = row.health
    assert h is not None
    assert (h.rtt_source, h.retransmits_source, h.rtt_ms, h.retransmits) == (
        "kernel", "kernel", 47.5, 3,
    )  # fmt: skip
    assert h.packet_rtt_ms == pytest.approx(48.0, abs=0.01)
    assert (row.rtt_ms, row.retransmits) == (47.5, 3)
    assert h.jitter_ms == 2.0  # no jitter of our own yet (one sample): the kernel's deviation


def test_udp_has_no_tcp_health() -> None:
    from tests.engine.frames import ip, udp

    engine = Engine(started=T0, process_lookups=False)
    engine.ingest(batch(Pkt(ip(LOCAL, REMOTE, udp(5000, 53, 10)), ts=T0, direction=TX)))
    (row,) = engine.tick(T0 + 1).connections
    assert (row.health, row.rtt_ms, row.retransmits) == (None, None, None)
    assert not math.isnan(row.total.bytes)
