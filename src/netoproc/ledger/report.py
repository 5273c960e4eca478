"""`netoproc report`: what the ledger holds for a period, grouped, as tsv, json or pretty.

Needs no root and loads neither the capture nor the TUI. The finest table
that still holds the whole period answers: minutes (kept 48 hours), else
hours (60 days), else days (5 years); the period's ends are then rounded to
that table's buckets, and the output says which.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn, TextIO

from netoproc.ledger.store import HOUR, MINUTE, TABLES, LedgerError, reading
from netoproc.output.text import binary_size, printable

GROUPS = {"process": "p.text", "user": "u.text", "interface": "i.text", "remote": "r.text"}
BY_CHOICES = (*GROUPS, "day")
COUNTS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
STEP = {"minutes": MINUTE, "hours": HOUR, "days": 24 * HOUR}
SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ReportUsage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ReportUsage(message)


def parse_when(text: str, now: float) -> float:
    """`24h`, `90m`, `7d`, `2w` ago, or a local date/time: `2026-12-01`,
    `2026-12-01T08:30`, `2026-12-01 08:30:00`."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 24h, 30m, 7d, 2w, 2026-12-01 or 2026-12-01T08:30)"
        ) from None


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{prog} report",
        description="Totals the ledger recorded (--ledger FILE) for a period. Needs no root.",
        epilog="exit codes: 0 ok, 2 ledger cannot be opened or read, 3 invalid arguments",
    )
    parser.add_argument("--ledger", required=True, metavar="FILE", help="the ledger file")
    parser.add_argument(
        "--since",
        default="24h",
        metavar="WHEN",
        help="start: 24h, 30m, 7d, 2w ago, or a local date/time (default 24h)",
    )
    parser.add_argument(
        "--until", default=None, metavar="WHEN", help="end (default: now), same forms as --since"
    )
    parser.add_argument(
        "--by",
        default="process",
        metavar="GROUPS",
        help="comma-separated: process, user, interface, remote, day (default: process)",
    )
    parser.add_argument(
        "--format",
        choices=("tsv", "json", "pretty"),
        default="pretty",
        help="output format (default: pretty, with bars)",
    )
    parser.add_argument("--top", type=int, default=0, metavar="N",
                        help="only the N largest rows (default: all)")  # fmt: skip
    return parser


@dataclass
class Row:
    key: tuple[str, ...]
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    days: dict[str, int] = field(default_factory=dict)  # local date -> bytes

    @property
    def bytes(self) -> int:
        return self.counts[0] + self.counts[1]


@dataclass
class Report:
    since: float
    until: float
    table: str
    by: tuple[str, ...]
    rows: list[Row]
    days: list[str]  # every local date in the period, in order


