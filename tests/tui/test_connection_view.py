"""The Connection view: its columns, the README's colours, what gives way when narrow."""

from __future__ import annotations

from collections.abc import Callable

from netoproc.snapshot import Traffic
from netoproc.tui.app import MonitorOptions, make_app
from netoproc.tui.cells import GREEN, RED, YELLOW
from netoproc.tui.connection_view import SORTS, ConnectionTable
from netoproc.tui.order import Order, sort_rows
from netoproc.tui.source import StaticSource
from netoproc.tui.table import layout
from tests.fixtures import CURL, busy_snapshot, live_connection, monitor_snapshot

SnapCompare = Callable[..., bool]


NO_GROUP = frozenset({1})  # the Container/Unit column, hidden while no process has one


def titles_at(width: int, hidden: frozenset[int] = NO_GROUP) -> list[str]:
    widths = layout(ConnectionTable.COLUMNS, width, hidden)
    return [c.title for c, w in zip(ConnectionTable.COLUMNS, widths, strict=True) if w]


def test_all_columns_show_from_106_cells_and_local_then_dir_give_way_below() -> None:
    everything = [c.title for c in ConnectionTable.COLUMNS if c.title != "Container/Unit"]
    assert titles_at(106) == everything
    assert "Local" not in titles_at(105) and "Dir" in titles_at(84)
    assert titles_at(80) == [t for t in everything if t not in ("Local", "Dir")]


def test_the_container_column_shows_when_wide_and_gives_way_first() -> None:
    everything = [c.title for c in ConnectionTable.COLUMNS]
    assert titles_at(121, frozenset()) == everything
    assert titles_at(120, frozenset()) == [t for t in everything if t != "Container/Unit"]


def test_rates_are_coloured_and_unknown_health_is_a_dash() -> None:
    row = live_connection(CURL, "192.0.2.1", 40000, "192.0.2.2", 443, rx_rate=500,
                          tx_rate=150_000, total=Traffic())  # fmt: skip
    table = ConnectionTable()
    widths = layout(table.COLUMNS, 160, NO_GROUP)
    segments = table.render_row(row, widths)
    by_text = {s.text.strip(): s.style for s in segments}
    assert by_text["500 B/s"] == GREEN and by_text["150 KB/s"] == RED
    assert [s.text.strip() for s in segments[-2:]] == ["-", "-"]  # RTT, Retrans
    row = live_connection(CURL, "192.0.2.1", 40000, "192.0.2.2", 443, rx_rate=5_000,
                          tx_rate=0, total=Traffic(), rtt_ms=12.0, retransmits=2)  # fmt: skip
    segments = table.render_row(row, widths)
    assert segments[7].style == YELLOW
    assert [s.text.strip() for s in segments[-2:]] == ["12ms", "2"]


def test_every_sort_key_works_with_missing_rtt_and_unknown_processes() -> None:
    connections = busy_snapshot(processes=10, connections=200).connections
    for index in range(len(SORTS)):
        assert len(sort_rows(connections, SORTS, Order(index))) == 200


def _app() -> object:
    return make_app(StaticSource(monitor_snapshot()), MonitorOptions())


def test_snapshot_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24), press=["2"])


def test_snapshot_large(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48), press=["2"])
