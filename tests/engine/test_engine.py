"""The engine from packets to snapshots: exact IP-layer totals per flow and per
process, RX/TX orientation (known, inferred, loopback copies), fragments,
attribution and its unknown reasons, socket-table retries, rates, history,
retirement of idle flows, and connection direction."""

from __future__ import annotations

from netoproc.engine import Engine
from netoproc.engine.engine import OTHER_EXITED
from netoproc.engine.history import HISTORY_SECONDS
from netoproc.model import (
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ProcessRef,
    TcpKernelInfo,
    UnknownReason,
)
from netoproc.snapshot import ConnectionRow, ProcessRow, Snapshot, Traffic
from tests.engine.frames import (
    ACK,
    FIN,
    ICMP_HEADER,
    IPV4_HEADER,
    LO,
    RX,
    SYN,
    TCP4,
    TCP6,
    TX,
    UDP4,
    Pkt,
    addr,
    batch,
    icmp_echo,
    ip,
    sock,
    tcp,
    udp,
)

T0 = 1_000.0
A, B, C = "192.0.2.1", "198.51.100.2", "203.0.113.3"
A6, B6 = "2001:db8::1", "2001:db8::2"


def key(
    local: str, lport: int, remote: str, rport: int, proto: int = IPPROTO_TCP, iface: str = "eth0"
) -> FlowKey:
    return FlowKey(iface, proto, addr(local), lport, addr(remote), rport)


def conn(snap: Snapshot, k: FlowKey) -> ConnectionRow:
    (row,) = [
        c
        for c in snap.connections
        if FlowKey(c.iface, c.proto, c.laddr, c.lport, c.raddr, c.rport) == k
    ]
    return row


def proc(snap: Snapshot, pid: int | None) -> ProcessRow:
    """The row of `pid`; None: the unknown row."""
    (row,) = [p for p in snap.processes if (p.process is None if pid is None else p.pid == pid)]
    return row


def reasons(snap: Snapshot) -> dict[str, int]:
    return dict(proc(snap, None).unknown_reasons)


def test_exact_totals_per_flow_and_per_process() -> None:
    engine = Engine(started=T0)
    new = engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 443, SYN)), T0 + 0.1, TX),
            Pkt(ip(B, A, tcp(443, 40000, SYN | ACK)), T0 + 0.2, RX),
            Pkt(ip(A, B, tcp(40000, 443, ACK, payload=300)), T0 + 0.3, TX),
            Pkt(ip(B, A, tcp(443, 40000, ACK, payload=1400)), T0 + 0.4, RX),
            Pkt(ip(A, C, udp(5353, 53, payload=40)), T0 + 0.5, TX),
            Pkt(ip(C, A, udp(53, 5353, payload=120)), T0 + 0.6, RX),
            Pkt(ip(A6, B6, tcp(50000, 80, ACK, payload=60)), T0 + 0.7, TX),
        )
    )
    web, dns, web6 = key(A, 40000, B, 443), key(A, 5353, C, 53, IPPROTO_UDP), key(A6, 50000, B6, 80)
    assert sorted(new) == sorted([web, dns, web6])
    engine.attribute(
        {
            web: sock(IPPROTO_TCP, A, 40000, B, 443, pid=100, name="browser"),
            dns: sock(IPPROTO_UDP, A, 5353, C, 53, pid=200, name="resolver"),
            web6: sock(IPPROTO_TCP, A6, 50000, B6, 80, pid=100, name="browser"),
        }
    )
    snap = engine.tick(T0 + 1)

    assert conn(snap, web).total == Traffic(2 * TCP4 + 1400, 2 * TCP4 + 300, 2, 2)
    assert conn(snap, dns).total == Traffic(UDP4 + 120, UDP4 + 40, 1, 1)
    assert conn(snap, web6).total == Traffic(0, TCP6 + 60, 0, 1)
    browser = proc(snap, 100)
    assert browser.process == ProcessRef(100, "browser")
    assert browser.total == Traffic(2 * TCP4 + 1400, 2 * TCP4 + 300 + TCP6 + 60, 2, 3)
    assert proc(snap, 200).total == Traffic(UDP4 + 120, UDP4 + 40, 1, 1)
    assert (browser.rx_rate, browser.tx_rate) == (2 * TCP4 + 1400, 2 * TCP4 + 300 + TCP6 + 60)
    assert all(p.process is not None for p in snap.processes)  # nothing unattributed
    assert snap.health.packets == 7
    assert snap.health.bytes == 4 * TCP4 + 1700 + 2 * UDP4 + 160 + TCP6 + 60
    assert snap.health.unattributed_bytes == 0
    assert (conn(snap, web).first_seen, conn(snap, web).last_seen) == (T0 + 0.1, T0 + 0.4)


