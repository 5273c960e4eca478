"""The `?` overlay lists the monitor's keys, and every key it lists is bound."""

from __future__ import annotations

from textual.binding import Binding
from textual.dom import DOMNode

from netoproc.tui.app import MonitorApp
from netoproc.tui.help import KEYS
from netoproc.tui.process_view import ProcessTable
from netoproc.tui.table import RowTable

# the overlay's names for keys -> Textual's
TEXTUAL_KEYS = {
    "q": ["q"], "Ctrl-C": ["ctrl+c"], "Tab": ["tab"], "Shift-Tab": ["shift+tab"],
    "1": ["1"], "2": ["2"], "3": ["3"], "4": ["4"], "/": ["slash"], "Esc": ["escape"],
    "s": ["s"], "S (Shift-s)": ["S"], "↑ / ↓": ["up", "down"], "Enter": ["enter"],
    "PgUp / PgDn": ["pageup", "pagedown"], "Home / End": ["home", "end"], "?": ["question_mark"],
}  # fmt: skip


def _bound(cls: type[DOMNode]) -> set[str]:
    keys: set[str] = set()
    for binding in cls.BINDINGS:
        assert isinstance(binding, Binding)
        keys.update(binding.key.split(","))
    return keys


def test_the_overlay_lists_every_key_once_and_each_is_bound() -> None:
    assert [key for key, _ in KEYS] == list(TEXTUAL_KEYS)
    bound = _bound(MonitorApp) | _bound(RowTable) | _bound(ProcessTable)
    for names in TEXTUAL_KEYS.values():
        assert set(names) <= bound, names
