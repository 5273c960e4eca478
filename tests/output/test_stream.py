"""`--format jsonl`: one JSON object per row and interval, deltas that add up to the totals.

A generated capture (PKTAP, so processes are named by the file itself) is
replayed through the real program at a short interval: every line must parse
with jq, and for every row the deltas of its lines must sum to the totals
the snapshot formats print for the same file.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from netoproc.output.stream import StreamWriter
from netoproc.snapshot import Traffic
from tests import builders as b
from tests.fixtures import T0, hostile_snapshot, monitor_snapshot

LINKTYPE_PKTAP = 258


def _capture(path: Path) -> Path:
    """Three processes over ten seconds; one ("np-brief") only in the first two."""
    frames, times = [], []
    talkers = [("np-steady", 100, 40001, 300), ("np-brief", 200, 40002, 900),
               ("np-late", 300, 40003, 50)]  # fmt: skip
    for i in range(400):
        when = T0 + i * 0.025
        for name, pid, port, size in talkers:
            if name == "np-brief" and i >= 80:
                continue
            if name == "np-late" and i < 200:
                continue
            out = i % 3 != 0
            segment = b.tcp(port, 443, bytes(size + i % 7)) if out else b.tcp(443, port, bytes(60))
            packet = (b.ipv4(b.TCP, segment, src="192.0.2.1", dst="198.51.100.2") if out
                      else b.ipv4(b.TCP, segment, src="198.51.100.2", dst="192.0.2.1"))  # fmt: skip
            flags = b.PTH_FLAG_DIR_OUT if out else b.PTH_FLAG_DIR_IN
            frames.append(b.pktap_v1(b.ethernet(packet), pid=pid, comm=name, flags=flags))
            times.append(when)
    path.write_bytes(b.pcap_file(frames, LINKTYPE_PKTAP, ts=times))
    return path


def netoproc(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "netoproc", *args], capture_output=True,
                            text=True, timeout=60, check=True)  # fmt: skip
    return result.stdout


def jq(text: str) -> list[dict[str, object]]:
    """Every line through jq: each must be one JSON object."""
    out = subprocess.run(["jq", "-c", "."], input=text, capture_output=True, text=True,
                         timeout=30, check=True).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _capture(tmp_path_factory.mktemp("stream") / "three.pcap")


def _sums(
    lines: list[dict[str, object]], key: tuple[str, ...]
) -> dict[tuple[object, ...], list[int]]:
    sums: dict[tuple[object, ...], list[int]] = {}
    for line in lines:
        got = sums.setdefault(tuple(line[k] for k in key), [0, 0, 0, 0])
        for i, c in enumerate(("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")):
            got[i] += int(line[f"{c}_delta"])  # type: ignore[call-overload]
    return sums


def test_process_deltas_sum_to_the_snapshot_totals(capture: Path) -> None:
    text = netoproc("--read", str(capture), "--format", "jsonl", "--interval", "0.5")
    lines = jq(text)
    assert len(lines) == len(text.splitlines()) > 10
    assert {line["view"] for line in lines} == {"process"}
    times = [str(line["time"]) for line in lines]
    assert times == sorted(times)
    table = json.loads(netoproc("--read", str(capture), "--format", "json"))
    sums = _sums(lines, ("pid", "process"))
    expected = {(r["pid"], r["process"]): [r["rx_bytes"], r["tx_bytes"], r["rx_packets"],
                                           r["tx_packets"]] for r in table}  # fmt: skip
    assert sums == expected
    # each line's totals are the running sum of its deltas
    running: dict[object, int] = {}
    for line in lines:
        running[line["pid"]] = running.get(line["pid"], 0) + int(line["tx_bytes_delta"])  # type: ignore[call-overload]
        assert line["tx_bytes"] == running[line["pid"]]
    # np-brief stopped after 2 s: no lines for it afterwards, and none lost before
    brief = [line for line in lines if line["process"] == "np-brief"]
    assert 2 <= len(brief) <= 5


def test_connection_deltas_sum_to_the_connection_view(capture: Path) -> None:
    lines = jq(netoproc("--read", str(capture), "--format", "jsonl", "--interval", "0.5",
                        "--view", "connection"))  # fmt: skip
    table = json.loads(netoproc("--read", str(capture), "--format", "json", "--view", "connection"))
    key = ("process", "local", "remote", "proto", "interface")
    expected = {tuple(r[k] for k in key): [r["rx_bytes"], r["tx_bytes"], r["rx_packets"],
                                           r["tx_packets"]] for r in table}  # fmt: skip
    assert _sums(lines, key) == expected and len(expected) == 3


def test_filter_and_duration_apply_to_the_stream(capture: Path) -> None:
    lines = jq(netoproc("--read", str(capture), "--format", "jsonl", "--interval", "0.5",
                        "--filter", "late"))  # fmt: skip
    assert {line["process"] for line in lines} == {"np-late"}
    early = jq(netoproc("--read", str(capture), "--format", "jsonl", "--duration", "1"))
    assert {line["process"] for line in early} == {"np-steady", "np-brief"}


def test_closed_pipe_is_quiet(capture: Path) -> None:
    shell = (f"{sys.executable} -m netoproc --read {capture} --format jsonl --interval 0.1"
             " | head -n 1")  # fmt: skip
    result = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60)
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


def test_each_interval_is_flushed() -> None:
    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    out = Counting()
    stream = StreamWriter("connection", out)
    stream.write(monitor_snapshot())
    assert out.flushes == 1 and len(out.getvalue().splitlines()) == len(
        monitor_snapshot().connections
    )
    stream.write(monitor_snapshot())  # nothing moved: no lines, nothing to flush
    assert out.flushes == 1


@pytest.mark.parametrize("view", ["process", "connection", "interface", "dns"])
def test_hostile_strings_stay_on_one_line_and_exact(view: str) -> None:
    out = io.StringIO()
    hostile = hostile_snapshot()
    moved = tuple(replace(i, total=Traffic(1, 1, 1, 1)) for i in hostile.interfaces)
    StreamWriter(view, out).write(replace(hostile, interfaces=moved))
    text = out.getvalue()
    text.encode("ascii")
    assert "\x1b" not in text and "\r" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines
    names = {"process": "process", "connection": "process", "interface": "interface",
             "dns": "name"}  # fmt: skip
    assert "\x1b" in str(lines[0][names[view]])  # the exact string, escaped by JSON


def test_a_line_has_time_interval_view_totals_and_deltas() -> None:
    out = io.StringIO()
    StreamWriter("process", out).write(monitor_snapshot())
    first = json.loads(out.getvalue().splitlines()[0])
    assert list(first) == [
        "time", "interval", "view", "pid", "process", "user", "group", "exited", "rx_bytes",
        "tx_bytes", "rx_packets", "tx_packets", "rx_bytes_delta", "tx_bytes_delta",
        "rx_packets_delta", "tx_packets_delta",
    ]  # fmt: skip
    assert first["time"] == "2027-01-15T08:05:00.000Z" and first["interval"] == 300.0
    assert (first["process"], first["rx_bytes"]) == ("firefox", first["rx_bytes_delta"])
    assert T0 > 0
