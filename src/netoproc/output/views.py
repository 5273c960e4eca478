"""Every view of a Snapshot as data: rows of typed values in a fixed column order.

`--view process` is the process table (formats.py, README "Snapshot mode"); the
connection, interface and DNS views are defined here once, as `View`s: their
columns, and a function from a Snapshot to rows of values. tsv, json, pretty
and the JSON-lines stream all read these rows, so a column means the same
thing everywhere. Values are `int`, `float`, `str`, `None` or a tuple of
strings (addresses); strings from the network or other processes are raw
here and escaped by each format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from netoproc.model import format_endpoint, proto_name
from netoproc.output.text import binary_size, printable
from netoproc.snapshot import (
    TRAFFIC_COLUMNS,
    ConnectionRow,
    DnsQueryRow,
    InterfaceRow,
    Snapshot,
    Traffic,
)

Value = int | float | str | None | tuple[str, ...]
Row = tuple[Value, ...]


def traffic_values(t: Traffic) -> tuple[int, int, int, int]:
    return (t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)


def iso_time(ts: float) -> str:
    """A timestamp as ISO 8601 UTC with milliseconds: 2027-01-15T08:00:01.250Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# connection ----------------------------------------------------------------

CONNECTION_COLUMNS = (
    "process", "pid", "group", "local", "remote", "remote_name", "proto", "state", "direction",
    "interface", *TRAFFIC_COLUMNS, "rtt_ms", "jitter_ms", "retransmits", "rtt_source",
    "retransmits_source",
)  # fmt: skip


def connection_values(c: ConnectionRow) -> Row:
    health = c.health
    return (
        c.process.name if c.process else "unknown",
        c.process.pid if c.process else None,
        c.process.group or None if c.process else None,
        format_endpoint(c.laddr, c.lport),
        format_endpoint(c.raddr, c.rport),
        c.domain,
        proto_name(c.proto),
        c.state,
        c.direction,
        c.iface,
        *traffic_values(c.total),
        _round(c.rtt_ms),
        _round(c.jitter_ms),
        c.retransmits,
        health.rtt_source if health and c.rtt_ms is not None else None,
        health.retransmits_source if health and c.retransmits is not None else None,
    )


def connection_order(rows: Sequence[ConnectionRow]) -> list[ConnectionRow]:
    """Most bytes first; ties by process, then endpoints, so the order is stable."""
    return sorted(
        rows,
        key=lambda c: (-c.total.bytes, c.process is None, c.process.name if c.process else "",
                       c.process.pid if c.process else 0, c.iface, c.proto, c.laddr, c.lport,
                       c.raddr, c.rport),
    )  # fmt: skip


# group -----------------------------------------------------------------------

GROUP_COLUMNS = ("group", "processes", *TRAFFIC_COLUMNS)


def group_rows(snapshot: Snapshot) -> list[tuple[str | None, int, Traffic]]:
    """Processes with traffic summed per container or systemd unit (None: in
    neither, the unknown row included), most bytes first."""
    sums: dict[str | None, tuple[int, Traffic]] = {}
    for row in snapshot.processes:
        if row.total.packets:
            members, total = sums.get(row.group or None, (0, Traffic()))
            sums[row.group or None] = (members + 1, total + row.total)
    rows = [(group, members, total) for group, (members, total) in sums.items()]
    rows.sort(key=lambda r: (-r[2].bytes, r[0] is None, r[0] or ""))
    return rows


# interface -------------------------------------------------------------------

INTERFACE_COLUMNS = (
    "interface", "kind", "state", "ipv4", "ipv6", "dns_servers", *TRAFFIC_COLUMNS,
    "rx_errors", "tx_errors",
)  # fmt: skip


def interface_values(i: InterfaceRow) -> Row:
    return (
        i.name,
        i.kind,
        "UP" if i.up else "DOWN",
        i.ipv4,
        i.ipv6,
        i.dns_servers,
        *traffic_values(i.total),
        i.rx_errors,
        i.tx_errors,
    )


# dns -------------------------------------------------------------------------

DNS_COLUMNS = (
    "time", "process", "pid", "name", "type", "response", "rcode", "latency_ms", "resolver",
    "interface", "transport",
)  # fmt: skip