def test_unknown_directions_first_sender_local_and_kept_in_later_batches() -> None:
    engine = Engine(started=T0)
    assert engine.ingest(batch(Pkt(ip(A, B, udp(5000, 53, payload=10)), T0))) == [
        key(A, 5000, B, 53, IPPROTO_UDP)
    ]
    # the reply speaks first in its own batch, yet the existing flow decides
    assert engine.ingest(batch(Pkt(ip(B, A, udp(53, 5000, payload=90)), T0 + 1))) == []
    snap = engine.tick(T0 + 2)
    (row,) = snap.connections
    assert (row.laddr, row.lport, row.raddr, row.rport) == (addr(A), 5000, addr(B), 53)
    assert row.total == Traffic(UDP4 + 90, UDP4 + 10, 1, 1)


def test_unknown_direction_syn_ack_first_makes_the_receiver_local() -> None:
    engine = Engine(started=T0)
    new = engine.ingest(
        batch(
            Pkt(ip(B, A, tcp(443, 40000, SYN | ACK)), T0),
            Pkt(ip(A, B, tcp(40000, 443, ACK)), T0 + 0.1),
        )
    )
    assert new == [key(A, 40000, B, 443)]
    new = engine.ingest(batch(Pkt(ip(B, A, tcp(443, 40000, ACK, payload=500)), T0 + 0.2)))
    assert new == []
    flow = engine.flows[key(A, 40000, B, 443)]
    assert engine.table.traffic(flow.slot).rx_bytes == 2 * TCP4 + 500


def test_loopback_copies_make_two_flows_each_side_counted_once() -> None:
    lo = "127.0.0.1"
    request = ip(lo, lo, tcp(40000, 8080, ACK, payload=100))
    reply = ip(lo, lo, tcp(8080, 40000, ACK, payload=2000))
    engine = Engine(started=T0)
    new = engine.ingest(
        batch(
            Pkt(request, T0, TX, LO),
            Pkt(request, T0, RX, LO),
            Pkt(reply, T0 + 0.1, TX, LO),
            Pkt(reply, T0 + 0.1, RX, LO),
        )
    )
    client, server = key(lo, 40000, lo, 8080, iface="lo"), key(lo, 8080, lo, 40000, iface="lo")
    assert sorted(new) == sorted([client, server])
    engine.attribute(
        {
            client: sock(IPPROTO_TCP, lo, 40000, lo, 8080, pid=1, name="curl"),
            server: sock(IPPROTO_TCP, lo, 8080, lo, 40000, pid=2, name="server"),
        }
    )
    snap = engine.tick(T0 + 1)
    assert conn(snap, client).total == Traffic(TCP4 + 2000, TCP4 + 100, 1, 1)
    assert conn(snap, server).total == Traffic(TCP4 + 100, TCP4 + 2000, 1, 1)
    assert proc(snap, 1).total.bytes == proc(snap, 2).total.bytes == 2 * TCP4 + 2100


def test_fragments_join_their_flow_and_orphans_are_portless() -> None:
    engine = Engine(started=T0)
    first = ip(A, B, udp(5000, 4789, payload=32), ident=7, frag=0x2000)  # carries the ports
    later = ip(A, B, (IPPROTO_UDP, bytes(20)), ident=7, frag=5)  # offset 40 bytes
    orphan = ip(A, B, (IPPROTO_UDP, bytes(24)), ident=9, frag=3)  # its first fragment is lost
    flow, portless = key(A, 5000, B, 4789, IPPROTO_UDP), key(A, 0, B, 0, IPPROTO_UDP)
    assert engine.ingest(batch(Pkt(first, T0, TX))) == [flow]
    assert engine.ingest(batch(Pkt(later, T0 + 0.1, TX), Pkt(orphan, T0 + 0.2, TX))) == []
    # first and later fragment in one batch join too
    again_first = ip(A, B, udp(5000, 4789, payload=8), ident=8, frag=0x2000)
    again_later = ip(A, B, (IPPROTO_UDP, bytes(4)), ident=8, frag=2)
    assert engine.ingest(batch(Pkt(again_first, T0 + 1, TX), Pkt(again_later, T0 + 1, TX))) == []
    snap = engine.tick(T0 + 2)
    assert conn(snap, flow).total == Traffic(0, UDP4 + 32 + IPV4_HEADER + 20 + UDP4 + 8 + 24, 0, 4)
    assert conn(snap, portless).total == Traffic(0, IPV4_HEADER + 24, 0, 1)
    assert conn(snap, portless).unknown_reason == UnknownReason.NO_PORTS
    assert snap.health.portless == 1


