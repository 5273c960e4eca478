"""`--format jsonl`: one JSON object per line, per row, per interval.

Every interval, each row of the chosen view that moved a packet in it
becomes one line: the tick's time (`time`, ISO 8601 UTC; `interval`, its
length in seconds), `view`, the view's columns with their totals since the
start, and the interval's deltas (`rx_bytes_delta`, ...). Summed over a
row's lines, the deltas give its total (see deltas.py for rows that fold or
start again). The DNS view writes each query once, when it is answered or
times out. Lines are flushed at the end of each interval, so a reader sees
them as they happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO

from netoproc.output.deltas import Deltas, Interval
from netoproc.output.views import (
    CONNECTION_COLUMNS,
    DNS_COLUMNS,
    GROUP_COLUMNS,
    INTERFACE_COLUMNS,
    Row,
    connection_values,
    dns_values,
    group_rows,
    interface_values,
    iso_time,
    json_value,
    traffic_values,
)
from netoproc.snapshot import TRAFFIC_COLUMNS, ProcessRow, Snapshot, Traffic

PROCESS_COLUMNS = ("pid", "process", "user", "group", "exited", *TRAFFIC_COLUMNS)
DELTA_COLUMNS = tuple(f"{c}_delta" for c in TRAFFIC_COLUMNS)
COLUMNS = {
    "process": PROCESS_COLUMNS,
    "connection": CONNECTION_COLUMNS,
    "group": GROUP_COLUMNS,
    "interface": INTERFACE_COLUMNS,
    "dns": DNS_COLUMNS,
}


def _process_values(row: ProcessRow) -> Row:
    return (row.pid, row.name, row.user, row.group or None, row.exited,
            *traffic_values(row.total))  # fmt: skip


def _rows(view: str, interval: Interval) -> Iterator[tuple[Row, Traffic | None]]:
    if view == "process":
        pairs = sorted(interval.processes, key=lambda p: (-p[1].bytes, p[0].pid or 0, p[0].name))
        for process, delta in pairs:
            if delta.packets:
                yield _process_values(process), delta
    elif view == "connection":
        for conn, delta in sorted(interval.connections, key=lambda p: -p[1].bytes):
            if delta.packets:
                yield connection_values(conn), delta
    elif view == "group":  # the process deltas, summed as the group view sums totals
        deltas: dict[str | None, Traffic] = {}
        for process, delta in interval.processes:
            deltas[process.group or None] = deltas.get(process.group or None, Traffic()) + delta
        for group, members, total in group_rows(interval.snapshot):
            delta = deltas.get(group, Traffic())
            if delta.packets:
                yield (group, members, *traffic_values(total)), delta
    elif view == "interface":
        for iface, delta in sorted(interval.interfaces, key=lambda p: p[0].name):
            if delta.packets:
                yield interface_values(iface), delta
    else:
        for query in interval.dns:
            yield dns_values(query), None


def lines(view: str, interval: Interval) -> Iterator[str]:
    """The interval's lines for `view`, without their newlines."""
    head = {
        "time": iso_time(interval.snapshot.time),
        "interval": round(interval.seconds, 3),
        "view": view,
    }
    columns = COLUMNS[view]
    for values, delta in _rows(view, interval):
        line: dict[str, object] = dict(head)
        line.update((c, json_value(v)) for c, v in zip(columns, values, strict=True))
        if delta is not None:
            line.update(zip(DELTA_COLUMNS, traffic_values(delta), strict=True))
        # ensure_ascii: control characters from names leave as \u escapes, one line each
        yield json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class StreamWriter:
    """Writes each tick's lines to `out` and flushes; `--filter` applies to every tick."""

    def __init__(self, view: str, out: TextIO, pattern: str | None = None) -> None:
        self.view = view
        self.out = out
        self.pattern = pattern
        self.deltas = Deltas()

    def write(self, snapshot: Snapshot) -> None:
        interval = self.deltas.step(snapshot).filtered(self.pattern)
        text = "".join(line + "\n" for line in lines(self.view, interval))
        if text:
            self.out.write(text)
            self.out.flush()
