"""The connection, interface and DNS views in every format: golden files, columns, hostile names.

Golden files are the contract; regenerate them only on purpose with
`NETOPROC_UPDATE_GOLDEN=1 pytest tests/output`. The process view is the
README's table (test_formats.py), reached through the same `writer`.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from netoproc.output.formats import FORMATS
from netoproc.output.views import VIEW_NAMES, VIEWS, writer
from netoproc.snapshot import Snapshot
from tests.fixtures import hostile_snapshot, monitor_snapshot, readme_snapshot

GOLDEN = Path(__file__).with_name("golden")
SUFFIX = {"tsv": "tsv", "json": "json", "pretty": "txt"}

# The documented columns (README, "Views"), in their order: a change here is a change of contract.
DOCUMENTED = {
    "connection": "process pid group local remote remote_name proto state direction interface "
    "rx_bytes "
    "tx_bytes rx_packets tx_packets rtt_ms jitter_ms retransmits rtt_source retransmits_source",
    "interface": "interface kind state ipv4 ipv6 dns_servers rx_bytes tx_bytes rx_packets "
    "tx_packets rx_errors tx_errors",
    "dns": "time process pid name type response rcode latency_ms resolver interface transport",
    "group": "group processes rx_bytes tx_bytes rx_packets tx_packets",
}


def render(view: str, fmt: str, snapshot: Snapshot) -> str:
    out = io.StringIO()
    writer(view, fmt)(snapshot, out)
    return out.getvalue()


@pytest.mark.parametrize("view", ["connection", "interface", "dns"])
@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
def test_golden(view: str, fmt: str) -> None:
    text = render(view, fmt, monitor_snapshot())
    path = GOLDEN / f"view_{view}.{SUFFIX[fmt]}"
    if os.environ.get("NETOPROC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize("view", ["connection", "interface", "dns", "group"])
def test_columns_are_the_documented_ones_in_order(view: str) -> None:
    assert VIEWS[view].columns == tuple(DOCUMENTED[view].split())
    snapshot = monitor_snapshot()
    assert render(view, "tsv", snapshot).splitlines()[0].split("\t") == DOCUMENTED[view].split()
    rows = json.loads(render(view, "json", snapshot))
    assert rows and all(list(row) == DOCUMENTED[view].split() for row in rows)


@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
def test_process_view_is_the_readmes_table(fmt: str) -> None:
    out = io.StringIO()
    FORMATS[fmt](readme_snapshot(), out)
    assert render("process", fmt, readme_snapshot()) == out.getvalue()
    assert VIEW_NAMES[0] == "process"


def test_connection_rows_carry_the_snapshots_values() -> None:
    rows = json.loads(render("connection", "json", monitor_snapshot()))
    first = rows[0]  # most bytes first: firefox to github.com
    assert first == {
        "process": "firefox", "pid": 1842, "group": None, "local": "192.168.1.100:54321",
        "remote": "140.82.121.4:443", "remote_name": "github.com", "proto": "TCP",
        "state": "ESTABLISHED", "direction": "Out", "interface": "en0",
        "rx_bytes": 98_500_000, "tx_bytes": 9_100_000, "rx_packets": 70_000,
        "tx_packets": 20_000, "rtt_ms": 12.0, "jitter_ms": None, "retransmits": 0,
        "rtt_source": None, "retransmits_source": None,
    }  # fmt: skip
    totals = [r["rx_bytes"] + r["tx_bytes"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    unknown = [r for r in rows if r["process"] == "unknown"]
    assert len(unknown) == 1 and unknown[0]["pid"] is None


def test_filter_applies_to_every_view() -> None:
    kept = monitor_snapshot().filtered("curl")
    rows = json.loads(render("connection", "json", kept))
    assert [r["process"] for r in rows] == ["curl"]
    dns = json.loads(render("dns", "json", kept))
    assert [r["name"] for r in dns] == ["example.com"]


@pytest.mark.parametrize("view", ["connection", "interface", "dns"])
@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
def test_hostile_strings_stay_inert(view: str, fmt: str) -> None:
    text = render(view, fmt, hostile_snapshot())
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    if fmt == "tsv":
        header, *rows = text.splitlines()
        assert rows and all(r.count("\t") == header.count("\t") for r in rows)
    elif fmt == "json":
        text.encode("ascii")
        assert json.loads(text)
    if view == "interface" and fmt != "json":
        assert "wlan\\x1b]0;pwned\\x07" in text


def test_empty_views() -> None:
    empty = Snapshot(time=0.0, started=0.0, interval=1.0)
    for view in ("connection", "interface", "dns"):
        assert json.loads(render(view, "json", empty)) == []
        assert render(view, "tsv", empty).count("\n") == 1
        assert render(view, "pretty", empty).splitlines()[-1] == "0 rows"
