"""The Process view: one row per process, and under an expanded one its sockets and connections.

Expandable rows (README, "Monitor mode"): `Enter` on a process lists, with tree
glyphs, every connection it has traffic on and every socket it holds
without one (listening, unconnected UDP, idle TCP), with fd, protocol,
local → remote, state, interface and rates. Under the `unknown` row the
lines are its connections and why each byte of it could not be attributed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType

from netoproc.model import DNS_PORT, IPPROTO_UDP, ProcessRef, SocketInfo, proto_name
from netoproc.output.text import compact_rate, decimal_size, printable
from netoproc.snapshot import ConnectionRow, ProcessRow, Snapshot
from netoproc.tui.cells import (
    DIM,
    count,
    endpoint,
    fit,
    rate_style,
    sparkline,
)
from netoproc.tui.order import Order, SortKey, sort_rows
from netoproc.tui.table import GAP, Column, RowTable

SPARK = Style(color="cyan")
RATE_TEXT = 4  # compact_rate is never wider
MIN_NAME = 4  # cells of a folded row's name worth keeping before its count shortens
GROUP_HIDDEN = frozenset({3})  # the Container/Unit column, while no process has one


@dataclass(frozen=True, slots=True)
class Child:
    """One line under an expanded process."""

    parent: ProcessRef | None
    item: ConnectionRow | SocketInfo | tuple[str, int]  # the last: (unknown reason, bytes)
    last: bool = False


Line = ProcessRow | Child


def _traffic(row: ProcessRow) -> tuple[float, int, int]:
    return (row.rx_rate + row.tx_rate, row.total.bytes, -(row.pid or -1))


def _name(row: ProcessRow, width: int) -> str:
    """The name in `width` cells. A folded row says how many processes it
    stands for, as " (312 exited)" or, in a narrow column, " ×312"; the name is
    cut before the count."""
    name = printable(row.name)
    if not row.exited:
        return name
    note = row.exited_note
    if min(cell_len(name), MIN_NAME) + len(note) > width:
        note = f" ×{row.exited:,}"
    if cell_len(name) + len(note) > width:
        name = fit(name, max(1, width - len(note)))
    return name + note


def _neg(key: tuple[float, int, int]) -> tuple[float, int, int]:
    return (-key[0], -key[1], -key[2])


def _pid(row: ProcessRow) -> int:
    return row.pid if row.pid is not None else 1 << 62  # unknown sorts after every pid


SORTS: tuple[SortKey[ProcessRow], ...] = (
    SortKey("traffic", _traffic, descending=True),
    SortKey("pid", _pid),
    SortKey("name", lambda r: (r.name.lower(), _pid(r))),
    SortKey("user", lambda r: (r.process.user if r.process else "", _pid(r))),
    # processes of one container or unit together, largest traffic first in each
    SortKey("group", lambda r: (r.group == "", r.group.lower(), _neg(_traffic(r)))),
    SortKey("sockets", lambda r: (r.sockets, _traffic(r)), descending=True),
    SortKey("connections", lambda r: (r.connections, _traffic(r)), descending=True),
    SortKey("rx rate", lambda r: (r.rx_rate, _traffic(r)), descending=True),
    SortKey("tx rate", lambda r: (r.tx_rate, _traffic(r)), descending=True),
    SortKey("rx total", lambda r: (r.total.rx_bytes, _traffic(r)), descending=True),
    SortKey("tx total", lambda r: (r.total.tx_bytes, _traffic(r)), descending=True),
)


def _conn_ends(c: ConnectionRow | SocketInfo) -> tuple[int, int, int, int, int]:
    return (c.proto, c.laddr, c.lport, c.raddr, c.rport)


def children(
    process: ProcessRef | None,
    row: ProcessRow,
    connections: Sequence[ConnectionRow],
    sockets: Sequence[SocketInfo],
) -> list[Child]:
    """The lines under an expanded process, in fd order, connections before idle sockets."""
    seen = {_conn_ends(c) for c in connections}
    fds = {_conn_ends(s): s.fd for s in sockets if s.fd is not None}
    items: list[tuple[tuple[int, int, float], ConnectionRow | SocketInfo | tuple[str, int]]] = []
    for conn in connections:
        if conn.fd is None and _conn_ends(conn) in fds:
            conn = replace(conn, fd=fds[_conn_ends(conn)])
        rate = conn.rx_rate + conn.tx_rate
        items.append(((conn.fd is None, conn.fd or 0, -rate), conn))
    for sock in sockets:
        if not sock.connected or _conn_ends(sock) not in seen:
            items.append(((sock.fd is None, sock.fd or 0, 0.0), sock))
    items.sort(key=lambda item: item[0])
    lines: list[ConnectionRow | SocketInfo | tuple[str, int]] = [item for _, item in items]
    lines.extend(row.unknown_reasons)
    return [Child(process, item, last=i == len(lines) - 1) for i, item in enumerate(lines)]


class ProcessTable(RowTable[Line]):
    TITLE: ClassVar[str] = "Process"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "expand", "Expand or collapse", show=False)
    ]
    SORTS: ClassVar[Sequence[SortKey[ProcessRow]]] = SORTS
    COLUMNS: ClassVar[Sequence[Column]] = (
        Column("PID", 7, right=True),
        Column("Process", 10, most=24),
        Column("User", 8, most=12, grow=1),
        Column("Container/Unit", 14, most=28, grow=1, drop=1),
        Column("Sockets", 7, right=True),
        Column("Conns", 5, right=True),
        Column("RX Rate", 9, most=RATE_TEXT + 1 + 60, right=True, grow=2),
        Column("TX Rate", 9, most=RATE_TEXT + 1 + 60, right=True, grow=2),
        Column("RX Total", 8, most=9, right=True, grow=1),
        Column("TX Total", 8, most=9, right=True, grow=1),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.expanded: set[ProcessRef | None] = set()
        self._snapshot: Snapshot | None = None
        self._order = Order()

    @property
    def keyboard_target(self) -> ProcessTable:
        return self

    def position(self) -> str:
        if not self.rows:
            return ""
        if not self.expanded:
            return f"{self.cursor + 1}/{len(self.rows)}"
        processes = [isinstance(row, ProcessRow) for row in self.rows]
        return f"{sum(processes[: self.cursor + 1])}/{sum(processes)}"

    def show(self, snapshot: Snapshot, order: Order) -> None:
        self._snapshot, self._order = snapshot, order
        # the Container/Unit column only once some process has one
        self.hide_columns(frozenset() if any(r.group for r in snapshot.processes) else GROUP_HIDDEN)
        processes = sort_rows(snapshot.processes, SORTS, order)
        if not self.expanded:
            self.set_rows(processes)
            return
        wanted = {row.process for row in processes} & self.expanded
        by_owner: dict[ProcessRef | None, list[ConnectionRow]] = {p: [] for p in wanted}
        for conn in snapshot.connections:
            if conn.process in by_owner:
                by_owner[conn.process].append(conn)
        owned: dict[ProcessRef | None, list[SocketInfo]] = {p: [] for p in wanted}
        for sock in snapshot.sockets:
            if sock.owner in owned:
                owned[sock.owner].append(sock)
        rows: list[Line] = []
        for row in processes:
            rows.append(row)
            if row.process in wanted:
                rows.extend(children(row.process, row, by_owner[row.process], owned[row.process]))
        self.set_rows(rows)

    def action_expand(self) -> None:
        """Expand or collapse the process under the cursor (from a child line: its parent)."""
        line = self.current
        if line is None or self._snapshot is None:
            return
        process = line.process if isinstance(line, ProcessRow) else line.parent
        if process in self.expanded:
            self.expanded.discard(process)
            if isinstance(line, Child):  # the cursor goes back up to the process
                self.cursor = next(
                    i for i, r in enumerate(self.rows) if isinstance(r, ProcessRow)
                    and r.process == process
                )  # fmt: skip
        else:
            self.expanded.add(process)
        self.show(self._snapshot, self._order)
        self.post_message(self.CursorMoved())

    def row_key(self, row: Line) -> Hashable:
        if isinstance(row, ProcessRow):
            return ("process", row.process)
        item = row.item
        if isinstance(item, ConnectionRow):
            return ("conn", row.parent, item.iface, *_conn_ends(item))
        if isinstance(item, SocketInfo):
            return ("sock", row.parent, item.inode, *_conn_ends(item))
        return ("reason", row.parent, item[0])

    def render_row(self, row: Line, widths: Sequence[int]) -> list[Segment]:
        if isinstance(row, Child):
            return self._child_segments(row, self.size.width)
        process = row.process
        texts = (
            (str(row.pid) if row.pid is not None else "-", None),
            (_name(row, widths[1]), DIM if process is None or row.exited else None),
            (printable(process.user) if process and process.user else "-", None),
            (printable(row.group) if row.group else "-", None if row.group else DIM),
            (count(row.sockets), None),
            (count(row.connections), None),
        )
        segments: list[Segment] = []
        for (text, style), column, width in zip(texts, self.COLUMNS, widths, strict=False):
            if width:
                segments.append(Segment(" " * GAP + fit(text, width, column.right), style))
        for history, rate, width in (
            (row.rx_history, row.rx_rate, widths[6]),
            (row.tx_history, row.tx_rate, widths[7]),
        ):
            if width:
                spark = sparkline(history, width - RATE_TEXT - 1)
                segments.append(Segment(" " * GAP + spark, SPARK))
                segments.append(Segment(" " + fit(compact_rate(rate), RATE_TEXT, True),
                                        rate_style(rate)))  # fmt: skip
        for value, width in ((row.total.rx_bytes, widths[8]), (row.total.tx_bytes, widths[9])):
            if width:
                segments.append(Segment(" " * GAP + fit(decimal_size(value), width, True)))
        return segments

    def _child_segments(self, child: Child, width: int) -> list[Segment]:
        glyph = "└─" if child.last else "├─"
        item = child.item
        if isinstance(item, tuple):  # why the unknown row's bytes are unknown
            reason, size = item
            return [
                Segment(f"   {glyph} ", DIM),
                Segment(fit(f"{decimal_size(size)} {reason}", max(0, width - 6)), DIM),
            ]
        fd = f"fd={item.fd}" if item.fd is not None else "fd=-"
        local = endpoint(item.laddr, item.lport)
        if isinstance(item, ConnectionRow):
            remote = endpoint(item.raddr, item.rport)
            state = item.state
            if item.proto == IPPROTO_UDP and item.rport == DNS_PORT and state == "-":
                state = "dns query"
            iface = printable(item.iface)
            rx, tx = f"↓{compact_rate(item.rx_rate)}", f"↑{compact_rate(item.tx_rate)}"
            rx_style, tx_style = rate_style(item.rx_rate), rate_style(item.tx_rate)
        else:
            remote = ""
            state, iface, rx, tx, rx_style, tx_style = item.state, "", "-", "-", DIM, DIM
        fixed = 6 + 7 + 7 + 13 + 7 + 6 + 6
        room = max(0, width - fixed - 1)
        if isinstance(item, ConnectionRow) or item.connected:
            ends = f"{local} → {remote}"
            if len(ends) > room:  # the remote end matters more than our own address
                ends = f":{item.lport} → {remote}"
        else:
            ends = f"{local}  ({'listening' if item.state == 'LISTEN' else 'no connection'})"
        return [
            Segment(f"   {glyph} ", DIM),
            Segment(fit(fd, 6) + " " + fit(proto_name(item.proto), 6) + " "),
            Segment(fit(ends, room) + " "),
            Segment(fit(state, 12) + " " + fit(iface, 6) + " "),
            Segment(fit(rx, 6), rx_style),
            Segment(fit(tx, 6), tx_style),
        ]