def dns_values(q: DnsQueryRow) -> Row:
    return (
        iso_time(q.time),
        q.process.name if q.process else "unknown",
        q.process.pid if q.process else None,
        q.name,
        q.qtype,
        q.response,
        q.rcode or "pending",
        _round(q.latency_ms),
        q.resolver,
        q.iface,
        q.transport,
    )


@dataclass(frozen=True, slots=True)
class View:
    """One view as a table: its columns, and its rows of a Snapshot in display order."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: Callable[[Snapshot], list[Row]]


VIEWS: dict[str, View] = {
    "group": View(
        "group",
        "Traffic per Container/Unit",
        GROUP_COLUMNS,
        lambda s: [(g, n, *traffic_values(t)) for g, n, t in group_rows(s)],
    ),
    "connection": View(
        "connection",
        "Connections",
        CONNECTION_COLUMNS,
        lambda s: [connection_values(c) for c in connection_order(s.connections)],
    ),
    "interface": View(
        "interface",
        "Interfaces",
        INTERFACE_COLUMNS,
        lambda s: [interface_values(i) for i in sorted(s.interfaces, key=lambda i: i.name)],
    ),
    "dns": View(
        "dns",
        "DNS Queries",
        DNS_COLUMNS,
        lambda s: [dns_values(q) for q in (s.dns.queries if s.dns else ())],
    ),
}


# formats ---------------------------------------------------------------------


def _text(value: Value) -> str:
    """A value as one TSV or table cell: `-` for none, lists comma-joined, names escaped."""
    if value is None or value == ():
        return "-"
    if isinstance(value, tuple):
        return ",".join(printable(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return str(value)
    return printable(value)


def json_value(value: Value) -> object:
    return list(value) if isinstance(value, tuple) else value


def write_view_tsv(view: View, snapshot: Snapshot, out: TextIO) -> None:
    out.write("\t".join(view.columns) + "\n")
    for row in view.rows(snapshot):
        out.write("\t".join(_text(v) for v in row) + "\n")


def write_view_json(view: View, snapshot: Snapshot, out: TextIO) -> None:
    rows = [
        {column: json_value(v) for column, v in zip(view.columns, row, strict=True)}
        for row in view.rows(snapshot)
    ]
    # ensure_ascii: every control character, including C1, leaves as \u escapes
    out.write(json.dumps(rows, indent=2, ensure_ascii=True) + "\n")


PRETTY_MAX_WIDTH = 40  # a cell longer than this is cut with `…`


def _pretty_cell(column: str, value: Value) -> str:
    if column.endswith("_bytes") and isinstance(value, int):
        return binary_size(value)
    text = _text(value)
    return text if len(text) <= PRETTY_MAX_WIDTH else text[: PRETTY_MAX_WIDTH - 1] + "…"


def _right_aligned(column: str) -> bool:
    return column.endswith(("_bytes", "_packets", "_errors", "_ms")) or column in (
        "pid",
        "retransmits",
    )


def write_view_pretty(view: View, snapshot: Snapshot, out: TextIO) -> None:
    header = [c.upper() for c in view.columns]
    cells = [[_pretty_cell(c, v) for c, v in zip(view.columns, row, strict=True)]
             for row in view.rows(snapshot)]  # fmt: skip
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    right = [_right_aligned(c) for c in view.columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    rule = sum(widths) + 2 * (len(widths) - 1)
    out.write(view.title + "\n")
    out.write("=" * rule + "\n")
    out.write(line(header) + "\n")
    out.write("-" * rule + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    out.write("-" * rule + "\n")
    out.write(f"{len(cells)} {'row' if len(cells) == 1 else 'rows'}\n")


VIEW_FORMATS: dict[str, Callable[[View, Snapshot, TextIO], None]] = {
    "tsv": write_view_tsv,
    "json": write_view_json,
    "pretty": write_view_pretty,
}


def writer(view: str, fmt: str) -> Callable[[Snapshot, TextIO], None]:
    """The snapshot writer of `--view VIEW --format FMT` (tsv, json or pretty)."""
    if view == "process":
        from netoproc.output.formats import FORMATS

        return FORMATS[fmt]
    write, table = VIEW_FORMATS[fmt], VIEWS[view]
    return lambda snapshot, out: write(table, snapshot, out)


VIEW_NAMES = ("process", "connection", "group", "interface", "dns")
