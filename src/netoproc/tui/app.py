"""The monitor: the full-screen app that shows the latest snapshot in four views.

It owns the screen layout (tab bar, the views, filter bar, status bar), the
keys netoproc(1) lists under KEYS (tui/help.py), the filter and the sort of each view, and
the terminal's fate: whatever ends the app (q, Ctrl-C, SIGTERM, SIGHUP, an
error in the app or in the capture), Textual's driver puts the terminal back
as it was, and an error is reported afterwards as one line.

Snapshots arrive as messages posted from the source's thread; a snapshot
still queued when a newer one arrives is dropped (`can_replace`), so a busy
UI shows the latest state rather than catching up. Only the active view is
redrawn, and it formats only the lines on screen.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.filter import LineFilter, Monochrome, NoColor
from textual.message import Message
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Static

from netoproc.output.text import printable
from netoproc.snapshot import Snapshot
from netoproc.tui.bars import FilterBar, Status, StatusBar, TabBar, too_small_text
from netoproc.tui.connection_view import ConnectionTable
from netoproc.tui.dns_view import DnsPanel
from netoproc.tui.driver import QuietDriver
from netoproc.tui.help import HelpScreen
from netoproc.tui.interface_view import InterfaceCards
from netoproc.tui.order import View, initial_order
from netoproc.tui.process_view import ProcessTable
from netoproc.tui.source import SnapshotSource
from netoproc.tui.table import RowTable

MINIMUM_SIZE = (80, 24)  # smaller, the screen asks to be resized (README, "Monitor mode")
EXIT_OK, EXIT_FATAL = 0, 4
VIEW_IDS = ("process", "connection", "interface", "dns")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    """The command line's say in the monitor."""

    sort: str = "traffic"
    filter: str | None = None
    no_color: bool = False
    interval: float = 1.0
    interface: str | None = None  # --interface: the Interface view shows only this card
    debug: bool = False  # NETOP_LOG=debug: a crash shows Textual's full traceback
    notice: Callable[[], str] | None = None  # a remark from beside the capture (the ledger's)


