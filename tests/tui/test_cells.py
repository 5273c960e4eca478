"""Units, sparklines, colours and fitting: what one value looks like in one cell."""

from __future__ import annotations

from netoproc.model import parse_addr
from netoproc.tui.cells import (
    GREEN,
    RED,
    YELLOW,
    clock_time,
    elapsed,
    endpoint,
    fit,
    milliseconds,
    rate_style,
    sparkline,
    state_text,
)


def test_rates_are_coloured_by_the_readmes_thresholds() -> None:
    assert rate_style(999) == GREEN
    assert rate_style(1_000) == YELLOW
    assert rate_style(100_000) == YELLOW
    assert rate_style(100_001) == RED


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
    assert elapsed(0) == elapsed(59.9) == "<1m"
    assert elapsed(60) == "1m"
    assert elapsed(725) == "12m"
    assert elapsed(10927) == "3h 02m"
    assert clock_time(1_800_000_001) == "08:00:01"  # UTC, see conftest


def test_endpoints_show_the_wildcard_as_a_star() -> None:
    assert endpoint(parse_addr("0.0.0.0"), 22) == "*:22"
    assert endpoint(parse_addr("::"), 53) == "*:53"
    assert endpoint(parse_addr("192.0.2.1"), 443) == "192.0.2.1:443"
    assert endpoint(parse_addr("2001:db8::1"), 443) == "[2001:db8::1]:443"
