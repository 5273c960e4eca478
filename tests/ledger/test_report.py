"""`netoproc report` as users meet it: periods, groups, formats, escaping, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netoproc.ledger.report import bar, parse_when, sparkline
from netoproc.ledger.store import Store

HOSTILE = "evil\x1b[31m\tname\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netoproc", "report", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """Two hours ago: curl and a hostile name; three days ago: firefox. The ten
    minutes two hours ago end before a local midnight they would cross, so the
    daily totals always have the two days."""
    path = tmp_path / "l.db"
    now = int(time.time()) // 60 * 60
    start = now - 7200
    if time.localtime(start).tm_mday != time.localtime(start + 9 * 60).tm_mday:
        start -= 10 * 60
    store = Store(str(path))
    for m in range(10):
        store.write(start + 60 * m, {
            ("curl", "alice", "eth0", "example.com"): (1000, 100, 10, 1),
            (HOSTILE, "bob", "wlan0", "x\x07.example"): (10, 1, 1, 1),
        })  # fmt: skip
    store.write(now - 3 * 86400, {("firefox", "alice", "eth0", "mozilla.org"): (5000, 0, 5, 0)})
    store.close()
    return path


def test_totals_per_process_for_the_last_day(ledger: Path) -> None:
    result = run("--ledger", str(ledger), "--format", "tsv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "process\trx_bytes\ttx_bytes\trx_packets\ttx_packets"
    assert lines[1] == "curl\t10000\t1000\t100\t10"
    assert lines[2] == "evil\\x1b[31m\\tname\\n\t100\t10\t10\t10"
    assert len(lines) == 3  # firefox is older than 24 hours


def test_periods_groups_and_json(ledger: Path) -> None:
    result = run("--ledger", str(ledger), "--since", "4d", "--by", "interface,remote",
                 "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["resolution"] == "minute"
    rows = {(r["interface"], r["remote"]): r["rx_bytes"] for r in doc["rows"]}
    assert rows == {("eth0", "example.com"): 10000, ("eth0", "mozilla.org"): 5000,
                    ("wlan0", "x\x07.example"): 100}  # fmt: skip
    until = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 2 * 86400))
    older = run("--ledger", str(ledger), "--since", "5d", "--until", until, "--format", "tsv")
    assert older.stdout.splitlines()[1:] == ["firefox\t5000\t0\t5\t0"]


def test_pretty_has_bars_a_daily_sparkline_and_escapes(ledger: Path) -> None:
    result = run("--ledger", str(ledger), "--since", "4d")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b[31m" in text  # escaped, then cut to the column
    curl = next(line for line in text.splitlines() if line.startswith("curl"))
    assert curl.endswith("█" * 24)  # the largest row has the whole bar
    assert "DAILY" in text and "TOTAL" in text
    days = run("--ledger", str(ledger), "--since", "4d", "--by", "day", "--format", "tsv")
    assert len(days.stdout.splitlines()) == 3  # two days with traffic (header + 2)


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "yesterday"],
        ["--since", "1h", "--until", "2h"],
        ["--by", "colour"],
        ["--by", "process,process"],
        ["--format", "xml"],
        ["--top", "-1"],
        ["--no-such-option"],
    ],
)
def test_bad_arguments_exit_3_with_one_line(ledger: Path, args: list[str]) -> None:
    result = run("--ledger", str(ledger), *args)
    assert result.returncode == 3
    first, hint = result.stderr.splitlines()
    assert first.startswith("error: ")
    assert hint == "Try 'netoproc report --help' for more information."


def test_a_ledger_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    missing = run("--ledger", str(tmp_path / "none.db"))
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        f"error: {tmp_path / 'none.db'}: No such file or directory"
    ]
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00" * 100 + b"junk" * 2000)
    result = run("--ledger", str(junk))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_pictures() -> None:
    assert bar(0, 10) == "" and bar(10, 10, 4) == "████" and bar(5, 10, 4) == "██"
    assert bar(1, 80, 10) == "▏"
    assert sparkline([0, 1, 8]) == " ▁█"
    assert parse_when("2h", 10000.0) == 2800.0
    assert parse_when("2026-12-01", 0.0) == time.mktime((2026, 12, 1, 0, 0, 0, 0, 0, -1))