class SnapshotArrived(Message):
    """A new snapshot from the source's thread; a newer one makes a queued one stale."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotArrived)


class SourceFailed(Message):
    """The source stopped for good (the capture failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class MonitorApp(App[None]):
    CSS = """
    Screen { layout: vertical; }
    #views { height: 1fr; }
    #too-small { display: none; height: 1fr; content-align: center middle; text-align: center; }
    Screen.too-small > * { display: none; }
    Screen.too-small > #too-small { display: block; }
    """
    # Priority bindings act the moment a key is read, before the keys read
    # after it are handed on: after `/` or `2`, keys typed at once go to the
    # filter bar or the new view, not to the widget that had the focus.
    # While the filter bar is open, the keys that are also text are its own.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", priority=True),
        Binding("ctrl+c", "interrupt", "Quit", priority=True),
        Binding("tab", "cycle_view(1)", "Next view", priority=True),
        Binding("shift+tab", "cycle_view(-1)", "Previous view", priority=True),
        Binding("1", "view(0)", "Process", priority=True),
        Binding("2", "view(1)", "Connection", priority=True),
        Binding("3", "view(2)", "Interface", priority=True),
        Binding("4", "view(3)", "DNS", priority=True),
        Binding("slash", "open_filter", "Filter", priority=True),
        Binding("escape", "escape", "Close filter bar or clear filter", priority=True),
        Binding("enter", "apply_filter", "Apply filter", priority=True),
        Binding("s", "sort_next", "Sort", priority=True),
        Binding("S", "sort_reverse", "Reverse sort", priority=True),
        Binding("question_mark", "help", "Help", priority=True),
    ]
    TEXT_KEY_ACTIONS = frozenset(
        {"quit", "view", "open_filter", "sort_next", "sort_reverse", "help"}
    )
    ENABLE_COMMAND_PALETTE = False
    TITLE = "netoproc"

    def __init__(self, source: SnapshotSource, options: MonitorOptions) -> None:
        super().__init__(driver_class=QuietDriver)
        self.source = source
        self.options = options
        if options.no_color:
            self.no_color = True  # also lets widgets pick styles that need no colour
        self.snapshot: Snapshot | None = None
        self.filter = options.filter or None
        self.active = 0
        self.failure: str | None = None
        self.crash: BaseException | None = None
        self._shown: tuple[Snapshot, str | None, Snapshot] | None = None
        self.views: Sequence[View] = (
            ProcessTable(id="process"),
            ConnectionTable(id="connection"),
            InterfaceCards(id="interface", only=options.interface),
            DnsPanel(id="dns"),
        )
        self.orders = [initial_order(view.SORTS, options.sort) for view in self.views]

    # layout ----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield TabBar([view.TITLE for view in self.views], id="tabs")
        with ContentSwitcher(initial=VIEW_IDS[0], id="views"):
            for view in self.views:
                yield cast(Widget, view)
        yield FilterBar()
        yield StatusBar(id="status")
        yield Static("", id="too-small", markup=False)

    def get_line_filters(self) -> Sequence[LineFilter]:
        filters = super().get_line_filters()
        if not self.no_color:
            return filters
        # NO_COLOR means no colour at all: Textual's default greys it (Monochrome)
        kept = [f for f in filters if not isinstance(f, Monochrome | NoColor)]
        return [*kept, NoColor()]

    def on_mount(self) -> None:
        self._check_size(self.size.width, self.size.height)
        self.screen.set_focus(self.views[0].keyboard_target)
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self.exit)
        self._update_bars()
        self.source.start(self._deliver, self._fail)

    def on_unmount(self) -> None:
        self.source.stop()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < MINIMUM_SIZE[0] or height < MINIMUM_SIZE[1]
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        screen.set_class(small, "too-small")
        if small:
            self.query_one("#too-small", Static).update(too_small_text(width, height, MINIMUM_SIZE))

    # snapshots -------------------------------------------------------------

    def _deliver(self, snapshot: Snapshot) -> None:
        self.post_message(SnapshotArrived(snapshot))  # thread-safe

    def _fail(self, reason: str) -> None:
        self.post_message(SourceFailed(reason))

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.snapshot = message.snapshot
        self.refresh_view()

    def on_source_failed(self, message: SourceFailed) -> None:
        self.failure = message.reason
        self.exit(return_code=EXIT_FATAL)

    def shown_snapshot(self) -> Snapshot | None:
        """The latest snapshot with the filter applied (filtered once per snapshot)."""
        if self.snapshot is None:
            return None
        if self._shown is None or self._shown[:2] != (self.snapshot, self.filter):
            self._shown = (self.snapshot, self.filter, self.snapshot.filtered(self.filter))
        return self._shown[2]

    def refresh_view(self) -> None:
        """Show the latest snapshot in the active view, and update the bars."""
        shown = self.shown_snapshot()
        if shown is not None:
            self.views[self.active].show(shown, self.orders[self.active])
        self._update_bars()

    def _update_bars(self) -> None:
        view = self.views[self.active]
        snapshot, shown = self.snapshot, self.shown_snapshot()
        self.query_one(TabBar).set_state(
            self.active, snapshot.time - snapshot.started if snapshot else None
        )
        self.query_one(StatusBar).set_status(
            Status(
                view=view.TITLE,
                sort=self.orders[self.active].label(view.SORTS),
                interval=self.options.interval,
                filter=self.filter,
                connections=len(shown.connections) if shown else None,
                total_connections=len(snapshot.connections) if snapshot else None,
                health=snapshot.health if snapshot else None,
                position=view.position(),
                note=(self.options.notice() if self.options.notice else "")
                if snapshot
                else "starting capture…",
            )
        )

    @on(RowTable.CursorMoved)
    def _cursor_moved(self) -> None:
        self._update_bars()

    # keys ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = self.query_one(FilterBar).is_open
        if action in self.TEXT_KEY_ACTIONS:
            return not typing  # while typing, the key goes on to the filter bar as text
        if action == "apply_filter":
            return typing  # else Enter is the view's (expand a process)
        if action == "escape":  # else Esc is for whoever else wants it (the help overlay)
            return typing or (self.filter is not None and not isinstance(self.screen, HelpScreen))
        return True

    def action_interrupt(self) -> None:
        self.exit()

    def action_view(self, index: int) -> None:
        self.active = index
        self.query_one(ContentSwitcher).current = VIEW_IDS[index]
        if not self.query_one(FilterBar).is_open:
            self.screen.set_focus(self.views[index].keyboard_target)
        self.refresh_view()

    def action_cycle_view(self, step: int) -> None:
        self.action_view((self.active + step) % len(self.views))

    def action_sort_next(self) -> None:
        self.orders[self.active] = self.orders[self.active].next(self.views[self.active].SORTS)
        self.refresh_view()

    def action_sort_reverse(self) -> None:
        self.orders[self.active] = self.orders[self.active].flipped()
        self.refresh_view()

    def action_open_filter(self) -> None:
        self.query_one(FilterBar).open(self.filter)

    def action_apply_filter(self) -> None:
        self._close_filter_bar(apply=True)

    def action_escape(self) -> None:
        if self.query_one(FilterBar).is_open:
            self._close_filter_bar(apply=False)
        else:
            self.filter = None
            self.refresh_view()

    def _close_filter_bar(self, apply: bool) -> None:
        self.query_one(FilterBar).finish(apply)
        self.screen.set_focus(self.views[self.active].keyboard_target)
        self._update_bars()

    @on(FilterBar.Applied)
    def _apply_filter(self, message: FilterBar.Applied) -> None:
        self.filter = message.value.strip() or None
        self.refresh_view()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen())

    # errors ----------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        # Textual's hook for an unhandled error: it tears the app down and
        # restores the terminal. Keep that; print one line afterwards
        # (run_monitor) instead of a traceback with locals, unless debugging.
        self.crash = error
        super()._handle_exception(error)
        if not self.options.debug:
            self._exit_renderables.clear()


def make_app(source: SnapshotSource, options: MonitorOptions | None = None) -> MonitorApp:
    """The monitor built from explicit inputs (the command line, the tests, the benchmarks)."""
    return MonitorApp(source, options or MonitorOptions())


def run_monitor(source: SnapshotSource, options: MonitorOptions) -> int:
    """Run the monitor in this terminal until the user quits; returns the exit code."""
    app = make_app(source, options)
    app.run()
    # the messages may quote what the network or another process said
    if app.crash is not None:
        print(f"error: unexpected {type(app.crash).__name__}: {printable(str(app.crash))}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FATAL
    if app.failure is not None:
        print(f"error: {printable(app.failure)}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK
