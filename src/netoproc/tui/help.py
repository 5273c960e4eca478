"""The `?` overlay: the monitor's keys, over the current view."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

# Every key of the monitor; README ("Monitor mode") and netoproc(1) (KEYS) list the
# same keys (tests/tui/test_help.py and tests/test_manual.py check).
KEYS = (
    ("q", "Quit netop"),
    ("Ctrl-C", "Quit netop"),
    ("Tab", "Cycle to next view: Process → Connection → Interface → DNS → Process"),
    ("Shift-Tab", "Cycle to previous view"),
    ("1", "Jump to Process View"),
    ("2", "Jump to Connection View"),
    ("3", "Jump to Interface View"),
    ("4", "Jump to DNS View"),
    ("/", "Open filter bar (type a pattern, press Enter to apply)"),
    ("Esc", "Close filter bar without applying, or clear active filter"),
    ("s", "Cycle sort column forward"),
    ("S (Shift-s)", "Reverse sort direction (ascending ↔ descending)"),
    ("↑ / ↓", "Navigate rows up/down"),
    ("Enter", "Expand or collapse selected row (Process View only)"),
    ("PgUp / PgDn", "Scroll by one page"),
    ("Home / End", "Jump to first / last row"),
    ("?", "Toggle help overlay"),
)


def key_table() -> Table:
    table = Table(title="Keyboard shortcuts", box=None, padding=(0, 2), expand=False)
    table.add_column("Key", style="bold", no_wrap=True)
    table.add_column("Action")
    for key, action in KEYS:
        table.add_row(key, action)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,escape", "app.pop_screen", "Close help", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static {
        width: auto; max-width: 90%; height: auto; max-height: 90%;
        border: round $accent; padding: 0 1; background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static(key_table(), id="help")
