"""The Process view: columns, order, and what an expanded process lists."""

from __future__ import annotations

from collections.abc import Callable

from netoproc.model import IPPROTO_TCP, IPPROTO_UDP, SocketInfo, parse_addr
from netoproc.snapshot import ConnectionRow, ProcessRow, Traffic
from netoproc.tui.app import MonitorOptions, make_app
from netoproc.tui.order import Order, sort_rows
from netoproc.tui.process_view import SORTS, children
from netoproc.tui.source import StaticSource
from tests.fixtures import NODE, busy_snapshot, live_connection, monitor_snapshot

SnapCompare = Callable[..., bool]


def test_traffic_order_is_by_rate_then_bytes() -> None:
    rows = sort_rows(monitor_snapshot().processes, SORTS, Order())
    assert [r.name for r in rows] == ["firefox", "node", "curl", "unknown", "sshd", "idle"]


def test_every_sort_key_orders_the_unknown_row_without_error() -> None:
    processes = busy_snapshot(processes=20, connections=100).processes
    for index in range(len(SORTS)):
        for flipped in (False, True):
            assert len(sort_rows(processes, SORTS, Order(index, flipped))) == len(processes)


def test_children_are_connections_then_idle_sockets_in_fd_order() -> None:
    here = "192.0.2.1"
    conn = live_connection(NODE, here, 3000, "192.0.2.9", 50000, rx_rate=5, tx_rate=5,
                           total=Traffic(1, 1, 1, 1))  # fmt: skip
    sockets = [
        # the same connection as the socket table sees it: it lends its fd, no extra line
        SocketInfo(IPPROTO_TCP, parse_addr(here), 3000, parse_addr("192.0.2.9"), 50000,
                   "ESTABLISHED", inode=1, owner=NODE, fd=9),
        SocketInfo(IPPROTO_TCP, parse_addr("0.0.0.0"), 3000, 0, 0, "LISTEN", inode=2,
                   owner=NODE, fd=4),
        SocketInfo(IPPROTO_UDP, parse_addr("::"), 5353, 0, 0, "UNCONN", inode=3, owner=NODE),
        SocketInfo(IPPROTO_TCP, parse_addr(here), 3000, parse_addr("192.0.2.7"), 40000,
                   "ESTABLISHED", inode=4, owner=NODE, fd=12),  # idle: no traffic yet
    ]  # fmt: skip
    lines = children(NODE, ProcessRow(NODE, Traffic()), [conn], sockets)
    kinds = [
        (type(line.item).__name__, getattr(line.item, "fd", None), line.last) for line in lines
    ]
    assert kinds == [
        ("SocketInfo", 4, False),
        ("ConnectionRow", 9, False),
        ("SocketInfo", 12, False),
        ("SocketInfo", None, True),
    ]
    assert isinstance(lines[1].item, ConnectionRow) and lines[1].item.rx_rate == 5


def test_the_unknown_row_explains_its_bytes() -> None:
    row = ProcessRow(
        None, Traffic(45_000, 0, 30, 0), unknown_reasons=(("no local socket", 45_000),)
    )
    lines = children(None, row, [], [])
    assert [line.item for line in lines] == [("no local socket", 45_000)]


def _app(**options: object) -> object:
    return make_app(StaticSource(monitor_snapshot()), MonitorOptions(**options))  # type: ignore[arg-type]


def test_snapshot_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24))


def test_snapshot_large(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48))


def test_snapshot_expanded(snap_compare: SnapCompare) -> None:
    # firefox and node expanded; the cursor on node's listening socket
    keys = ["enter", "down", "down", "down", "down", "down", "enter", "down"]
    assert snap_compare(_app(), terminal_size=(120, 30), press=keys)
