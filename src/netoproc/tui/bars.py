"""The lines around the views: the tab bar on top, the filter bar and the status bar below.

The status bar says which view this is, the filter, the sort, the refresh
interval, how many connections are monitored and how complete the capture
is (kernel and queue drops, the share of bytes no process could be given).
When the line is too narrow, the least important items go first. Text
typed by the user or taken from the network is shown as plain text, never
as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input

from netoproc.output.text import printable
from netoproc.snapshot import CaptureHealth
from netoproc.tui.cells import BOLD, DIM, RED, count, elapsed

SEPARATOR = " │ "


class TabBar(Widget):
    """The program's name, the four views with the active one marked, and the time running."""

    DEFAULT_CSS = """
    TabBar { height: 1; background: $panel; }
    """

    def __init__(self, titles: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.titles = titles
        self.active = 0
        self.running: float | None = None

    def set_state(self, active: int, running: float | None) -> None:
        self.active, self.running = active, running
        self.refresh()

    def render(self) -> Text:
        text = Text(" netoproc ", style=Style(bold=True, color="cyan"), no_wrap=True)
        for i, title in enumerate(self.titles):
            label = f" {i + 1} {title} "
            text.append(" ")
            text.append(label, Style(reverse=True, bold=True) if i == self.active else DIM)
        if self.running is not None:
            clock = f"running {elapsed(self.running)} "
            text.append(" " * max(1, self.size.width - text.cell_len - len(clock)))
            text.append(clock, DIM)
        return text


@dataclass(frozen=True, slots=True)
class Status:
    """Everything the status bar shows."""

    view: str
    sort: str
    interval: float
    filter: str | None = None
    connections: int | None = None  # shown (after the filter)
    total_connections: int | None = None
    health: CaptureHealth | None = None
    position: str = ""
    note: str = ""  # a passing remark, e.g. why the capture stopped


def status_text(status: Status, width: int) -> Text:
    """The status line for `status`, at most `width` cells wide."""
    # (priority, text, style): the lowest priority leaves first when the line is too long
    items: list[tuple[int, str, Style | None]] = [
        (9, f" {status.view} ", BOLD + Style(reverse=True))
    ]
    if status.filter:
        items.append((8, f"filter: {printable(status.filter)}", Style(color="yellow", bold=True)))
    items.append((7, f"sort: {status.sort}", None))
    items.append((5, f"every {status.interval:g}s", None))
    if status.connections is not None:
        shown = count(status.connections)
        total = status.total_connections
        conns = (
            f"{shown} of {count(total)} conns"
            if total not in (None, status.connections)
            else f"{shown} conns"
        )
        items.append((6, conns, None))
    if status.health is not None:
        drops = status.health.kernel_drops + status.health.queue_drops
        items.append((4, f"drops {count(drops)}", RED if drops else None))
        share = status.health.unattributed_share
        shown_share = "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"
        items.append((4, f"unknown {shown_share}", None))
    if status.position:
        items.append((2, status.position, DIM))
    if status.note:
        items.append((3, printable(status.note), Style(color="red", bold=True)))
    items.append((1, "? help", DIM))

    def length(kept: list[tuple[int, str, Style | None]]) -> int:
        return sum(cell_len(t) for _, t, _ in kept) + len(SEPARATOR) * (len(kept) - 1)

    for floor in range(1, 9):
        if length(items) <= width:
            break
        items = [item for item in items if item[0] > floor]
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (_, item, style) in enumerate(items):
        if i > 1:
            text.append(SEPARATOR, DIM)
        elif i == 1:
            text.append(" ")
        text.append(item, style or "")
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; dock: bottom; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.status: Status | None = None

    def set_status(self, status: Status) -> None:
        self.status = status
        self.refresh()

    def render(self) -> Text:
        return status_text(self.status, self.size.width) if self.status else Text()


class FilterBar(Input):
    """`/`: type a pattern; Enter applies it, Esc closes without applying."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]
    DEFAULT_CSS = """
    FilterBar { dock: bottom; height: 1; border: none; padding: 0 1; margin-bottom: 1; }
    """

    class Cancelled(Message):
        pass

    def __init__(self, current: str | None) -> None:
        super().__init__(
            value=current or "",
            placeholder="filter: process name, remote address or domain (Enter apply, Esc cancel)",
            id="filter-bar",
        )

    def action_cancel(self) -> None:
        self.post_message(self.Cancelled())


def too_small_text(width: int, height: int, need: tuple[int, int]) -> str:
    """What a terminal too small for the views shows instead of a broken layout."""
    return (
        f"netoproc needs a terminal of at least {need[0]}x{need[1]}; "
        f"this one is {width}x{height}.\nMake the window larger."
    )
