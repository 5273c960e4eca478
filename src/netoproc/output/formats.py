"""The three snapshot formats: tsv, json and pretty (README, "Snapshot mode"; netoproc(1)).

Each writes the per-process table of a Snapshot: processes with traffic,
most bytes (rx + tx) first, the unattributed traffic as pid `-` / null and
process `unknown`; processes folded together after exiting (a long run) as
pid `-` / null and their name. The column order is defined once, in `COLUMNS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from netoproc.output.text import binary_size, printable
from netoproc.snapshot import ProcessRow, Snapshot, Traffic

COLUMNS = ("pid", "process", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
RULE_WIDTH = 78


def _values(row: ProcessRow) -> tuple[int | None, str, int, int, int, int]:
    t = row.total
    return (row.pid, row.name, t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)


def write_tsv(snapshot: Snapshot, out: TextIO) -> None:
    out.write("\t".join(COLUMNS) + "\n")
    for row in snapshot.by_traffic():
        pid, name, *numbers = _values(row)
        fields = ["-" if pid is None else str(pid), printable(name), *map(str, numbers)]
        out.write("\t".join(fields) + "\n")


def write_json(snapshot: Snapshot, out: TextIO) -> None:
    rows = [dict(zip(COLUMNS, _values(row), strict=True)) for row in snapshot.by_traffic()]
    # ensure_ascii: every control character, including C1, leaves as \u escapes
    out.write(json.dumps(rows, indent=2, ensure_ascii=True) + "\n")


def _pretty_name(row: ProcessRow, width: int) -> str:
    """The name, cut to fit with `…`; a folded row's note is never cut."""
    name, note = printable(row.name), row.exited_note
    room = width - len(note)
    return (name if len(name) <= room else name[: max(0, room - 1)] + "…") + note


def write_pretty(snapshot: Snapshot, out: TextIO) -> None:
    def line(pid: str, name: str, t: Traffic) -> str:
        return (
            f"{pid:<8} {name:<20}"
            f"{binary_size(t.rx_bytes):>13}{binary_size(t.tx_bytes):>13}"
            f"{t.rx_packets:>11}{t.tx_packets:>11}"
        )

    rows = snapshot.by_traffic()
    out.write("Per-Process Network Traffic\n")
    out.write("=" * RULE_WIDTH + "\n")
    out.write(f"{'PID':<8} {'PROCESS':<20}{'RX':>13}{'TX':>13}{'RX_PKT':>11}{'TX_PKT':>11}\n")
    out.write("-" * RULE_WIDTH + "\n")
    for row in rows:
        pid = "-" if row.pid is None else str(row.pid)
        out.write(line(pid, _pretty_name(row, 20), row.total) + "\n")
    out.write("-" * RULE_WIDTH + "\n")
    out.write(line("", "TOTAL", sum((r.total for r in rows), Traffic())) + "\n")


FORMATS: dict[str, Callable[[Snapshot, TextIO], None]] = {
    "tsv": write_tsv,
    "json": write_json,
    "pretty": write_pretty,
}