def test_icmp_is_not_socket_traffic_and_never_looked_up() -> None:
    engine = Engine(started=T0)
    new = engine.ingest(
        batch(
            Pkt(ip(A, B, icmp_echo(56)), T0, TX),
            Pkt(ip(B, A, icmp_echo(56)), T0 + 0.01, RX),
        )
    )
    assert new == []
    snap = engine.tick(T0 + 1)
    (row,) = snap.connections
    assert row.proto == IPPROTO_ICMP
    assert row.unknown_reason == UnknownReason.NOT_SOCKET
    size = IPV4_HEADER + ICMP_HEADER + 56
    assert row.total == Traffic(size, size, 1, 1)
    assert reasons(snap) == {UnknownReason.NOT_SOCKET: 2 * size}


def test_without_process_lookups_only_capture_pids_attribute() -> None:
    engine = Engine(started=T0, process_lookups=False)
    new = engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 443)), T0, TX),
            Pkt(ip(A, B, tcp(40001, 443)), T0, TX, pid=321),
            names={321: "curl"},
        )
    )
    assert new == []
    snap = engine.tick(T0 + 1)
    assert conn(snap, key(A, 40000, B, 443)).unknown_reason == UnknownReason.NO_PROCESS_INFO
    assert conn(snap, key(A, 40001, B, 443)).process == ProcessRef(321, "curl")
    assert reasons(snap) == {UnknownReason.NO_PROCESS_INFO: TCP4}


def test_capture_pid_attributes_without_lookup_even_later() -> None:
    engine = Engine(started=T0)
    named, unnamed, late = key(A, 1, B, 443), key(A, 2, B, 443), key(A, 3, B, 443)
    new = engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(1, 443)), T0, TX, pid=50),
            Pkt(ip(A, B, tcp(2, 443)), T0, TX, pid=51),
            Pkt(ip(A, B, tcp(3, 443)), T0, TX),
            names={50: "Safari"},
        )
    )
    assert new == [late]
    engine.attribute({late: None})
    engine.ingest(batch(Pkt(ip(B, A, tcp(443, 3)), T0 + 1, RX, pid=52), names={52: "mail"}))
    assert engine.flows[named].owner == ProcessRef(50, "Safari")
    assert engine.flows[unnamed].owner == ProcessRef(51, "51")
    assert engine.flows[late].owner == ProcessRef(52, "mail")


def test_attribute_reasons_time_wait_is_closed_and_none_is_no_socket() -> None:
    engine = Engine(started=T0)
    closed, missing = key(A, 40000, B, 80), key(A, 40001, B, 80)
    engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 80, ACK, payload=10)), T0, TX),
            Pkt(ip(A, B, tcp(40001, 80, ACK, payload=500)), T0, TX),
        )
    )
    engine.attribute({closed: sock(IPPROTO_TCP, A, 40000, B, 80, "TIME_WAIT"), missing: None})
    snap = engine.tick(T0 + 1)
    assert conn(snap, closed).unknown_reason == UnknownReason.CLOSED
    assert conn(snap, missing).unknown_reason == UnknownReason.NO_SOCKET
    assert proc(snap, None).unknown_reasons == (
        (UnknownReason.NO_SOCKET, TCP4 + 500),
        (UnknownReason.CLOSED, TCP4 + 10),
    )
    assert snap.health.unattributed_bytes == 2 * TCP4 + 510


