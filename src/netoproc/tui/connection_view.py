"""The Connection view: every flow of every process in one flat table.

Rates are coloured by the README's thresholds (green below 1 KB/s, yellow up
to 100 KB/s, red above). RTT and Retrans come from the kernel's TCP
figures when the platform has them, `-` otherwise. On a narrow terminal the
Container/Unit column (shown once a process has one) goes first, then Local,
then Dir; everything else always fits in 80 columns.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style

from netoproc.model import proto_name
from netoproc.output.text import printable, rate_text
from netoproc.snapshot import ConnectionRow, Snapshot
from netoproc.tui.cells import (
    DIM,
    endpoint,
    fit,
    milliseconds,
    rate_style,
    state_text,
)
from netoproc.tui.order import Order, SortKey, sort_rows
from netoproc.tui.table import GAP, Column, RowTable


def _name(row: ConnectionRow) -> str:
    return row.process.name if row.process else "unknown"


def _group(row: ConnectionRow) -> str:
    return row.process.group if row.process else ""


def _traffic(row: ConnectionRow) -> tuple[float, int]:
    return (row.rx_rate + row.tx_rate, row.total.bytes)


def _pid(row: ConnectionRow) -> int:
    return row.process.pid if row.process else 1 << 62


SORTS: tuple[SortKey[ConnectionRow], ...] = (
    SortKey("traffic", _traffic, descending=True, aliases=("connections",)),
    SortKey("process", lambda r: (_name(r).lower(), _pid(r)), aliases=("name",)),
    SortKey("pid", lambda r: (_pid(r), _traffic(r))),
    SortKey("group", lambda r: (_group(r) == "", _group(r).lower(), _name(r).lower(), _pid(r))),
    SortKey("local", lambda r: (r.laddr, r.lport)),
    SortKey("remote", lambda r: (r.raddr, r.rport)),
    SortKey("proto", lambda r: (r.proto, _traffic(r))),
    SortKey("state", lambda r: (r.state, _traffic(r))),
    SortKey("dir", lambda r: (r.direction, _traffic(r))),
    SortKey("iface", lambda r: (r.iface, _traffic(r))),
    SortKey("rx rate", lambda r: (r.rx_rate, r.total.rx_bytes), descending=True),
    SortKey("tx rate", lambda r: (r.tx_rate, r.total.tx_bytes), descending=True),
    # unknown RTTs after every known one, whichever the direction
    SortKey("rtt", lambda r: (r.rtt_ms is not None, r.rtt_ms or 0.0), descending=True),
    SortKey("retrans", lambda r: (r.retransmits is not None, r.retransmits or 0), descending=True),
)


class ConnectionTable(RowTable[ConnectionRow]):
    TITLE: ClassVar[str] = "Connection"
    SORTS: ClassVar[Sequence[SortKey[ConnectionRow]]] = SORTS
    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("Process", 7, most=20),
        Column("Container/Unit", 14, most=24, grow=2, drop=1),
        Column("Local", 21, most=47, grow=1, drop=2),
        Column("Remote", 19, most=47, grow=1),
        Column("Proto", 5),
        Column("State", 6, most=11),
        Column("Dir", 3, drop=3),
        Column("Iface", 5, most=10, grow=3),
        Column("RX Rate", 8, most=10, right=True, grow=4),
        Column("TX Rate", 8, most=10, right=True, grow=4),
        Column("RTT", 6, right=True),
        Column("Retrans", 7, right=True),
    )

    @property
    def keyboard_target(self) -> ConnectionTable:
        return self

    def position(self) -> str:
        return f"{self.cursor + 1}/{len(self.rows)}" if self.rows else ""

    def show(self, snapshot: Snapshot, order: Order) -> None:
        # the Container/Unit column only once some connection's process has one
        grouped = any(c.process and c.process.group for c in snapshot.connections)
        self.hide_columns(frozenset() if grouped else frozenset({1}))
        self.set_rows(sort_rows(snapshot.connections, SORTS, order))

    def row_key(self, row: ConnectionRow) -> Hashable:
        return (row.process, row.proto, row.iface, row.laddr, row.lport, row.raddr, row.rport)

    def render_row(self, row: ConnectionRow, widths: Sequence[int]) -> list[Segment]:
        cells: tuple[tuple[str, Style | None], ...] = (
            (printable(_name(row)), None if row.process else DIM),
            (printable(_group(row)) or "-", None if _group(row) else DIM),
            (endpoint(row.laddr, row.lport), None),
            (endpoint(row.raddr, row.rport), None),
            (proto_name(row.proto), None),
            ("", None),  # State: shortened to fit, below
            (row.direction, None),
            (printable(row.iface), None),
            (rate_text(row.rx_rate), rate_style(row.rx_rate)),
            (rate_text(row.tx_rate), rate_style(row.tx_rate)),
            (milliseconds(row.rtt_ms), None),
            ("-" if row.retransmits is None else str(row.retransmits), None),
        )
        segments = []
        for i, ((text, style), column, width) in enumerate(
            zip(cells, self.COLUMNS, widths, strict=True)
        ):
            if not width:
                continue
            shown = state_text(row.state, width) if i == 5 else fit(text, width, column.right)
            segments.append(Segment(" " * GAP + shown, style))
        return segments
