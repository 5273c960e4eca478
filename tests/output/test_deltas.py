"""Deltas between ticks: what each row moved, with processes exiting, folding and coming back."""

from __future__ import annotations

from dataclasses import replace

from netoproc.model import ProcessRef
from netoproc.output.deltas import Deltas
from netoproc.snapshot import EXITED_PID, ProcessRow, Snapshot, Traffic
from tests.fixtures import T0, connection, monitor_snapshot

CURL = ProcessRef(10, "curl", "ann")
CURL2 = ProcessRef(11, "curl", "ann")
WGET = ProcessRef(12, "wget", "bob")


def snap(t: float, *rows: ProcessRow, **more: object) -> Snapshot:
    return Snapshot(time=T0 + t, started=T0, interval=1.0, processes=rows, **more)  # type: ignore[arg-type]


def folded(name: str, user: str, total: Traffic, count: int) -> ProcessRow:
    return ProcessRow(ProcessRef(EXITED_PID, name, user), total, exited=count)


def deltas_of(deltas: Deltas, snapshot: Snapshot) -> dict[str, Traffic]:
    interval = deltas.step(snapshot)
    return {f"{r.name}/{r.pid}": d for r, d in interval.processes}


def test_first_sight_is_the_total_then_increases() -> None:
    d = Deltas()
    assert deltas_of(d, snap(1, ProcessRow(CURL, Traffic(100, 10, 2, 1)))) == {
        "curl/10": Traffic(100, 10, 2, 1)
    }
    assert deltas_of(d, snap(2, ProcessRow(CURL, Traffic(150, 10, 3, 1)))) == {
        "curl/10": Traffic(50, 0, 1, 0)
    }
    assert d.step(snap(4, ProcessRow(CURL, Traffic(150, 10, 3, 1)))).seconds == 2.0


def test_folding_exited_processes_moves_nothing() -> None:
    d = Deltas()
    deltas_of(d, snap(1, ProcessRow(CURL, Traffic(100, 10, 2, 1)),
                      ProcessRow(CURL2, Traffic(7, 3, 1, 1))))  # fmt: skip
    # both curls fold into one row, and a new one appears with traffic of its own
    after = deltas_of(d, snap(2, folded("curl", "ann", Traffic(107, 13, 3, 2), 2)))
    assert after == {"curl/None": Traffic()}
    # a folded row that gains more than the rows that vanished: the rest is new
    deltas_of(d, snap(3, folded("curl", "ann", Traffic(107, 13, 3, 2), 2),
                      ProcessRow(CURL, Traffic(5, 5, 1, 1))))  # fmt: skip
    after = deltas_of(d, snap(4, folded("curl", "ann", Traffic(120, 18, 5, 3), 3)))
    assert after == {"curl/None": Traffic(8, 0, 1, 0)}


def test_past_the_name_cap_folding_goes_to_other() -> None:
    d = Deltas()
    deltas_of(d, snap(1, ProcessRow(WGET, Traffic(40, 4, 4, 4)),
                      folded("other", "", Traffic(1, 1, 1, 1), 1)))  # fmt: skip
    after = deltas_of(d, snap(2, folded("other", "", Traffic(41, 5, 5, 5), 2)))
    assert after == {"other/None": Traffic()}


def test_unknown_never_gives_back() -> None:
    d = Deltas()
    deltas_of(d, snap(1, ProcessRow(None, Traffic(100, 0, 1, 0))))
    # the pending bytes went to their process: unknown shrinks, nothing negative
    assert deltas_of(d, snap(2, ProcessRow(None, Traffic(40, 0, 1, 0))))["unknown/None"] == (
        Traffic()
    )
    assert deltas_of(d, snap(3, ProcessRow(None, Traffic(130, 0, 2, 0))))["unknown/None"] == (
        Traffic(30, 0, 1, 0)
    )


def test_a_flow_on_the_same_ports_again_is_new() -> None:
    d = Deltas()
    first = connection(CURL, "198.18.0.2", Traffic(500, 50, 5, 5))
    d.step(snap(1, connections=(first,)))
    again = replace(first, total=Traffic(20, 20, 1, 1), first_seen=T0 + 1.5)
    (pair,) = d.step(snap(2, connections=(again,))).connections
    assert pair[1] == Traffic(20, 20, 1, 1)


def test_dns_queries_are_reported_once_when_finished() -> None:
    d = Deltas()
    whole = monitor_snapshot()
    assert whole.dns is not None
    pending = replace(whole.dns.queries[0], rcode="", response="…")
    one = replace(whole, dns=replace(whole.dns, queries=(pending,)))
    assert d.step(one).dns == ()
    assert len(d.step(whole).dns) == len(whole.dns.queries)
    assert d.step(replace(whole, time=whole.time + 1)).dns == ()


MORE = Traffic(1000, 0, 1, 0)


def test_filter_keeps_deltas_by_name_or_by_connection() -> None:
    d = Deltas()
    start = monitor_snapshot()
    d.step(start)
    grown = replace(
        start,
        time=start.time + 1,
        processes=tuple(replace(p, total=p.total + MORE) for p in start.processes),
        connections=tuple(replace(c, total=c.total + MORE) for c in start.connections),
    )
    interval = d.step(grown)
    by_name = interval.filtered("curl")
    assert [(r.name, t) for r, t in by_name.processes] == [("curl", Traffic(1000, 0, 1, 0))]
    by_remote = interval.filtered("github.com")  # one firefox connection, by its domain
    assert [(r.name, t) for r, t in by_remote.processes] == [("firefox", Traffic(1000, 0, 1, 0))]
