"""The tab bar and the status bar: what they say, and what gives way when the line is short."""

from __future__ import annotations

import dataclasses

from netoproc.snapshot import ANY_PORT, CaptureHealth, Traffic
from netoproc.tui.bars import Status, compact, status_text, too_small_text
from tests import fixtures

FULL = Status(
    view="Connection",
    sort="traffic ↓",
    interval=1.0,
    filter="firefox",
    connections=12,
    total_connections=340,
    health=CaptureHealth(bytes=1000, kernel_drops=2, queue_drops=1, unattributed_bytes=25),
    position="3/12",
)


def test_a_wide_status_bar_says_everything() -> None:
    line = status_text(FULL, 200).plain
    assert line == (
        " Connection  filter: firefox │ sort: traffic ↓ │ every 1s │ 12 of 340 conns │ drops 3"
        " │ unknown 2.5% │ 3/12 │ ? help"
    )


def test_an_80_column_status_bar_shortens_before_it_leaves_anything_out() -> None:
    assert status_text(FULL, 80).plain == (
        " Connection  /firefox │ traffic↓ │ 1s │ 12/340 conns │ drops 3 │ unknown 2.5%"
    )
    unfiltered = status_text(dataclasses.replace(FULL, filter=None, position=""), 80).plain
    assert unfiltered == (
        " Connection  sort: traffic ↓ │ 1s │ 12 of 340 conns │ drops 3 │ unknown 2.5%"
    )


def test_the_status_bar_never_overflows() -> None:
    long_filter = Status(view="DNS", sort="time ↑", interval=0.5, filter="x" * 300)
    for width in (10, 40, 80):
        assert status_text(long_filter, width).cell_len <= width


def test_decode_errors_show_only_when_there_are_some() -> None:
    bad = dataclasses.replace(FULL, health=CaptureHealth(bytes=1000, malformed=7))
    assert "│ drops 0 │ malformed 7 │" in status_text(bad, 200).plain
    unfiltered = dataclasses.replace(bad, filter=None, position="")
    assert status_text(unfiltered, 80).plain == (
        " Connection  traffic↓ │ 1s │ 12/340 conns │ drops 0 │ bad 7 │ unknown 0.0%"
    )
    assert "malformed" not in status_text(FULL, 200).plain


def test_untrusted_filter_text_is_shown_as_escapes() -> None:
    line = status_text(Status(view="Process", sort="pid ↑", interval=1, filter="\x1b[2J[b]"), 80)
    assert "\\x1b[2J[b]" in line.plain


def test_too_small_names_both_sizes() -> None:
    assert too_small_text(60, 20, (80, 24)).startswith(
        "netoproc needs a terminal of at least 80x24; this one is 60x20."
    )


def test_the_owner_source_is_said_and_shortened_last() -> None:
    ebpf = dataclasses.replace(FULL, health=CaptureHealth(bytes=1000, owners="eBPF"))
    assert "│ unknown 0.0% │ owners: eBPF │" in status_text(ebpf, 200).plain
    lost = dataclasses.replace(ebpf, health=CaptureHealth(owners="eBPF", owner_events_lost=1200))
    assert "owners: eBPF, 1,200 lost" in status_text(lost, 200).plain
    fallback = dataclasses.replace(
        FULL, health=CaptureHealth(owners="sockets", owners_why="needs CAP_BPF\x1b[2J")
    )
    assert "owners: /proc (no eBPF: needs CAP_BPF\\x1b[2J)" in status_text(fallback, 200).plain
    assert status_text(dataclasses.replace(fallback, filter=None, position=""), 100).plain == (
        " Connection  sort: traffic ↓ │ every 1s │ 12 of 340 conns │ drops 0 │ unknown 0.0%"
        " │ no eBPF"
    )
    assert "owners" not in status_text(FULL, 200).plain  # macOS, replays: nothing to say


FLOOD = dataclasses.replace(fixtures.FLOOD, iface="eth\x1b[0")


def test_a_flood_is_said_with_its_size_and_names_are_escaped() -> None:
    scan = dataclasses.replace(FLOOD, proto=17, lport=ANY_PORT, ports=65_535, sources=1,
                               sources_exact=True, total=Traffic(rx_packets=70_000))  # fmt: skip
    flooded = dataclasses.replace(
        FULL, health=dataclasses.replace(FULL.health or CaptureHealth(), floods=(FLOOD, scan))
    )
    assert "│ flood on TCP :80 (eth\\x1b[0) — 1.2M packets from ~950k sources (+1) │" in (
        status_text(flooded, 250).plain
    )
    assert "flood TCP :80 1.2M pkts (+1)" in status_text(flooded, 100).plain
    assert status_text(flooded, 80).cell_len <= 80
    assert "flood" not in status_text(FULL, 250).plain


def test_counts_are_compact() -> None:
    assert [compact(n) for n in (950, 1_000, 12_345, 950_000, 1_234_567, 35_000_000)] == [
        "950", "1.0k", "12k", "950k", "1.2M", "35M"
    ]  # fmt: skip