def test_update_sockets_retries_unknown_flows() -> None:
    engine = Engine(started=T0)
    late, pending, unowned = key(A, 1, B, 80), key(A, 2, B, 80), key(A, 3, B, 80)
    engine.ingest(batch(*(Pkt(ip(A, B, tcp(p, 80)), T0, TX) for p in (1, 2, 3))))
    engine.attribute({late: None, unowned: sock(IPPROTO_TCP, A, 3, B, 80)})  # pending: no answer
    assert engine.flows[unowned].reason == UnknownReason.NO_OWNER
    assert engine.flows[pending].reason == UnknownReason.PENDING

    engine.update_sockets([sock(IPPROTO_TCP, A, 1, B, 80, pid=9, name="late")])
    assert engine.flows[late].owner == ProcessRef(9, "late")
    assert engine.flows[pending].reason == UnknownReason.NO_SOCKET
    assert engine.flows[unowned].reason == UnknownReason.NO_OWNER  # kept while no answer

    engine.update_sockets([sock(IPPROTO_TCP, A, 3, B, 80, pid=4, fd=7)])
    assert engine.flows[unowned].owner == ProcessRef(4, "p4")
    assert conn(engine.tick(T0 + 1), unowned).fd == 7


def test_an_unchanged_table_keeps_its_index_and_still_retries_flows() -> None:
    engine = Engine(started=T0)
    table = [sock(IPPROTO_TCP, A, 1, B, 80, pid=9, name="p9")]
    engine.update_sockets(table)
    index = engine.sockets
    engine.ingest(batch(Pkt(ip(A, B, tcp(1, 80)), T0, TX)))
    engine.update_sockets(list(table))  # the same socket objects: the same index
    assert engine.sockets is index
    assert engine.flows[key(A, 1, B, 80)].owner == ProcessRef(9, "p9")
    engine.update_sockets([sock(IPPROTO_TCP, A, 1, B, 80, pid=9, name="p9")])  # equal, not same
    assert engine.sockets is not index


def test_accepted_not_yet_owned_socket_falls_back_to_its_listener() -> None:
    engine = Engine(started=T0)
    flow = key(A, 80, C, 50000)
    engine.ingest(batch(Pkt(ip(C, A, tcp(50000, 80, ACK, payload=100)), T0, RX)))
    engine.update_sockets(
        [
            sock(IPPROTO_TCP, A, 80, C, 50000),  # in the accept queue: no owner yet
            sock(IPPROTO_TCP, "0.0.0.0", 80, state="LISTEN", pid=10, name="nginx"),
        ]
    )
    snap = engine.tick(T0 + 1)
    assert conn(snap, flow).process == ProcessRef(10, "nginx")
    assert conn(snap, flow).direction == "In"  # the local port is a listener of the same process


def test_fresh_socket_table_refreshes_kernel_tcp_figures() -> None:
    engine = Engine(started=T0)
    flow = key(A, 40000, B, 443)
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 443)), T0, TX)))
    engine.attribute({flow: sock(IPPROTO_TCP, A, 40000, B, 443, pid=5, fd=3)})
    info = TcpKernelInfo(rtt_ms=12.5, rttvar_ms=1.0, total_retrans=2)
    engine.update_sockets(
        [sock(IPPROTO_TCP, A, 40000, B, 443, "FIN_WAIT1", pid=5, fd=3, tcp_info=info)]
    )
    row = conn(engine.tick(T0 + 1), flow)
    assert (row.state, row.rtt_ms, row.retransmits, row.fd) == ("FIN_WAIT1", 12.5, 2, 3)


def test_rates_are_bytes_since_last_tick_over_elapsed_time() -> None:
    engine = Engine(started=T0)
    flow = key(A, 5000, B, 53, IPPROTO_UDP)
    engine.ingest(batch(Pkt(ip(A, B, udp(5000, 53, payload=1000 - UDP4)), T0 + 0.5, TX)))
    assert conn(engine.tick(T0 + 2), flow).tx_rate == 500.0
    engine.ingest(batch(Pkt(ip(B, A, udp(53, 5000, payload=300 - UDP4)), T0 + 2.1, RX)))
    snap = engine.tick(T0 + 2.5)
    assert (conn(snap, flow).rx_rate, conn(snap, flow).tx_rate) == (600.0, 0.0)
    assert (proc(snap, None).rx_rate, proc(snap, None).tx_rate) == (600.0, 0.0)
    assert snap.interval == 0.5
    assert conn(engine.tick(T0 + 3.5), flow).rx_rate == 0.0


