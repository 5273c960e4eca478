"""Snapshot.filtered (process name keeps everything, remote address or domain
keeps matching connections with recomputed totals, case-insensitive),
by_traffic ordering, and the Traffic and CaptureHealth helpers."""

from __future__ import annotations

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, ProcessRef, parse_addr
from netoproc.snapshot import CaptureHealth, ConnectionRow, ProcessRow, Rows, Snapshot, Traffic

FIREFOX = ProcessRef(10, "Firefox")
CURL = ProcessRef(20, "curl")
DIG = ProcessRef(30, "dig")


def row(
    process: ProcessRef | None,
    remote: str,
    total: Traffic,
    *,
    lport: int = 50000,
    proto: int = IPPROTO_TCP,
    rate: float = 0.0,
    domain: str | None = None,
) -> ConnectionRow:
    return ConnectionRow(
        process=process,
        unknown_reason=None,
        proto=proto,
        iface="eth0",
        laddr=parse_addr("192.0.2.1"),
        lport=lport,
        raddr=parse_addr(remote),
        rport=443,
        state="ESTABLISHED",
        direction="Out",
        total=total,
        rx_rate=rate,
        tx_rate=rate / 2,
        first_seen=0.0,
        last_seen=1.0,
        domain=domain,
    )


CONNECTIONS = (
    row(FIREFOX, "140.82.121.4", Traffic(1000, 100, 10, 5), domain="GitHub.com"),
    row(FIREFOX, "8.8.8.8", Traffic(300, 30, 3, 1), lport=50001),
    row(CURL, "8.8.8.8", Traffic(50, 5, 1, 1), lport=50002, rate=8.0),
    row(CURL, "2001:DB8::AB", Traffic(70, 7, 1, 1), lport=50003, rate=2.0),
    row(CURL, "192.0.2.99", Traffic(9, 9, 1, 1), lport=50004),
    row(None, "8.8.4.4", Traffic(40, 0, 1, 0), lport=5353, proto=IPPROTO_UDP),
)
PROCESSES = (
    # totals include retired flows, so they exceed the sum of the connections
    ProcessRow(FIREFOX, Traffic(5000, 500, 50, 5), rx_rate=9.0, sockets=4, connections=2),
    ProcessRow(CURL, Traffic(200, 30, 4, 4), sockets=3, connections=3),
    ProcessRow(None, Traffic(40, 0, 1, 0)),
    ProcessRow(DIG, Traffic()),
)
SNAPSHOT = Snapshot(
    time=5.0, started=0.0, interval=1.0, processes=PROCESSES, connections=CONNECTIONS
)


def test_no_pattern_is_everything() -> None:
    assert SNAPSHOT.filtered(None) is SNAPSHOT
    assert SNAPSHOT.filtered("") is SNAPSHOT


def test_process_name_match_keeps_all_its_traffic_case_insensitively() -> None:
    snap = SNAPSHOT.filtered("fIREf")
    assert snap.processes == (PROCESSES[0],)
    assert snap.connections == CONNECTIONS[:2]


def test_remote_address_match_keeps_matching_connections_with_their_totals() -> None:
    snap = SNAPSHOT.filtered("8.8.")
    assert snap.connections == (CONNECTIONS[1], CONNECTIONS[2], CONNECTIONS[5])
    rows = {r.process: r for r in snap.processes}
    assert set(rows) == {FIREFOX, CURL, None}
    assert rows[FIREFOX].total == Traffic(300, 30, 3, 1)  # not the process's full total
    assert (rows[FIREFOX].connections, rows[FIREFOX].sockets) == (1, 1)
    assert (rows[CURL].total, rows[CURL].rx_rate, rows[CURL].tx_rate) == (
        Traffic(50, 5, 1, 1),
        8.0,
        4.0,
    )
    assert rows[None].total == Traffic(40, 0, 1, 0)


def test_ipv6_address_and_domain_match_case_insensitively() -> None:
    snap = SNAPSHOT.filtered("DB8::ab")
    assert snap.connections == (CONNECTIONS[3],)
    assert [(r.process, r.total) for r in snap.processes] == [(CURL, Traffic(70, 7, 1, 1))]
    snap = SNAPSHOT.filtered("github")
    assert snap.connections == (CONNECTIONS[0],)
    assert [(r.process, r.total) for r in snap.processes] == [(FIREFOX, Traffic(1000, 100, 10, 5))]


