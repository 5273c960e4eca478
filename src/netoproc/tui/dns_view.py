"""The DNS view: resolver statistics on top, the live query log below.

The log is a tail: while the cursor is on the last query it follows new
ones as they arrive; move it up to read back and it stays put. With DNS
observation off (`--no-dns`) the view says `[no data]` and why.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from netoproc.output.text import printable
from netoproc.snapshot import DnsQueryRow, ResolverRow, Snapshot
from netoproc.tui.cells import DIM, RED, YELLOW, clock_time, count, fit, milliseconds
from netoproc.tui.order import Order, SortKey, sort_rows
from netoproc.tui.table import GAP, Column, RowTable

MOST_RESOLVERS_SHOWN = 5


def _cells(
    values: Sequence[tuple[str, Style | None]], columns: Sequence[Column], widths: Sequence[int]
) -> list[Segment]:
    return [
        Segment(" " * GAP + fit(text, width, column.right), style)
        for (text, style), column, width in zip(values, columns, widths, strict=True)
        if width
    ]


class ResolverTable(RowTable[ResolverRow]):
    SHOW_CURSOR: ClassVar[bool] = False
    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("Interface", 9, most=12, grow=1),
        Column("Server", 15, most=39),
        Column("Avg Latency", 11, right=True),
        Column("Fail Rate", 9, right=True),
        Column("Queries", 9, right=True),
    )
    DEFAULT_CSS = "ResolverTable { height: auto; }"

    def row_key(self, row: ResolverRow) -> Hashable:
        return (row.iface, row.server)

    def render_row(self, row: ResolverRow, widths: Sequence[int]) -> list[Segment]:
        latency = "-" if row.avg_latency_ms is None else f"{row.avg_latency_ms:.1f} ms"
        fail_style = RED if row.fail_rate > 0.05 else YELLOW if row.failures else None
        values = (
            (printable(row.iface), None),
            (printable(row.server), None),
            (latency, None),
            (f"{row.fail_rate:.1%}", fail_style),
            (count(row.queries), None),
        )
        return _cells(values, self.COLUMNS, widths)


def _response_style(row: DnsQueryRow) -> Style | None:
    if row.rcode == "NOERROR":
        return None
    return YELLOW if row.rcode == "NXDOMAIN" else RED


def _process(row: DnsQueryRow) -> str:
    return row.process.name if row.process else "unknown"


SORTS: tuple[SortKey[DnsQueryRow], ...] = (
    SortKey("time", lambda r: r.time),
    SortKey("process", lambda r: (_process(r).lower(), r.time), aliases=("name", "pid")),
    SortKey("query", lambda r: (r.name.lower(), r.time)),
    SortKey("type", lambda r: (r.qtype, r.time)),
    SortKey("latency", lambda r: (r.latency_ms is not None, r.latency_ms or 0.0), descending=True),
    SortKey("resolver", lambda r: (r.resolver, r.time)),
)


class QueryLog(RowTable[DnsQueryRow]):
    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("Time", 8),
        Column("Process", 7, most=16, grow=2),
        Column("Query", 15, most=40),
        Column("Type", 5),
        Column("Response", 15, most=40, grow=1),
        Column("Latency", 7, right=True),
        Column("Resolver", 12, most=39, grow=3),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.follow_end = True

    def row_key(self, row: DnsQueryRow) -> Hashable:
        return (row.time, row.name, row.qtype, row.resolver, row.process)

    def render_row(self, row: DnsQueryRow, widths: Sequence[int]) -> list[Segment]:
        values = (
            (clock_time(row.time), None),
            (printable(_process(row)), None if row.process else DIM),
            (printable(row.name), None),
            (printable(row.qtype), None),
            (printable(row.response), _response_style(row)),
            (milliseconds(row.latency_ms), None),
            (printable(row.resolver), None),
        )
        return _cells(values, self.COLUMNS, widths)


class DnsPanel(Vertical):
    """The DNS view: the resolvers' statistics above the query log."""

    TITLE: ClassVar[str] = "DNS"
    SORTS: ClassVar[Sequence[SortKey[DnsQueryRow]]] = SORTS
    DEFAULT_CSS = """
    DnsPanel {
        & > .section { height: 1; padding: 0 1; text-style: bold; color: $text-accent; }
        & > #no-dns { display: none; height: 1fr; content-align: center middle; }
        &.off > * { display: none; }
        &.off > #no-dns { display: block; }
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("Resolver statistics", classes="section", markup=False)
        yield ResolverTable(id="resolvers")
        yield Static("Query log", classes="section", id="log-title", markup=False)
        yield QueryLog(id="queries")
        yield Static("[no data]\n\nDNS observation is off (--no-dns).", id="no-dns", markup=False)

    @property
    def keyboard_target(self) -> QueryLog:
        return self.query_one(QueryLog)

    def position(self) -> str:
        log = self.keyboard_target
        return f"{log.cursor + 1}/{len(log.rows)}" if log.rows else ""

    def show(self, snapshot: Snapshot, order: Order) -> None:
        dns = snapshot.dns
        self.set_class(dns is None, "off")
        if dns is None:
            return
        resolvers = self.query_one(ResolverTable)
        resolvers.set_rows(sorted(dns.resolvers, key=lambda r: (-r.queries, r.iface, r.server)))
        resolvers.styles.height = 1 + max(1, min(len(dns.resolvers), MOST_RESOLVERS_SHOWN))
        self.keyboard_target.set_rows(sort_rows(dns.queries, SORTS, order))
        self.query_one("#log-title", Static).update(f"Query log ({count(len(dns.queries))})")
