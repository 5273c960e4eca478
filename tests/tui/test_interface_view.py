"""The Interface view: a card per interface, a line at a time."""

from __future__ import annotations

from collections.abc import Callable

from netoproc.snapshot import InterfaceRow
from netoproc.tui.app import MonitorOptions, make_app
from netoproc.tui.interface_view import card_line
from netoproc.tui.source import StaticSource
from tests.fixtures import monitor_snapshot

SnapCompare = Callable[..., bool]


def text(row: InterfaceRow, line: int, width: int) -> str:
    return "".join(segment.text for segment in card_line(row, line, width))


def test_a_card_is_drawn_line_by_line() -> None:
    en0 = monitor_snapshot().interfaces[0]
    lines = [text(en0, n, 73) for n in range(10)]
    assert all(len(line) == 73 for line in lines)
    assert lines[0].startswith("┌─ en0 (Wi-Fi) ─") and " UP " in lines[0] and lines[0][-1] == "┐"
    assert lines[1] == "│  IPv4: 192.168.1.100" + " " * 50 + "│"
    assert lines[3].startswith("│  DNS:  192.168.1.1, 8.8.8.8 ")
    assert lines[5].startswith("│  RX: ") and "2.1 MB/s" in lines[5] and "Total: 1.2 GB" in lines[5]
    assert "340 KB/s" in lines[6] and "Total: 102.0 MB" in lines[6]
    assert "Packets:  RX 1,234,567  TX 234,567    Errors: RX 0  TX 0" in lines[8]
    assert lines[9] == "└" + "─" * 71 + "┘"


def test_sparklines_are_never_wider_than_sixty_minutes() -> None:
    en0 = monitor_snapshot().interfaces[0]
    line = text(en0, 5, 200)
    bars = [c for c in line if c in "▁▂▃▄▅▆▇█"]
    assert len(bars) == 60


def test_down_interfaces_without_addresses_say_so() -> None:
    row = InterfaceRow("wg0", "VPN", False)
    assert " DOWN " in text(row, 0, 80)
    assert "IPv4: (none)" in text(row, 1, 80) and "DNS:  (none)" in text(row, 3, 80)


def _app(**options: object) -> object:
    return make_app(StaticSource(monitor_snapshot()), MonitorOptions(**options))  # type: ignore[arg-type]


def test_snapshot_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(80, 24), press=["3"])


def test_snapshot_large(snap_compare: SnapCompare) -> None:
    assert snap_compare(_app(), terminal_size=(160, 48), press=["3"])


def test_snapshot_one_interface_and_scrolled(snap_compare: SnapCompare) -> None:
    # --interface lo0 shows its card only; PgDn cannot scroll past it
    assert snap_compare(_app(interface="lo0"), terminal_size=(80, 24), press=["3", "pagedown"])
