"""Units, sparklines, colours and fitting: what one value looks like in one cell."""

from __future__ import annotations

import pytest

from netoproc.model import parse_addr
from netoproc.tui.cells import (
    GREEN,
    RED,
    YELLOW,
    clock_time,
    compact_rate,
    decimal_size,
    elapsed,
    endpoint,
    fit,
    milliseconds,
    rate_style,
    rate_text,
    sparkline,
    state_text,
)


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
def test_rate_text_matches_the_guides_connection_view(rate: float, text: str) -> None:
    assert rate_text(rate) == text


def test_rates_are_coloured_by_the_guides_thresholds() -> None:
    assert rate_style(999) == GREEN
    assert rate_style(1_000) == YELLOW
    assert rate_style(100_000) == YELLOW
    assert rate_style(100_001) == RED


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (999, "999 B"), (102_000, "102.0 KB"), (128_500_000, "128.5 MB"),
     (1_200_000_000, "1.2 GB"), (999_960, "1.0 MB"), (7 * 10**15, "7000.0 TB")],
)  # fmt: skip
def test_sizes_are_base_10_like_the_rates(size: int, text: str) -> None:
    assert decimal_size(size) == text


def test_sparkline_scales_to_the_visible_maximum_and_never_invents_history() -> None:
    assert sparkline((0.0, 1.0, 2.0, 4.0, 8.0), 5) == "▁▂▃▅█"
    assert sparkline((0.0, 0.0), 2) == "▁▁"
    assert sparkline((5.0, 5.0), 4) == "  ██"  # two samples so far, right-aligned
    assert sparkline((9.0, 1.0, 2.0, 4.0), 3) == "▃▅█"  # the last three, scaled to them
    assert sparkline((1.0,), 0) == ""


def test_fit_pads_or_cuts_to_exact_cells() -> None:
    assert fit("abc", 5) == "abc  "
    assert fit("abc", 5, right=True) == "  abc"
    assert fit("abcdef", 4) == "abc…"
    assert fit("漢字漢字", 5) == "漢字…"  # wide characters count two cells
    assert fit("x", 0) == ""


def test_state_text_shortens_established_before_cutting() -> None:
    assert state_text("ESTABLISHED", 11) == "ESTABLISHED"
    assert state_text("ESTABLISHED", 6) == "ESTAB "
    assert state_text("SYN_SENT", 6) == "SYN_S…"


def test_small_readable_numbers() -> None:
    assert milliseconds(None) == "-"
    assert milliseconds(0.04) == "<0.1ms"
    assert milliseconds(0.5) == "0.5ms"
    assert milliseconds(12.4) == "12ms"
    assert elapsed(45) == "45s"
    assert elapsed(725) == "12:05"
    assert elapsed(10927) == "3:02:07"
    assert clock_time(1_800_000_001) == "08:00:01"  # UTC, see conftest


def test_endpoints_show_the_wildcard_as_a_star() -> None:
    assert endpoint(parse_addr("0.0.0.0"), 22) == "*:22"
    assert endpoint(parse_addr("::"), 53) == "*:53"
    assert endpoint(parse_addr("192.0.2.1"), 443) == "192.0.2.1:443"
    assert endpoint(parse_addr("2001:db8::1"), 443) == "[2001:db8::1]:443"
