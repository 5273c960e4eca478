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

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import on
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input

from netoproc.model import proto_name
from netoproc.output.text import printable
from netoproc.snapshot import CaptureHealth
from netoproc.tui.cells import BOLD, DIM, RED, YELLOW, count, elapsed

SEPARATOR = " │ "
EXTRAS = 3  # status items of this priority or lower are nice to have


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
        shown = (self.active, None if self.running is None else elapsed(self.running))
        self.active, self.running = active, running
        if (active, None if running is None else elapsed(running)) != shown:
            self.refresh()  # else the same text: nothing to repaint

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


@dataclass(slots=True)
class Item:
    """One thing the status bar says."""

    priority: int  # the lowest leaves first
    text: str
    short: str = ""
    style: Style | None = None


def status_text(status: Status, width: int) -> Text:
    """The status line for `status`, at most `width` cells wide.

    When the line is too long, the extras (help hint, cursor position, note)
    leave first; then items take their short form, least important first;
    then they leave, least important first. The view name always stays.
    """
    items: list[Item] = [Item(9, f" {status.view} ", style=BOLD + Style(reverse=True))]
    if status.filter:
        shown = printable(status.filter)
        items.append(Item(8, f"filter: {shown}", f"/{shown}", Style(color="yellow", bold=True)))
    items.append(Item(7, f"sort: {status.sort}", status.sort.replace(" ", "")))
    items.append(Item(5, f"every {status.interval:g}s", f"{status.interval:g}s"))
    if status.connections is not None:
        shown, total = count(status.connections), status.total_connections
        if total in (None, status.connections):
            items.append(Item(6, f"{shown} conns"))
        else:
            items.append(
                Item(6, f"{shown} of {count(total)} conns", f"{shown}/{count(total)} conns")
            )
    if status.health is not None:
        drops = status.health.kernel_drops + status.health.queue_drops
        items.append(Item(4, f"drops {count(drops)}", style=RED if drops else None))
        if status.health.malformed:  # packets that could not be decoded, counted and skipped
            malformed = count(status.health.malformed)
            items.append(Item(4, f"malformed {malformed}", f"bad {malformed}", style=YELLOW))
        share = status.health.unattributed_share
        shown = "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"
        items.append(Item(4, f"unknown {shown}"))
        owners = status.health.owners
        if owners == "eBPF":
            lost = status.health.owner_events_lost
            said = f"owners: eBPF, {count(lost)} lost" if lost else "owners: eBPF"
            items.append(Item(4, said, "eBPF", style=YELLOW if lost else None))
        elif owners == "sockets":
            why = printable(status.health.owners_why)
            items.append(Item(4, f"owners: /proc (no eBPF: {why})", "no eBPF", style=YELLOW))
        flood = flood_text(status.health)
        if flood:
            items.append(Item(5, flood[0], flood[1], style=RED))
    if status.position:
        items.append(Item(2, status.position, style=DIM))
    if status.note:
        items.append(Item(3, printable(status.note), style=Style(color="red", bold=True)))
    items.append(Item(1, "? help", style=DIM))

    def length() -> int:
        return sum(cell_len(item.text) for item in items) + len(SEPARATOR) * (len(items) - 1)

    def drop(up_to: int) -> None:
        nonlocal items
        for floor in range(1, up_to + 1):
            if length() <= width:
                return
            items = [item for item in items if item.priority > floor]

    drop(EXTRAS)
    for item in sorted(items, key=lambda item: item.priority):
        if length() <= width:
            break
        item.text = item.short or item.text
    drop(8)
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, item in enumerate(items):
        if i:
            text.append(SEPARATOR if i > 1 else " ", DIM)
        text.append(item.text, item.style or "")
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


def flood_text(health: CaptureHealth) -> tuple[str, str] | None:
    """What the status bar says of folded floods and scans (long and short form):
    the largest, and how many more, e.g. "flood on :80 — 1.2M pkts from 950k sources"."""
    if not health.floods:
        return None
    top = health.floods[0]
    what = f"{proto_name(top.proto)} {top.port_text}".strip()
    where = printable(f"{what} ({top.iface})" if top.iface else what)
    sources = ("~" if not top.sources_exact else "") + compact(top.sources)
    more = f" (+{len(health.floods) - 1})" if len(health.floods) > 1 else ""
    packets = compact(top.total.packets)
    return (
        f"flood on {where} — {packets} packets from {sources} sources{more}",
        f"flood {printable(what)} {packets} pkts{more}",
    )


def compact(value: int) -> str:
    """A count in three figures at most: 950, 12k, 950k, 1.2M, 35M, 1.2G."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{unit}" if scaled < 9.95 else f"{scaled:.0f}{unit}"
    return str(value)


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; dock: bottom; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.status: Status | None = None

    def set_status(self, status: Status) -> None:
        if status != self.status:  # the same text otherwise: nothing to repaint
            self.status = status
            self.refresh()

    def render(self) -> Text:
        return status_text(self.status, self.size.width) if self.status else Text()


class FilterBar(Input):
    """`/`: type a pattern; Enter applies it, Esc closes without applying (the app's keys).

    It is always there, hidden and disabled while closed: opening it must
    take the keyboard at once, so that keys typed right after `/` land in
    it and do not reach the view.
    """

    DEFAULT_CSS = """
    FilterBar, FilterBar:focus { height: 1; border: none; padding: 0 1; display: none; }
    FilterBar.open { display: block; }
    """

    def __init__(self) -> None:
        super().__init__(
            placeholder="filter: process name, remote address or domain (Enter apply, Esc cancel)",
            id="filter-bar",
            disabled=True,
        )

    class Applied(Message):
        """The pattern typed, once every key typed before Enter is in."""

        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    class _Finish(Message):
        def __init__(self, apply: bool) -> None:
            super().__init__()
            self.apply = apply

    @property
    def is_open(self) -> bool:
        return self.has_class("open")

    def open(self, current: str | None) -> None:
        self.value = current or ""
        self.cursor_position = len(self.value)
        self.disabled = False
        self.add_class("open")
        self.screen.set_focus(self)  # now, not after the keys already read

    def finish(self, apply: bool) -> None:
        """Close at once; the keys already sent here are still typed in, then `Applied`."""
        self.remove_class("open")
        self.post_message(self._Finish(apply))  # queued behind those keys

    @on(_Finish)
    def _finished(self, message: _Finish) -> None:
        self.disabled = True
        if message.apply:
            self.post_message(self.Applied(self.value))


def too_small_text(width: int, height: int, need: tuple[int, int]) -> str:
    """What a terminal too small for the views shows instead of a broken layout."""
    return (
        f"netoproc needs a terminal of at least {need[0]}x{need[1]}; "
        f"this one is {width}x{height}.\nMake the window larger."
    )
