"""Units as every view writes them, and what --verbose says of a folded flood."""

from __future__ import annotations

import pytest

from netoproc.model import ProcessRef
from netoproc.output.text import binary_size, compact_rate, decimal_size, flood_line, rate_text
from netoproc.snapshot import ANY_PORT, FloodRow
from tests.fixtures import FLOOD


def test_a_flood_line_gives_size_sources_and_reason() -> None:
    assert flood_line(FLOOD) == (
        "flood on TCP :80 (eth0): 1,200,000 packets, 48,000,000 bytes from ~950,123 sources; "
        "flood or scan: no local socket"
    )


def test_a_scan_names_its_ports_and_a_listener_its_process() -> None:
    scan = FloodRow(**{**{f: getattr(FLOOD, f) for f in FLOOD.__slots__}, "lport": ANY_PORT,
                       "ports": 65_407, "sources": 1, "sources_exact": True})  # fmt: skip
    assert flood_line(scan).startswith("flood on TCP 65,407 ports (eth0): ")
    assert flood_line(scan).endswith("from 1 sources; flood or scan: no local socket")
    owned = FloodRow(**{**{f: getattr(FLOOD, f) for f in FLOOD.__slots__},
                        "process": ProcessRef(7, "web\x1b[2J\tx")})  # fmt: skip
    assert flood_line(owned).endswith("; web\\x1b[2J\\tx (7)")


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0, "0"), (512, "512"), (999.4, "999"), (999.6, "1.0K"), (12_000, "12K"),
     (340_000, "340K"), (999_400, "999K"), (999_600, "1.0M"), (2_100_000, "2.1M"),
     (9_960_000, "10M"), (3.5e9, "3.5G"), (5e12, "999G")],
)  # fmt: skip
def test_compact_rate_is_the_process_views_four_characters(rate: float, text: str) -> None:
    assert compact_rate(rate) == text
    assert len(text) <= 4


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0, "0 B/s"), (999.4, "999 B/s"), (999.6, "1.0 KB/s"), (12_000, "12 KB/s"),
     (200_000, "200 KB/s"), (999_600, "1.0 MB/s"), (1_200_000, "1.2 MB/s"),
     (1_500_000, "1.5 MB/s"), (50_000, "50 KB/s"), (2.5e9, "2.5 GB/s"), (4.2e12, "4200 GB/s")],
)  # fmt: skip
def test_rate_text_is_the_connection_views(rate: float, text: str) -> None:
    assert rate_text(rate) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (999, "999 B"), (102_000, "102.0 KB"), (128_500_000, "128.5 MB"),
     (1_200_000_000, "1.2 GB"), (999_960, "1.0 MB"), (7 * 10**15, "7000.0 TB")],
)  # fmt: skip
def test_sizes_are_base_10_like_the_rates(size: int, text: str) -> None:
    assert decimal_size(size) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_153_434, "1.1 MiB"),
     (1024**2 - 1, "1.0 MiB"), (5 * 1024**5, "5120.0 TiB")],
)  # fmt: skip
def test_sizes_in_the_pretty_table_are_binary(size: int, text: str) -> None:
    assert binary_size(size) == text
