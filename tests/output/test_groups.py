"""Containers and units in what people and scripts read: the process table's
group column (only when some process has one), the group view, the stream,
the exporter's label, `--filter`; hostile group names inert everywhere."""

from __future__ import annotations

import io
import json

import pytest

from netoproc.model import ProcessRef
from netoproc.output.formats import FORMATS
from netoproc.output.metrics import Metrics
from netoproc.output.stream import StreamWriter
from netoproc.output.views import writer
from netoproc.snapshot import DnsQueryRow, DnsView, ProcessRow, Snapshot, Traffic
from tests.fixtures import T0, connection, readme_snapshot

WEB = ProcessRef(100, "nginx", "root", "docker/web")
WORKER = ProcessRef(101, "nginx", "root", "docker/web")
CRON = ProcessRef(200, "cron", "root", "cron.service")
LONE = ProcessRef(300, "curl", "ann")
HOSTILE = "\x1b]0;pwned\x07\t\nevil\u202e\x9b2J.service"
EVIL = ProcessRef(666, "evil", "root", HOSTILE)


def grouped(t: float = 5.0, scale: int = 1) -> Snapshot:
    rows = (
        ProcessRow(WEB, Traffic(1000 * scale, 100 * scale, 10 * scale, 5 * scale)),
        ProcessRow(WORKER, Traffic(500 * scale, 50 * scale, 5 * scale, 2 * scale)),
        ProcessRow(CRON, Traffic(300 * scale, 30 * scale, 3 * scale, 1 * scale)),
        ProcessRow(LONE, Traffic(200 * scale, 20 * scale, 2 * scale, 1 * scale)),
        ProcessRow(None, Traffic(10 * scale, 0, 1 * scale, 0)),
    )
    conns = (
        connection(WEB, "203.0.113.9", rows[0].total),
        connection(WORKER, "203.0.113.10", rows[1].total, lport=54322),
        connection(CRON, "198.51.100.7", rows[2].total, lport=54323),
        connection(LONE, "192.0.2.77", rows[3].total, lport=54324),
    )
    dns = DnsView(queries=(
        DnsQueryRow(T0 + 1, CRON, "backup.example", "A", "192.0.2.1", "NOERROR", 1.0,
                    "192.0.2.53", "en0"),
        DnsQueryRow(T0 + 1, LONE, "example.com", "A", "192.0.2.2", "NOERROR", 1.0,
                    "192.0.2.53", "en0"),
    ))  # fmt: skip
    return Snapshot(time=T0 + t, started=T0, interval=1.0, processes=rows, connections=conns,
                    dns=dns)  # fmt: skip


def render(view: str, fmt: str, snapshot: Snapshot) -> str:
    out = io.StringIO()
    writer(view, fmt)(snapshot, out)
    return out.getvalue()


def test_the_process_table_has_a_group_column_only_when_some_process_has_one() -> None:
    tsv = render("process", "tsv", grouped()).splitlines()
    assert tsv[0].split("\t") == ["pid", "process", "group", "rx_bytes", "tx_bytes",
                                  "rx_packets", "tx_packets"]  # fmt: skip
    assert tsv[1].split("\t") == ["100", "nginx", "docker/web", "1000", "100", "10", "5"]
    assert tsv[4].split("\t")[:3] == ["300", "curl", "-"]
    rows = json.loads(render("process", "json", grouped()))
    assert [r["group"] for r in rows] == ["docker/web", "docker/web", "cron.service", None, None]
    pretty = render("process", "pretty", grouped()).splitlines()
    assert "CONTAINER/UNIT" in pretty[2] and "docker/web" in pretty[4]
    assert len({len(pretty[1]), len(pretty[3])}) == 1  # the rules span the wider table
    # without groups: the README's table, unchanged (its golden files)
    for fmt in ("tsv", "json", "pretty"):
        assert "group" not in render("process", fmt, readme_snapshot()).lower()


def test_the_group_view_sums_processes_per_container_or_unit() -> None:
    rows = json.loads(render("group", "json", grouped()))
    assert rows == [
        {"group": "docker/web", "processes": 2, "rx_bytes": 1500, "tx_bytes": 150,
         "rx_packets": 15, "tx_packets": 7},
        {"group": "cron.service", "processes": 1, "rx_bytes": 300, "tx_bytes": 30,
         "rx_packets": 3, "tx_packets": 1},
        {"group": None, "processes": 2, "rx_bytes": 210, "tx_bytes": 20, "rx_packets": 3,
         "tx_packets": 1},
    ]  # fmt: skip
    tsv = render("group", "tsv", grouped()).splitlines()
    assert tsv[0] == "group\tprocesses\trx_bytes\ttx_bytes\trx_packets\ttx_packets"
    assert tsv[3] == "-\t2\t210\t20\t3\t1"
    assert "Traffic per Container/Unit" in render("group", "pretty", grouped())


def test_the_connection_view_names_each_ones_group() -> None:
    rows = json.loads(render("connection", "json", grouped()))
    assert {r["process"] + ":" + str(r["group"]) for r in rows} == {
        "nginx:docker/web", "cron:cron.service", "curl:None"}  # fmt: skip


def test_filter_matches_the_group() -> None:
    kept = grouped().filtered("DOCKER/")
    assert [r.process for r in kept.processes] == [WEB, WORKER]
    assert {c.process for c in kept.connections} == {WEB, WORKER}
    kept = grouped().filtered("cron.serv")
    assert kept.dns is not None and [q.name for q in kept.dns.queries] == ["backup.example"]


def test_the_stream_carries_groups_and_the_group_view_its_deltas() -> None:
    out = io.StringIO()
    stream = StreamWriter("group", out)
    stream.write(grouped(1.0))
    stream.write(grouped(2.0, scale=3))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    web = [line for line in lines if line["group"] == "docker/web"]
    assert [line["rx_bytes_delta"] for line in web] == [1500, 3000]
    assert sum(line["tx_packets_delta"] for line in web) == web[-1]["tx_packets"] == 21
    out = io.StringIO()
    StreamWriter("process", out).write(grouped())
    assert {json.loads(line)["group"] for line in out.getvalue().splitlines()} == {
        "docker/web", "cron.service", None}  # fmt: skip


def test_the_exporter_labels_processes_by_group() -> None:
    metrics = Metrics()
    metrics.update(grouped())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.collect()
        for s in family.samples
    }
    labels = (("direction", "rx"), ("group", "docker/web"), ("process", "nginx"), ("user", "root"))
    key = ("netoproc_process_bytes_total", labels)
    assert samples[key] == 1500


@pytest.mark.parametrize("fmt", ["tsv", "json", "pretty"])
@pytest.mark.parametrize("view", ["process", "connection", "group"])
def test_hostile_group_names_stay_inert(view: str, fmt: str) -> None:
    snapshot = Snapshot(
        time=T0, started=T0, interval=1.0,
        processes=(ProcessRow(EVIL, Traffic(10, 20, 1, 2)),),
        connections=(connection(EVIL, "203.0.113.9", Traffic(10, 20, 1, 2)),),
    )  # fmt: skip
    text = render(view, fmt, snapshot)
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b", "\u202e", "\r"))
    if fmt == "tsv":
        header, row = text.splitlines()
        assert row.count("\t") == header.count("\t")
        assert "\\x1b]0;pwned\\x07\\t\\nevil\\u202e\\x9b2J.service" in row
    elif fmt == "json":
        text.encode("ascii")
        assert json.loads(text)[0]["group"] == HOSTILE
    out = io.StringIO()
    FORMATS["tsv"](snapshot, out)
    assert out.getvalue().count("\n") == 2