def test_clock_stepping_back_uses_the_nominal_interval() -> None:
    engine = Engine(started=T0, interval=0.5)
    flow = key(A, 5000, B, 53, IPPROTO_UDP)
    engine.ingest(batch(Pkt(ip(A, B, udp(5000, 53, payload=1000 - UDP4)), T0, TX)))
    snap = engine.tick(T0 - 5)
    assert (snap.interval, conn(snap, flow).tx_rate) == (0.5, 2000.0)
    engine.ingest(batch(Pkt(ip(A, B, udp(5000, 53, payload=100 - UDP4)), T0, TX)))
    snap = engine.tick(T0 - 5)  # two ticks at the same instant
    assert (snap.interval, conn(snap, flow).tx_rate) == (0.5, 200.0)


def test_process_history_keeps_the_last_sixty_ticks() -> None:
    engine = Engine(started=T0)
    snap = engine.tick(T0)
    for i in range(HISTORY_SECONDS + 10):
        engine.ingest(batch(Pkt(ip(A, B, udp(5000, 53, payload=i)), T0 + i + 0.5, TX)))
        snap = engine.tick(T0 + i + 1)
    expected = tuple(float(UDP4 + i) for i in range(10, HISTORY_SECONDS + 10))
    assert HISTORY_SECONDS == 60
    assert proc(snap, None).tx_history == expected
    assert proc(snap, None).rx_history == (0.0,) * 60


def test_idle_flows_retire_into_unchanged_process_totals() -> None:
    engine = Engine(started=T0, retire_after=300.0)
    owned, unowned = key(A, 1, B, 80), key(A, 2, B, 80)
    engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(1, 80, ACK, payload=100)), T0 + 1, TX),
            Pkt(ip(A, B, tcp(2, 80, ACK, payload=7)), T0 + 1, TX),
        )
    )
    engine.attribute({owned: sock(IPPROTO_TCP, A, 1, B, 80, pid=5), unowned: None})
    before = engine.tick(T0 + 300)  # idle for 299 s: kept
    assert len(before.connections) == 2
    assert len(engine.tick(T0 + 302).connections) == 2  # idle for 301 s: last shown, then retired
    after = engine.tick(T0 + 303)
    assert after.connections == ()
    assert engine.flows == {}
    assert proc(after, 5).total == proc(before, 5).total == Traffic(0, TCP4 + 100, 0, 1)
    assert proc(after, None).total == Traffic(0, TCP4 + 7, 0, 1)
    assert reasons(after) == reasons(before) == {UnknownReason.NO_SOCKET: TCP4 + 7}
    assert after.health == before.health
    # the retired flow no longer orients new packets: B speaking first is now local
    engine.ingest(batch(Pkt(ip(B, A, tcp(80, 1, ACK)), T0 + 304)))
    assert list(engine.flows) == [key(B, 80, A, 1)]


def test_a_syn_on_the_ports_of_a_closed_connection_opens_a_new_flow() -> None:
    """Ports come round again (a client's ephemeral port, two minutes later, to the
    same server): the new connection is looked up and counted on its own, maybe
    for another process; the old one's bytes stay with its owner."""
    engine = Engine(started=T0)
    k = key(A, 40000, B, 443)
    assert engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 443, SYN)), T0, TX),
            Pkt(ip(A, B, tcp(40000, 443, ACK, payload=100)), T0 + 0.1, TX),
            Pkt(ip(B, A, tcp(443, 40000, FIN | ACK)), T0 + 0.2, RX),
        )
    ) == [k]
    engine.attribute({k: sock(IPPROTO_TCP, A, 40000, B, 443, pid=5)})
    assert conn(engine.tick(T0 + 1), k).total == Traffic(TCP4, 2 * TCP4 + 100, 1, 2)
    # a SYN on a connection still open is a retransmission, not a new connection
    assert engine.ingest(batch(Pkt(ip(C, A, tcp(50000, 22, SYN)), T0 + 2, RX))) != []
    assert engine.ingest(batch(Pkt(ip(C, A, tcp(50000, 22, SYN)), T0 + 3, RX))) == []

    assert engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 443, SYN)), T0 + 120, TX),
            Pkt(ip(A, B, tcp(40000, 443, ACK, payload=7)), T0 + 120.1, TX),
        )
    ) == [k]
    engine.attribute({k: sock(IPPROTO_TCP, A, 40000, B, 443, pid=6)})
    snap = engine.tick(T0 + 121)
    row = conn(snap, k)
    assert (row.process, row.state, row.first_seen) == (
        ProcessRef(6, "p6"),
        "ESTABLISHED",
        T0 + 120,
    )
    assert row.total == proc(snap, 6).total == Traffic(0, 2 * TCP4 + 7, 0, 2)
    assert proc(snap, 5).total == Traffic(TCP4, 2 * TCP4 + 100, 1, 2)


