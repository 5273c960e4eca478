"""The DNS view: resolver statistics, the live query log, and `[no data]` with --no-dns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from netoproc.snapshot import DnsQueryRow, Snapshot
from netoproc.tui.app import MonitorApp, MonitorOptions, SnapshotArrived, make_app
from netoproc.tui.dns_view import QueryLog
from netoproc.tui.source import StaticSource
from tests.fixtures import T0, monitor_snapshot
from tests.tui.screen import screen_text

SnapCompare = Callable[..., bool]


def _app(snapshot: Snapshot | None = None) -> MonitorApp:
    return make_app(StaticSource(snapshot or monitor_snapshot()), MonitorOptions())


def test_snapshot_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24), press=["4"])


def test_snapshot_large(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48), press=["4"])


def test_snapshot_no_dns(snap_compare: SnapCompare) -> None:
    no_dns = dataclasses.replace(monitor_snapshot(), dns=None)
    assert snap_compare(_app(no_dns), terminal_size=(80, 24), press=["4"])


async def test_the_log_follows_new_queries_until_the_user_scrolls_up() -> None:
    first = monitor_snapshot()
    assert first.dns is not None
    later = dataclasses.replace(
        first,
        dns=dataclasses.replace(
            first.dns,
            queries=(
                *first.dns.queries,
                DnsQueryRow(T0 + 9, None, "late.example", "A", "192.0.2.8", "NOERROR", 3.0,
                            "192.168.1.1", "en0"),
            ),
        ),
    )  # fmt: skip
    app = make_app(StaticSource(first), MonitorOptions())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("4")
        log = app.query_one(QueryLog)
        assert log.current is not None and log.current.name == "telemetry.example.com"
        app.post_message(SnapshotArrived(later))
        await pilot.pause()
        assert log.current is not None and log.current.name == "late.example"
        assert "Query log (6)" in screen_text(app)
        await pilot.press("up")
        app.post_message(SnapshotArrived(later))
        await pilot.pause()
        assert log.current is not None and log.current.name == "telemetry.example.com"
