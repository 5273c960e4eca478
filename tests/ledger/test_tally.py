"""Per-minute deltas from synthetic snapshots: every byte once, per-process sums exact."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from netoproc.ledger.tally import RETIRED, Counts, Key, Tally
from netoproc.model import ProcessRef
from netoproc.snapshot import EXITED_PID, ProcessRow, Traffic
from tests.ledger.synth import Desktop, conn, snap

CURL = ProcessRef(10, "curl", "alice")
FIREFOX = ProcessRef(20, "firefox", "alice")


def _sum(rows: Mapping[Key, Counts], process: str | None = None) -> Counts:
    out = [0, 0, 0, 0]
    for key, counts in rows.items():
        if process is None or key[0] == process:
            for i in range(4):
                out[i] += counts[i]
    return (out[0], out[1], out[2], out[3])


def test_a_flow_is_counted_by_its_growth_under_its_remote_name() -> None:
    tally = Tally()
    first = tally.advance(snap(1, [conn(CURL, Traffic(100, 10, 2, 1), domain="example.com")]))
    assert first == {("curl", "alice", "eth0", "example.com"): (100, 10, 2, 1)}
    second = tally.advance(snap(2, [conn(CURL, Traffic(250, 30, 4, 2), domain="example.com")]))
    assert second == {("curl", "alice", "eth0", "example.com"): (150, 20, 2, 1)}
    assert tally.advance(snap(3, [conn(CURL, Traffic(250, 30, 4, 2), domain="example.com")])) == {}


def test_without_a_name_the_remote_is_the_address() -> None:
    rows = Tally().advance(snap(1, [conn(CURL, Traffic(1, 0, 1, 0))]))
    assert list(rows) == [("curl", "alice", "eth0", "192.0.2.1")]


def test_a_retired_flow_moves_nothing_and_a_flow_ended_unseen_is_retired() -> None:
    tally = Tally()
    tally.advance(snap(1, [conn(CURL, Traffic(100, 0, 1, 0))]))
    # the flow retired into curl's total: nothing new happened
    assert tally.advance(snap(2, [], retired={CURL: Traffic(100, 0, 1, 0)})) == {}
    # a flow that grew and ended between two snapshots: only its growth, remote unknown
    tally.advance(snap(3, [conn(CURL, Traffic(50, 0, 1, 0), lport=1)],
                       retired={CURL: Traffic(100, 0, 1, 0)}))  # fmt: skip
    rows = tally.advance(snap(4, [], retired={CURL: Traffic(180, 0, 3, 0)}))
    assert rows == {("curl", "alice", "-", RETIRED): (30, 0, 1, 0)}


def test_a_flow_named_later_moves_its_bytes_and_sums_stay_exact() -> None:
    tally = Tally()
    a = tally.advance(snap(1, [conn(None, Traffic(100, 20, 2, 1))]))
    b = tally.advance(snap(2, [conn(CURL, Traffic(300, 20, 4, 1))]))
    assert a == {("unknown", "", "eth0", "192.0.2.1"): (100, 20, 2, 1)}
    assert b[("unknown", "", "eth0", "192.0.2.1")] == (-100, -20, -2, -1)
    assert b[("curl", "alice", "eth0", "192.0.2.1")] == (300, 20, 4, 1)
    total = [x + y for x, y in zip(_sum(a), _sum(b), strict=True)]
    assert total == [300, 20, 4, 1]
    assert _sum(a, "unknown")[0] + _sum(b, "unknown")[0] == 0


def test_folded_rows_are_never_counted_again() -> None:
    tally = Tally()
    tally.advance(snap(1, [], retired={CURL: Traffic(500, 5, 5, 1)}))
    folded = ProcessRow(ProcessRef(EXITED_PID, "curl", "alice"), Traffic(500, 5, 5, 1), exited=1)
    assert tally.advance(snap(2, [], folded=[folded])) == {}
    # the same process talks again: its row is back, with only the new traffic
    rows = tally.advance(snap(3, [conn(CURL, Traffic(7, 0, 1, 0))], folded=[folded]))
    assert rows == {("curl", "alice", "eth0", "192.0.2.1"): (7, 0, 1, 0)}


def test_a_reused_port_is_a_new_flow() -> None:
    tally = Tally()
    tally.advance(snap(1, [conn(CURL, Traffic(100, 0, 1, 0), first_seen=1.0)]))
    rows = tally.advance(snap(2, [conn(CURL, Traffic(40, 0, 1, 0), first_seen=2.0)],
                              retired={CURL: Traffic(130, 0, 2, 0)}))  # fmt: skip
    # the old flow's last 30 bytes (unseen growth) and the new flow's 40
    assert _sum(rows) == (70, 0, 2, 0)
    assert rows[("curl", "alice", "-", RETIRED)] == (30, 0, 1, 0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(0, 5), st.integers(1, 20))
def test_per_process_sums_equal_the_last_snapshot(ticks: int, churn: int, flows: int) -> None:
    desktop = Desktop(flows=flows, names=3, remotes=5, churn=min(churn, flows))
    tally = Tally()
    recorded: dict[str, list[int]] = {}
    last = None
    for i in range(ticks):
        last = desktop.tick(float(i))
        for key, counts in tally.advance(last).items():
            kept = recorded.setdefault(key[0], [0, 0, 0, 0])
            for j in range(4):
                kept[j] += counts[j]
    assert last is not None
    expected: dict[str, list[int]] = {}
    for row in last.processes:
        t = row.total
        kept = expected.setdefault(row.name, [0, 0, 0, 0])
        for j, v in enumerate((t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)):
            kept[j] += v
    assert recorded == {k: v for k, v in expected.items() if any(v)}