def test_an_exited_process_keeps_its_totals_but_not_an_idle_history() -> None:
    engine = Engine(started=T0, retire_after=5.0)
    flow = key(A, 1, B, 80)
    engine.ingest(batch(Pkt(ip(A, B, tcp(1, 80, ACK, payload=100)), T0 + 0.5, TX)))
    engine.attribute({flow: sock(IPPROTO_TCP, A, 1, B, 80, pid=5)})
    first = engine.tick(T0 + 1)
    assert proc(first, 5).tx_history == (TCP4 + 100.0,)
    # the flow retires at 7 s; the process holds no socket: it has exited
    snaps = [engine.tick(T0 + t) for t in range(2, 70)]
    assert len(proc(snaps[4], 5).tx_history) == 6  # live: its history goes on
    rows = [proc(s, 5) for s in snaps[6:]]
    assert all(r.total == Traffic(0, TCP4 + 100, 0, 1) for r in rows)  # totals stay
    assert [len(r.tx_history) for r in rows[:2]] == [8, 9]  # the traffic is still in the minute
    assert rows[-1].tx_history == rows[-1].rx_history == ()  # an idle minute is dropped
    assert len(engine._history) == 0


def run_and_exit(engine: Engine, pid: int, name: str, at: float, payload: int = 100) -> None:
    """A process `name` moves one TCP segment at `at` and holds no socket after."""
    engine.ingest(batch(Pkt(ip(A, B, tcp(pid, 80, ACK, payload=payload)), at, TX)))
    engine.attribute({key(A, pid, B, 80): sock(IPPROTO_TCP, A, pid, B, 80, pid=pid, name=name)})


def test_exited_processes_past_the_kept_number_fold_into_one_row_per_name() -> None:
    engine = Engine(started=T0, retire_after=5.0, keep_exited=2)
    for i, (pid, name) in enumerate([(11, "curl"), (12, "curl"), (13, "dig"), (14, "curl")]):
        run_and_exit(engine, pid, name, T0 + i, payload=100 * (i + 1))
    live = sock(IPPROTO_TCP, A, 22, pid=20, name="sshd", state="LISTEN")
    engine.update_sockets([live])  # holds a socket, moves nothing: never folded
    before = engine.tick(T0 + 5)
    assert {p.pid for p in before.processes} == {11, 12, 13, 14, 20}
    # flows retire 5 s after their packet, in order: 11, 12, 13, 14
    snaps = [engine.tick(T0 + t) for t in range(6, 14)]
    after = snaps[-1]
    curl = [p for p in after.processes if p.exited]
    assert [(p.name, p.pid, p.exited, p.total) for p in curl] == [
        ("curl", None, 2, Traffic(0, 2 * TCP4 + 300, 0, 2))
    ]
    assert curl[0].exited_note == " (2 exited)"
    assert proc(after, 13).total == Traffic(0, TCP4 + 300, 0, 1)  # the two quiet last
    assert proc(after, 14).total == Traffic(0, TCP4 + 400, 0, 1)
    assert proc(after, 20).sockets == 1
    assert {p.pid for p in after.processes} == {None, 13, 14, 20}
    assert sum((p.total for p in after.processes), Traffic()) == sum(
        (p.total for p in before.processes), Traffic()
    )  # every byte is still in some row
    assert all(s.health == before.health for s in snaps)


