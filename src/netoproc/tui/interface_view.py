"""The Interface view: one card per network interface (README, "Monitor mode").

A card is ten lines: a top border carrying the name, the kind and UP/DOWN;
the addresses and DNS servers; RX and TX sparklines of bytes per minute
(up to 60 minutes, as wide as the card allows) with the current rate and
the total since start; packets and errors; the bottom border. Cards are
built a line at a time as they scroll into view, at the width of the
terminal.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from netoproc.output.text import decimal_size, printable, rate_text
from netoproc.snapshot import InterfaceRow, Snapshot
from netoproc.tui.cells import (
    BOLD,
    DIM,
    GREEN,
    RED,
    count,
    fit,
    rate_style,
    sparkline,
)
from netoproc.tui.order import Order, SortKey, sort_rows
from netoproc.tui.table import RowTable

CARD_LINES = 11  # ten lines of card and a blank line after it
HISTORY_MINUTES = 60
SPARK = Style(color="cyan")
BORDER = DIM

SORTS: tuple[SortKey[InterfaceRow], ...] = (
    SortKey("name", lambda r: r.name),
    SortKey("traffic", lambda r: (r.rx_rate + r.tx_rate, r.total.bytes), descending=True),
)

Parts = list[tuple[str, Style | None]]


def _boxed(parts: Parts, width: int) -> list[Segment]:
    """`│ parts │`, the parts cut or padded to the inside of a card `width` wide."""
    room = max(0, width - 2)
    segments = [Segment("│", BORDER)]
    for text, style in parts:
        if room <= 0:
            break
        length = cell_len(text)
        if length > room:
            text, length = fit(text, room), room
        segments.append(Segment(text, style))
        room -= length
    segments.append(Segment(" " * room))
    segments.append(Segment("│", BORDER))
    return segments


def _top(row: InterfaceRow, width: int) -> list[Segment]:
    name = printable(row.name)
    title = f"{name} ({printable(row.kind)})" if row.kind else name
    status, status_style = (" UP ", GREEN) if row.up else (" DOWN ", RED)
    title = fit(title, max(1, width - len(status) - 8)).rstrip()
    left = 3 + cell_len(title) + 1
    before = max(1, (width - len(status)) // 2 - left)
    after = max(1, width - left - before - len(status) - 1)
    return [
        Segment("┌─ ", BORDER),
        Segment(title, BOLD),
        Segment(" " + "─" * before, BORDER),
        Segment(status, status_style + BOLD),
        Segment("─" * after + "┐", BORDER),
    ]


def _traffic_line(
    label: str, history: tuple[float, ...], rate: float, total: int, width: int
) -> Parts:
    fixed = len(f"  {label}: ") + 2 + 10 + len("  Total: ") + 9
    bars = min(HISTORY_MINUTES, max(0, width - 2 - fixed - 1))
    return [
        (f"  {label}: ", None),
        (sparkline(history, bars), SPARK),
        ("  ", None),
        (fit(rate_text(rate), 10), rate_style(rate)),
        ("  Total: ", None),
        (decimal_size(total), None),
    ]


def card_line(row: InterfaceRow, line: int, width: int) -> list[Segment]:
    """Line `line` (0 to 10) of the card for `row`, `width` cells wide."""
    if line == 0:
        return _top(row, width)
    if line == 9:
        return [Segment("└" + "─" * max(0, width - 2) + "┘", BORDER)]
    if line == 10:
        return []
    t = row.total
    errors = RED if row.rx_errors or row.tx_errors else None
    body: dict[int, Parts] = {
        1: [("  IPv4: ", None), (", ".join(row.ipv4) or "(none)", None)],
        2: [("  IPv6: ", None), (", ".join(row.ipv6) or "(none)", None)],
        3: [("  DNS:  ", None), (printable(", ".join(row.dns_servers)) or "(none)", None)],
        4: [],
        5: _traffic_line("RX", row.rx_history, row.rx_rate, t.rx_bytes, width),
        6: _traffic_line("TX", row.tx_history, row.tx_rate, t.tx_bytes, width),
        7: [],
        8: [
            (f"  Packets:  RX {count(t.rx_packets)}  TX {count(t.tx_packets)}    ", None),
            (f"Errors: RX {count(row.rx_errors)}  TX {count(row.tx_errors)}", errors),
        ],
    }
    return _boxed(body[line], width)


class InterfaceCards(RowTable[tuple[InterfaceRow, int]]):
    """The cards as one scrolling list of lines (↑/↓ scroll a line, PgUp/PgDn a page)."""

    TITLE: ClassVar[str] = "Interface"
    SORTS: ClassVar[Sequence[SortKey[InterfaceRow]]] = SORTS
    SHOW_CURSOR: ClassVar[bool] = False
    HEADER: ClassVar[bool] = False

    def __init__(self, *, only: str | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.only = only  # --interface: the one card to show

    @property
    def keyboard_target(self) -> InterfaceCards:
        return self

    def position(self) -> str:
        cards = len(self.rows) // CARD_LINES
        return f"{min(cards, self.top // CARD_LINES + 1)}/{cards}" if cards else ""

    def show(self, snapshot: Snapshot, order: Order) -> None:
        interfaces = [r for r in snapshot.interfaces if self.only in (None, r.name)]
        rows = sort_rows(interfaces, SORTS, order)
        self.set_rows([(row, line) for row in rows for line in range(CARD_LINES)])

    def row_key(self, row: tuple[InterfaceRow, int]) -> Hashable:
        return (row[0].name, row[1])

    def render_row(self, row: tuple[InterfaceRow, int], widths: Sequence[int]) -> list[Segment]:
        return card_line(row[0], row[1], self.size.width)

    def render_line(self, y: int) -> Strip:
        if not self.rows and y == 1:
            message = "  No interface counters (replaying a file, or no such interface)."
            return Strip([Segment(fit(message, self.size.width), DIM)]).apply_style(self.rich_style)
        return super().render_line(y)