def test_name_and_address_matches_combine() -> None:
    snap = SNAPSHOT.filtered("C")  # curl by name, one Firefox connection by its domain
    assert snap.connections == (CONNECTIONS[0], *CONNECTIONS[2:5])
    curl, firefox = snap.processes
    assert curl == PROCESSES[1]
    assert (firefox.process, firefox.total) == (FIREFOX, Traffic(1000, 100, 10, 5))
    snap = SNAPSHOT.filtered("nothing-matches")
    assert (snap.processes, snap.connections) == ((), ())


def test_by_traffic_orders_by_bytes_then_pid_and_drops_silent_processes() -> None:
    same = Traffic(100, 0, 1, 0)
    snap = Snapshot(
        time=0.0,
        started=0.0,
        interval=1.0,
        processes=(
            ProcessRow(ProcessRef(9, "b"), same),
            ProcessRow(None, same),
            ProcessRow(ProcessRef(3, "z"), same),
            ProcessRow(ProcessRef(4, "big"), Traffic(50, 60, 1, 1)),
            ProcessRow(ProcessRef(1, "idle"), Traffic()),
        ),
    )
    assert [(r.pid, r.total.bytes) for r in snap.by_traffic()] == [
        (4, 110),
        (3, 100),
        (9, 100),
        (None, 100),
    ]


def test_traffic_sums_and_health_share() -> None:
    total = Traffic(1, 2, 3, 4) + Traffic(10, 20, 30, 40)
    assert (total, total.bytes, total.packets) == (Traffic(11, 22, 33, 44), 33, 77)
    assert CaptureHealth(bytes=200, unattributed_bytes=50).unattributed_share == 0.25
    assert CaptureHealth().unattributed_share == 0.0
    assert (ProcessRow(None, Traffic()).name, ProcessRow(None, Traffic()).pid) == ("unknown", None)


def test_rows_are_made_once_when_first_read_and_counted_without_being_made() -> None:
    made: list[int] = []

    def make() -> tuple[int, ...]:
        made.append(1)
        return (3, 1, 2)

    rows = Rows(3, make)
    assert len(rows) == 3 and made == []  # the status bar's count makes nothing
    assert list(rows) == [3, 1, 2] and rows[0] == 3 and rows[1:] == (1, 2)
    assert sorted(rows) == [1, 2, 3] and rows == (3, 1, 2)
    assert (3, 1, 2) == rows  # noqa: SIM300 (the tuple on the left: reflected equality)
    assert rows != (3, 1) and made == [1]


def test_rows_read_by_many_threads_at_once_are_the_same_objects() -> None:
    import threading

    started = threading.Barrier(8)
    made: list[int] = []

    def make() -> tuple[object, ...]:
        made.append(1)
        return tuple(object() for _ in range(1000))

    rows = Rows(1000, make)
    seen: list[tuple[object, ...]] = []

    def read() -> None:
        started.wait()
        seen.append(tuple(rows))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert made == [1] and len(seen) == 8
    assert all(all(a is b for a, b in zip(s, seen[0], strict=True)) for s in seen)


def test_a_snapshot_with_rows_filters_as_one_with_tuples() -> None:
    conns = (row(FIREFOX, "192.0.2.9", Traffic(10, 5, 1, 1)),
             row(CURL, "198.51.100.7", Traffic(3, 4, 1, 1)))  # fmt: skip
    procs = (ProcessRow(FIREFOX, Traffic(10, 5, 1, 1)), ProcessRow(CURL, Traffic(3, 4, 1, 1)))
    plain = Snapshot(time=1.0, started=0.0, interval=1.0, processes=procs, connections=conns)
    lazy = Snapshot(time=1.0, started=0.0, interval=1.0, processes=Rows(2, lambda: procs),
                    connections=Rows(2, lambda: conns))  # fmt: skip
    assert lazy == plain
    assert lazy.filtered("curl") == plain.filtered("curl")
    assert lazy.filtered("198.51") == plain.filtered("198.51")