def test_a_process_that_goes_quiet_again_is_kept_as_the_most_recent() -> None:
    engine = Engine(started=T0, retire_after=5.0, keep_exited=1)
    run_and_exit(engine, 11, "curl", T0)
    run_and_exit(engine, 12, "wget", T0 + 1)
    engine.tick(T0 + 6.5)  # both retire, 11 first
    engine.ingest(batch(Pkt(ip(A, B, tcp(11, 80, ACK, payload=1)), T0 + 7, TX)))  # 11 again
    engine.attribute({key(A, 11, B, 80): sock(IPPROTO_TCP, A, 11, B, 80, pid=11, name="curl")})
    snaps = [engine.tick(T0 + t) for t in range(8, 16)]
    # 12 went quiet at 6.5 s, 11 again at 13 s: 12 is the one folded
    assert [(p.name, p.exited) for p in snaps[-1].processes if p.exited] == [("wget", 1)]
    assert proc(snaps[-1], 11).total == Traffic(0, 2 * TCP4 + 101, 0, 2)


def test_exited_names_past_the_kept_number_fold_into_one_other_row() -> None:
    engine = Engine(started=T0, retire_after=5.0, keep_exited=1)
    for i, name in enumerate(["a", "b", "c", "d"]):
        run_and_exit(engine, 11 + i, name, T0 + i)
    snap = [engine.tick(T0 + t) for t in range(6, 12)][-1]
    folded = sorted((p.name, p.exited) for p in snap.processes if p.exited)
    assert folded == [("a", 1), (OTHER_EXITED, 2)]  # one name kept, then the rest as one
    assert proc(snap, 14).exited == 0
    assert sum(p.total.packets for p in snap.processes) == 4


def test_unknown_reasons_sum_bytes_per_reason() -> None:
    engine = Engine(started=T0)
    no_socket, closed = key(A, 1, B, 80), key(A, 2, B, 80)
    engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(1, 80, ACK, payload=1000)), T0, TX),
            Pkt(ip(B, A, tcp(80, 1, ACK, payload=1000)), T0, RX),
            Pkt(ip(A, B, tcp(2, 80, ACK, payload=10)), T0, TX),
            Pkt(ip(A, B, icmp_echo(300)), T0, TX),
            Pkt(ip(A, B, (IPPROTO_UDP, bytes(100)), ident=3, frag=10), T0, TX),
            Pkt(ip(A, B, tcp(3, 80)), T0, TX),  # never answered: still pending
        )
    )
    engine.attribute({no_socket: None, closed: sock(IPPROTO_TCP, A, 2, B, 80, "TIME_WAIT")})
    snap = engine.tick(T0 + 1)
    assert proc(snap, None).unknown_reasons == (
        (UnknownReason.NO_SOCKET, 2 * (TCP4 + 1000)),
        (UnknownReason.NOT_SOCKET, IPV4_HEADER + ICMP_HEADER + 300),
        (UnknownReason.NO_PORTS, IPV4_HEADER + 100),
        (UnknownReason.CLOSED, TCP4 + 10),
        (UnknownReason.PENDING, TCP4),
    )
    assert snap.health.unattributed_bytes == sum(b for _, b in proc(snap, None).unknown_reasons)


def test_direction_from_syn_evidence_and_from_listeners() -> None:
    engine = Engine(started=T0)
    out_syn, in_syn, served, client, other = (
        key(A, 40000, B, 443),
        key(A, 22, C, 50000),
        key(A, 8080, C, 50001),
        key(A, 40001, B, 8080),
        key(A, 9000, C, 50002),
    )
    engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(40000, 443, SYN)), T0, TX),
            Pkt(ip(C, A, tcp(50000, 22, SYN)), T0, RX),
            Pkt(ip(C, A, tcp(50001, 8080, ACK)), T0, RX),  # mid-connection: no SYN seen
            Pkt(ip(A, B, tcp(40001, 8080, ACK)), T0, TX),
            Pkt(ip(C, A, tcp(50002, 9000, ACK)), T0, RX),
        )
    )
    engine.update_sockets(
        [
            sock(IPPROTO_TCP, A, 8080, C, 50001, pid=7),
            sock(IPPROTO_TCP, "0.0.0.0", 8080, state="LISTEN", pid=7),
            sock(IPPROTO_TCP, A, 40001, B, 8080, pid=8),  # port 8080 is remote here
            sock(IPPROTO_TCP, A, 9000, C, 50002, pid=8),
            sock(IPPROTO_TCP, "::", 9000, state="LISTEN", pid=7),  # another process's listener
        ]
    )
    snap = engine.tick(T0 + 1)
    got = {k: conn(snap, k).direction for k in (out_syn, in_syn, served, client, other)}
    assert got == {out_syn: "Out", in_syn: "In", served: "In", client: "Out", other: "Out"}
    assert conn(snap, out_syn).state == "ESTABLISHED"  # no socket: from the SYN evidence


