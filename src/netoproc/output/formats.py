"""The three snapshot formats: tsv, json and pretty (README, "Snapshot mode"; netoproc(1)).

Each writes the per-process table of a Snapshot: processes with traffic,
most bytes (rx + tx) first, the unattributed traffic as pid `-` / null and
process `unknown`; processes folded together after exiting (a long run) as
pid `-` / null and their name. The column order is defined once, in `COLUMNS`;
when any process runs in a container or systemd unit, a `group` column
(`CONTAINER/UNIT` in pretty) follows the process name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from netoproc.output.text import binary_size, printable
from netoproc.snapshot import ProcessRow, Snapshot, Traffic

COLUMNS = ("pid", "process", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
GROUPED_COLUMNS = ("pid", "process", "group", *COLUMNS[2:])
RULE_WIDTH = 78
GROUP_WIDTH = 24  # pretty's CONTAINER/UNIT column; longer names are cut with `…`


def _grouped(rows: list[ProcessRow]) -> bool:
    return any(row.group for row in rows)


def _values(row: ProcessRow, grouped: bool) -> tuple[int | str | None, ...]:
    t = row.total
    group = (row.group or None,) if grouped else ()
    return (row.pid, row.name, *group, t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)


def write_tsv(snapshot: Snapshot, out: TextIO) -> None:
    rows = snapshot.by_traffic()
    grouped = _grouped(rows)
    out.write("\t".join(GROUPED_COLUMNS if grouped else COLUMNS) + "\n")
    for row in rows:
        fields = [
            "-" if v is None else printable(v) if isinstance(v, str) else str(v)
            for v in _values(row, grouped)
        ]
        out.write("\t".join(fields) + "\n")


def write_json(snapshot: Snapshot, out: TextIO) -> None:
    by_traffic = snapshot.by_traffic()
    grouped = _grouped(by_traffic)
    columns = GROUPED_COLUMNS if grouped else COLUMNS
    rows = [dict(zip(columns, _values(row, grouped), strict=True)) for row in by_traffic]
    # ensure_ascii: every control character, including C1, leaves as \u escapes
    out.write(json.dumps(rows, indent=2, ensure_ascii=True) + "\n")


def _pretty_name(row: ProcessRow, width: int) -> str:
    """The name, cut to fit with `…`; a folded row's note is never cut."""
    name, note = printable(row.name), row.exited_note
    room = width - len(note)
    return (name if len(name) <= room else name[: max(0, room - 1)] + "…") + note


def _pretty_group(group: str) -> str:
    text = printable(group) or "-"
    return text if len(text) < GROUP_WIDTH else text[: GROUP_WIDTH - 2] + "…"


def write_pretty(snapshot: Snapshot, out: TextIO) -> None:
    rows = snapshot.by_traffic()
    grouped = _grouped(rows)
    width = RULE_WIDTH + (GROUP_WIDTH if grouped else 0)

    def line(pid: str, name: str, group: str, t: Traffic) -> str:
        return (
            f"{pid:<8} {name:<20}" + (f" {group:<{GROUP_WIDTH - 1}}" if grouped else "") +
            f"{binary_size(t.rx_bytes):>13}{binary_size(t.tx_bytes):>13}"
            f"{t.rx_packets:>11}{t.tx_packets:>11}"
        )  # fmt: skip

    out.write("Per-Process Network Traffic\n")
    out.write("=" * width + "\n")
    out.write(
        f"{'PID':<8} {'PROCESS':<20}"
        + (f" {'CONTAINER/UNIT':<{GROUP_WIDTH - 1}}" if grouped else "")
        + f"{'RX':>13}{'TX':>13}{'RX_PKT':>11}{'TX_PKT':>11}\n"
    )
    out.write("-" * width + "\n")
    for row in rows:
        pid = "-" if row.pid is None else str(row.pid)
        out.write(line(pid, _pretty_name(row, 20), _pretty_group(row.group), row.total) + "\n")
    out.write("-" * width + "\n")
    out.write(line("", "TOTAL", "", sum((r.total for r in rows), Traffic())) + "\n")


FORMATS: dict[str, Callable[[Snapshot, TextIO], None]] = {
    "tsv": write_tsv,
    "json": write_json,
    "pretty": write_pretty,
}