def query(path: str, since: float, until: float, by: Sequence[str]) -> Report:
    """Totals per group over [since, until): raises LedgerError."""
    with reading(path) as db:
        horizons = dict(db.execute("SELECT key, value FROM meta").fetchall())
        table = next((t for t in TABLES if horizons.get(f"{t}_from", 0) <= since), TABLES[-1])
        step = STEP[table]
        start = int(since // step * step) if table != "days" else int(since)
        end = int(-(-until // step) * step) if table != "days" else int(until)
        if table == "days":  # local midnights: a bucket counts when its day starts inside
            start, end = int(since) - 24 * HOUR + 1, int(until)
        columns = [GROUPS[g] for g in by if g != "day"]
        select = ", ".join([*columns, "date(x.t, 'unixepoch', 'localtime')"])
        sql = (
            f"SELECT {select}, sum(x.rx_bytes), sum(x.tx_bytes), sum(x.rx_packets), "
            f"sum(x.tx_packets) FROM {table} x "
            "JOIN names p ON p.id = x.process JOIN names u ON u.id = x.user "
            "JOIN names i ON i.id = x.iface JOIN names r ON r.id = x.remote "
            f"WHERE x.t >= ? AND x.t < ? GROUP BY {select}"
        )
        try:
            found = db.execute(sql, (start, end)).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: {exc}", lasting=True) from None
    rows: dict[tuple[str, ...], Row] = {}
    n = len(columns)
    where = {g: i for i, g in enumerate(g for g in by if g != "day")}
    for record in found:
        names, day, counts = record[:n], str(record[n]), record[n + 1 :]
        key = tuple(day if g == "day" else str(names[where[g]]) for g in by)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(key)
        for i in range(4):
            row.counts[i] += int(counts[i])
        row.days[day] = row.days.get(day, 0) + int(counts[0]) + int(counts[1])
    ordered = sorted(rows.values(), key=lambda r: (-r.bytes, r.key))
    if by == ("day",):
        ordered.sort(key=lambda r: r.key)
    return Report(float(start), float(end), table, tuple(by), ordered, _dates(since, until))


def _dates(since: float, until: float) -> list[str]:
    out: list[str] = []
    t = since
    while t < until and len(out) < 5 * 366:
        day = time.strftime("%Y-%m-%d", time.localtime(t))
        if not out or out[-1] != day:
            out.append(day)
        t += 6 * HOUR
    return out


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def write_tsv(report: Report, out: TextIO) -> None:
    out.write("\t".join([*report.by, *COUNTS]) + "\n")
    for row in report.rows:
        out.write("\t".join([*(printable(k) for k in row.key), *map(str, row.counts)]) + "\n")


def write_json(report: Report, out: TextIO) -> None:
    doc = {
        "since": datetime.fromtimestamp(report.since).astimezone().isoformat(),
        "until": datetime.fromtimestamp(report.until).astimezone().isoformat(),
        "resolution": report.table[:-1],
        "by": list(report.by),
        "rows": [
            {**dict(zip(report.by, row.key, strict=True)),
             **dict(zip(COUNTS, row.counts, strict=True))}
            for row in report.rows
        ],
    }  # fmt: skip
    out.write(json.dumps(doc, indent=2, ensure_ascii=True) + "\n")


def bar(value: int, largest: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar in eighths of a cell."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(8 * width * value / largest))
    full, part = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")


def sparkline(values: Sequence[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(
        " " if v <= 0 else SPARKS[min(len(SPARKS) - 1, (len(SPARKS) * v - 1) // top)]
        for v in values
    )


def _cut(text: str, width: int) -> str:
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def write_pretty(report: Report, out: TextIO) -> None:
    per = {"minutes": "minute", "hours": "hour", "days": "day"}[report.table]
    out.write(f"Network usage {_when(report.since)} to {_when(report.until)} "
              f"(recorded per {per})\n")  # fmt: skip
    widths = [10 if g == "day" else 24 if g == "remote" else 16 for g in report.by]
    daily = len(report.days) > 1 and "day" not in report.by
    head = "".join(f"{g.upper():<{w}} " for g, w in zip(report.by, widths, strict=True))
    head += f"{'RX':>11}{'TX':>11}{'TOTAL':>11}  " + ("DAILY".ljust(len(report.days) + 2)
                                                      if daily else "")  # fmt: skip
    rule = "-" * (len(head) + BAR_WIDTH)
    out.write(rule + "\n" + head.rstrip() + "\n" + rule + "\n")
    largest = max((r.bytes for r in report.rows), default=0)
    for row in report.rows:
        line = "".join(f"{_cut(k, w):<{w}} " for k, w in zip(row.key, widths, strict=True))
        line += (f"{binary_size(row.counts[0]):>11}{binary_size(row.counts[1]):>11}"
                 f"{binary_size(row.bytes):>11}  ")  # fmt: skip
        if daily:
            line += sparkline([row.days.get(d, 0) for d in report.days]) + "  "
        out.write((line + bar(row.bytes, largest)).rstrip() + "\n")
    rx = sum(r.counts[0] for r in report.rows)
    tx = sum(r.counts[1] for r in report.rows)
    out.write(rule + "\n")
    pad = sum(w + 1 for w in widths)
    out.write(f"{'TOTAL':<{pad}}{binary_size(rx):>11}{binary_size(tx):>11}"
              f"{binary_size(rx + tx):>11}\n")  # fmt: skip


FORMATS = {"tsv": write_tsv, "json": write_json, "pretty": write_pretty}


def run(prog: str, argv: Sequence[str], now: float, out: TextIO) -> Report:
    """Parse, query, print. Raises ReportUsage (exit 3) or LedgerError (exit 2)."""
    args = build_parser(prog).parse_args(list(argv))
    by = tuple(g.strip() for g in args.by.split(",") if g.strip())
    wrong = [g for g in by if g not in BY_CHOICES]
    if not by or wrong or len(set(by)) != len(by):
        raise ReportUsage(f"--by: choose from {', '.join(BY_CHOICES)}, each once (got {args.by!r})")
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until is not None else now
    except argparse.ArgumentTypeError as exc:
        raise ReportUsage(str(exc)) from None
    if since >= until:
        raise ReportUsage(f"--since ({_when(since)}) must come before --until ({_when(until)})")
    if args.top < 0:
        raise ReportUsage("--top must be 0 or more")
    report = query(args.ledger, since, until, by)
    if args.top:
        report.rows = report.rows[: args.top]
    FORMATS[args.format](report, out)
    return report