def test_process_rows_count_sockets_and_active_connections() -> None:
    engine = Engine(started=T0)
    engine.ingest(
        batch(
            Pkt(ip(A, B, tcp(1, 80)), T0, TX),  # idle for more than 10 s at the tick
            Pkt(ip(A, B, tcp(2, 80)), T0 + 15, TX),
            Pkt(ip(A, B, tcp(3, 80, FIN | ACK)), T0 + 15, TX),  # closed
        )
    )
    engine.update_sockets(
        [
            *(sock(IPPROTO_TCP, A, p, B, 80, pid=5) for p in (1, 2, 3)),
            sock(IPPROTO_UDP, "0.0.0.0", 5353, state="UNCONN", pid=5),
            sock(IPPROTO_UDP, "0.0.0.0", 68, state="UNCONN", pid=6, name="dhclient"),
        ]
    )
    snap = engine.tick(T0 + 16)
    assert (proc(snap, 5).sockets, proc(snap, 5).connections) == (4, 1)
    idle = proc(snap, 6)  # sockets, no traffic: listed, but not by traffic
    assert (idle.sockets, idle.total) == (1, Traffic())
    assert [r.pid for r in snap.by_traffic()] == [5]


def test_capture_health_counts_drops_and_bad_records() -> None:
    engine = Engine(started=T0)
    good = ip(A, B, udp(1, 2, payload=12))
    not_ip = bytes([0x50]) + bytes(39)  # IP version 5
    liar = good[:2] + (200).to_bytes(2, "big") + good[4:]  # IP length beyond the frame
    engine.ingest(batch(Pkt(good, T0, TX), Pkt(not_ip, T0), Pkt(liar, T0)))
    engine.note_capture_drops(kernel=3, queue=4)
    health = engine.tick(T0 + 1).health
    assert (health.packets, health.bytes) == (1, UDP4 + 12)
    counts = health.not_ip, health.malformed, health.kernel_drops, health.queue_drops
    assert counts == (1, 1, 3, 4)


def feed(engine: Engine) -> list[Snapshot]:
    """Ticks during which flows grow, change owner, close and retire."""
    web = key(A, 40000, B, 443)
    snaps = []
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 443, SYN)), T0, TX),
                        Pkt(ip(A, B, udp(5000, 53, payload=40)), T0 + 0.1, TX)))  # fmt: skip
    engine.attribute({web: sock(IPPROTO_TCP, A, 40000, B, 443, pid=5, fd=3)})
    snaps.append(engine.tick(T0 + 1))
    engine.ingest(batch(Pkt(ip(B, A, tcp(443, 40000, ACK, payload=900)), T0 + 1.5, RX)))
    engine.update_sockets([sock(IPPROTO_UDP, A, 5000, B, 53, pid=6)])
    snaps.append(engine.tick(T0 + 2))
    engine.ingest(batch(Pkt(ip(A, B, tcp(40000, 443, FIN | ACK)), T0 + 2.5, TX)))
    snaps.append(engine.tick(T0 + 3))
    snaps.extend(engine.tick(T0 + t) for t in (400, 401))  # both flows retire, after the first
    return snaps


def test_rows_read_late_are_the_rows_of_their_tick() -> None:
    early, late = Engine(started=T0), Engine(started=T0)
    read_at_once = []
    for snap in feed(early):
        read_at_once.append((tuple(snap.processes), tuple(snap.connections)))
    snaps = feed(late)  # read only after every later tick changed the engine
    read_late = [(tuple(snap.processes), tuple(snap.connections)) for snap in snaps]
    assert read_late == read_at_once
    assert [len(c) for _, c in read_late] == [2, 2, 2, 2, 0]
    assert conn(snaps[1], key(A, 5000, B, 53, IPPROTO_UDP)).process == ProcessRef(6, "p6")
    assert conn(snaps[0], key(A, 5000, B, 53, IPPROTO_UDP)).process is None
