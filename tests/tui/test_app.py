"""The monitor driven by its keys, as netoproc(1) (KEYS) and the README list them.

Each test starts the app on fixture snapshots (no capture), presses keys
with Textual's Pilot and checks what the screen or the app's state shows.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

import pytest
from textual import events
from textual.filter import Monochrome, NoColor

from netoproc.model import ProcessRef
from netoproc.snapshot import ProcessRow, Snapshot, Traffic
from netoproc.tui.app import MonitorApp, MonitorOptions, SnapshotArrived, make_app
from netoproc.tui.bars import FilterBar, StatusBar
from netoproc.tui.help import HelpScreen
from netoproc.tui.process_view import Child, ProcessTable
from netoproc.tui.source import Deliver, Fail, StaticSource
from tests.fixtures import (
    busy_snapshot,
    hostile_snapshot,
    live_connection,
    long_run_snapshot,
    monitor_snapshot,
)
from tests.tui.screen import screen_lines, screen_text

BIG = (160, 48)


def app_on(snapshot: Snapshot | None = None, **options: object) -> MonitorApp:
    source = StaticSource(snapshot or monitor_snapshot())
    return make_app(source, MonitorOptions(**options))  # type: ignore[arg-type]


def status(app: MonitorApp) -> str:
    bar = app.query_one(StatusBar)
    assert bar.status is not None
    return str(bar.render())


def help_shown(app: MonitorApp) -> bool:
    return isinstance(app.screen, HelpScreen)


def first_column(app: MonitorApp) -> list[str]:
    """The Process view's process names, top to bottom."""
    table = app.query_one(ProcessTable)
    return [row.name for row in table.rows if isinstance(row, ProcessRow)]


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
async def test_q_and_ctrl_c_quit(key: str) -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press(key)
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


async def test_tab_and_shift_tab_cycle_through_the_views_in_the_tab_bars_order() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        seen = [status(app).split()[0]]
        for _ in range(4):
            await pilot.press("tab")
            seen.append(status(app).split()[0])
        assert seen == ["Process", "Connection", "Interface", "DNS", "Process"]
        await pilot.press("shift+tab")
        assert status(app).startswith(" DNS ")
        await pilot.press("shift+tab")
        assert status(app).startswith(" Interface ")


@pytest.mark.parametrize(
    ("key", "view", "header"),
    [("1", "Process", "Sockets"), ("2", "Connection", "Retrans"),
     ("3", "Interface", "en0 (Wi-Fi)"), ("4", "DNS", "Resolver statistics")],
)  # fmt: skip
async def test_number_keys_jump_to_their_view(key: str, view: str, header: str) -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("4" if key != "4" else "1")
        await pilot.press(key)
        await pilot.pause()
        assert status(app).startswith(f" {view} ")
        assert header in screen_lines(app)[1] + screen_lines(app)[2]
        assert app.focused is app.views[app.active].keyboard_target


async def test_filter_bar_applies_on_enter_and_matches_names_addresses_and_domains() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("slash")
        assert isinstance(app.focused, FilterBar)
        await pilot.press(*"FIRE", "enter")  # case-insensitive
        await pilot.pause()
        assert not app.query_one(FilterBar).is_open
        assert first_column(app) == ["firefox"]
        assert "filter: FIRE" in status(app)
        assert isinstance(app.focused, ProcessTable)
        await pilot.press("slash", *"\b\b\b\b", *"93.184", "enter")  # a remote address
        assert first_column(app) == ["curl"]
        await pilot.press("slash", "ctrl+u", *"github.com", "enter")  # a domain
        assert first_column(app) == ["firefox"]
        await pilot.press("2")
        await pilot.pause()
        assert "1 of 7 conns" in status(app)


async def test_escape_closes_the_filter_bar_without_applying_then_clears_the_filter() -> None:
    app = app_on(filter="curl")
    async with app.run_test(size=BIG) as pilot:
        assert first_column(app) == ["curl"]  # --filter is the initial filter
        await pilot.press("slash", "ctrl+u", *"node", "escape")
        assert not app.query_one(FilterBar).is_open
        assert first_column(app) == ["curl"]  # not applied
        await pilot.press("escape")
        assert app.filter is None
        assert len(first_column(app)) == 6
        assert "filter:" not in status(app)


async def test_typing_in_the_filter_bar_does_not_trigger_keys() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("slash", "q", "s", "2", "question_mark")
        assert app.is_running and app.active == 0 and isinstance(app.focused, FilterBar)
        assert app.query_one(FilterBar).value == "qs2?"


async def test_s_cycles_the_sort_column_and_capital_s_reverses_it() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        assert "sort: traffic ↓" in status(app)
        assert first_column(app)[:3] == ["firefox", "node", "curl"]
        await pilot.press("s")
        assert "sort: pid ↑" in status(app)
        assert first_column(app)[0] == "idle"  # pid 99
        assert first_column(app)[-1] == "unknown"  # no pid: last
        await pilot.press("S")
        assert "sort: pid ↓" in status(app)
        assert first_column(app)[0] == "unknown"
        await pilot.press("s")
        assert "sort: name ↑" in status(app)  # a new column starts in its natural direction
        assert first_column(app) == sorted(first_column(app))


async def test_s_cycles_through_every_column_and_back() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("2")
        labels = []
        for _ in range(len(app.views[1].SORTS)):
            labels.append(status(app).split("sort: ")[1].split(" ")[0])
            await pilot.press("s")
        assert labels[0] == "traffic" and "sort: traffic" in status(app)
        assert len(set(labels)) == len(labels)


async def test_sort_option_sets_the_initial_column_of_every_view_that_has_it() -> None:
    app = app_on(sort="name")
    async with app.run_test(size=BIG) as pilot:
        assert "sort: name ↑" in status(app)
        await pilot.press("2")
        assert "sort: process ↑" in status(app)
        await pilot.press("3")
        assert "sort: name ↑" in status(app)


async def test_enter_expands_a_process_into_its_sockets_and_connections() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("enter")  # firefox, the top talker
        await pilot.pause()
        lines = screen_lines(app)
        assert "firefox" in lines[2]
        assert lines[3].lstrip().startswith("├─ fd=5")
        assert "192.168.1.100:54321 → 140.82.121.4:443" in lines[3]
        assert "ESTABLISHED" in lines[3] and "↓1.2M" in lines[3] and "↑200K" in lines[3]
        assert "dns query" in lines[5]
        assert lines[6].lstrip().startswith("└─ fd=8") and "(no connection)" in lines[6]
        await pilot.press("down", "down", "enter")  # on a child line: collapses its parent
        await pilot.pause()
        table = app.query_one(ProcessTable)
        assert not any(isinstance(row, Child) for row in table.rows)
        assert isinstance(table.current, ProcessRow) and table.current.name == "firefox"


@pytest.mark.parametrize(
    ("size", "curl", "backup"),
    [
        (BIG, "curl (312 exited)", "backup-w… (1,234 exited)"),
        ((80, 24), "curl ×312", "ba… ×1,234"),
    ],
)
async def test_folded_exited_processes_show_how_many_and_no_pid(
    size: tuple[int, int], curl: str, backup: str
) -> None:
    app = app_on(long_run_snapshot())
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        lines = screen_lines(app)
        for name, user in ((curl, "admin"), (backup, "root")):
            (line,) = [line for line in lines if f" {name} " in line]
            assert line.split()[0] == "-" and line.split()[len(name.split()) + 1] == user


async def test_expanded_rows_list_listening_and_unconnected_sockets() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("down", "enter")  # node
        await pilot.pause()
        text = screen_text(app)
        assert "fd=20  TCP    *:3000  (listening)" in text
        assert "fd=21  TCP    10.0.0.2:3000 → 10.0.0.5:49201" in text
        assert "fd=22  UDP    *:5353  (no connection)" in text and "UNCONN" in text


async def test_enter_does_nothing_outside_the_process_view() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("2", "enter", "1")
        assert not app.query_one(ProcessTable).expanded


async def test_arrows_pages_home_and_end_move_through_a_thousand_processes() -> None:
    app = app_on(busy_snapshot())
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(ProcessTable)
        await pilot.press("down", "down", "down", "up")
        assert table.cursor == 2
        await pilot.press("pagedown")
        assert table.cursor == 2 + 27  # a page: 30 rows less tab bar, status bar and header
        await pilot.press("pageup")
        assert table.cursor == 2
        await pilot.press("end")
        assert table.cursor == len(table.rows) - 1 == 1000  # and the unknown row
        assert f"{len(table.rows)}/{len(table.rows)}" in status(app)
        await pilot.press("home")
        assert table.cursor == 0


async def test_question_mark_toggles_the_help_overlay() -> None:
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("question_mark")
        assert help_shown(app)
        assert "Cycle to next view" in screen_text(app)
        await pilot.press("question_mark")
        assert not help_shown(app)
        await pilot.press("question_mark", "escape")
        assert not help_shown(app)


async def test_status_bar_says_view_filter_sort_interval_connections_and_capture_health() -> None:
    snapshot = monitor_snapshot()
    health = dataclasses.replace(snapshot.health, kernel_drops=12, queue_drops=3)
    app = app_on(dataclasses.replace(snapshot, health=health), interval=0.5, filter="e")
    async with app.run_test(size=BIG):
        line = status(app)
        for part in ("Process", "filter: e", "sort: traffic ↓", "every 0.5s", "of 7 conns",
                     "drops 15", "unknown <0.1%"):  # fmt: skip
            assert part in line, (part, line)


async def test_a_small_terminal_gets_a_message_and_recovers_when_resized() -> None:
    app = app_on()
    async with app.run_test(size=(70, 20)) as pilot:
        text = screen_text(app)
        assert "at least 80x24" in text and "70x20" in text
        assert "firefox" not in text
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        text = screen_text(app)
        assert "at least" not in text and "firefox" in text


@pytest.mark.parametrize(
    "colourless",
    [lambda mp: None, lambda mp: mp.setenv("NO_COLOR", "")],
    ids=["--no-color", "NO_COLOR"],
)
async def test_no_color_removes_colour_rather_than_greying_it(
    monkeypatch: pytest.MonkeyPatch, colourless: Callable[[pytest.MonkeyPatch], None]
) -> None:
    colourless(monkeypatch)
    no_color = "NO_COLOR" not in os.environ
    app = app_on(no_color=no_color)
    async with app.run_test(size=BIG):
        filters = app.get_line_filters()
        assert any(isinstance(f, NoColor) for f in filters)
        assert not any(isinstance(f, Monochrome) for f in filters)
        svg = app.export_screenshot()
        colours = set(re.findall(r"fill: (#[0-9a-f]{6})", svg))
        assert len(colours) == 2  # the terminal's own foreground and background


async def test_hostile_names_reach_the_screen_as_visible_escapes_not_as_markup() -> None:
    app = app_on(hostile_snapshot())
    async with app.run_test(size=BIG) as pilot:
        for view in "1234":
            await pilot.press(view)
            await pilot.pause()
            text = screen_text(app)
            assert "\x1b" not in text and "\x07" not in text
        await pilot.press("1")
        await pilot.pause()
        assert "\\x1b[2J\\x1b[31mevil[bol" in screen_text(app)  # cut to the column
        await pilot.press("3")
        await pilot.pause()
        assert "wlan\\x1b]0;pwned\\x07 ([red]Wi-Fi)" in screen_text(app)


class ManualSource:
    """A source the test feeds by hand, like the capture thread would."""

    def __init__(self) -> None:
        self.deliver: Deliver | None = None
        self.fail: Fail | None = None
        self.stopped = False

    def start(self, deliver: Deliver, fail: Fail) -> None:
        self.deliver, self.fail = deliver, fail

    def stop(self) -> None:
        self.stopped = True


async def test_newer_snapshots_replace_older_ones_still_queued() -> None:
    older, newer = SnapshotArrived(busy_snapshot(seed=1)), SnapshotArrived(busy_snapshot(seed=2))
    assert older.can_replace(newer)
    source = ManualSource()
    app = make_app(source)
    async with app.run_test(size=BIG) as pilot:
        assert "starting capture" in status(app)
        assert source.deliver is not None
        source.deliver(monitor_snapshot())
        await pilot.pause()
        assert first_column(app)[0] == "firefox"
    assert source.stopped


async def test_a_failing_source_ends_the_app_with_its_reason() -> None:
    source = ManualSource()
    app = make_app(source)
    async with app.run_test(size=BIG) as pilot:
        assert source.fail is not None
        source.fail("capture stopped: device gone")
        await pilot.pause()
    assert app.failure == "capture stopped: device gone"
    assert app.return_code == 4


async def test_an_internal_error_ends_the_app_and_is_kept_for_a_one_line_report() -> None:
    broken = dataclasses.replace(monitor_snapshot(), processes=(None,))  # type: ignore[arg-type]
    app = app_on(broken)
    with pytest.raises(AttributeError):  # run_test re-raises it for the test's sake
        async with app.run_test(size=BIG) as pilot:
            await pilot.pause()
    assert isinstance(app.crash, AttributeError)
    assert app.return_code == 1
    assert app._exit_renderables == []  # no traceback with locals printed after exit


async def test_keys_typed_at_once_after_slash_or_a_view_key_land_where_they_mean_to() -> None:
    # a terminal delivers a fast typist's keys in one read; nothing may wait for a repaint
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        burst = [("slash", "/"), ("c", "c"), ("u", "u"), ("enter", "\r"), ("2", "2"),
                 ("down", None)]  # fmt: skip
        for key, character in burst:
            app.post_message(events.Key(key, character))
        await pilot.pause()
        assert app.filter == "cu" and app.active == 1
        assert app.query_one(ProcessTable).cursor == 0  # "down" went to the Connection view


SnapCompare = Callable[..., bool]


def test_snapshot_no_color(snap_compare: SnapCompare) -> None:
    # the Process view expanded, with the cursor in reverse video and no colour anywhere
    assert snap_compare(app_on(no_color=True), terminal_size=(100, 24), press=["enter", "down"])


def test_snapshot_help_overlay(snap_compare: SnapCompare) -> None:
    assert snap_compare(app_on(), terminal_size=(100, 30), press=["question_mark"])


def test_snapshot_too_small(snap_compare: SnapCompare) -> None:
    assert snap_compare(app_on(), terminal_size=(60, 20))


async def test_a_notice_from_beside_the_capture_shows_in_the_status_bar() -> None:
    """The ledger's state (paused on a full disk, say) while the monitor runs."""
    said = ["ledger paused: database or disk is full"]
    source = ManualSource()
    app = make_app(source, MonitorOptions(notice=lambda: said[0]))
    async with app.run_test(size=BIG) as pilot:
        assert source.deliver is not None
        source.deliver(monitor_snapshot())
        await pilot.pause()
        assert "ledger paused: database or disk is full" in status(app)
        said[0] = ""
        source.deliver(monitor_snapshot())
        await pilot.pause()
        assert "ledger" not in status(app)


async def test_the_container_column_appears_once_a_process_has_a_group() -> None:
    web = ProcessRef(4242, "nginx", "root", "docker/web")
    evil = ProcessRef(4243, "evil", "root", "\x1b[2J\x07bad.service")
    base = monitor_snapshot()
    rows = (*base.processes, ProcessRow(web, Traffic(9_000_000_000, 0, 1, 0)),
            ProcessRow(evil, Traffic(8_000_000_000, 0, 1, 0)))  # fmt: skip
    conns = (*base.connections, live_connection(web, "10.88.0.2", 80, "203.0.113.9", 5555,
                                                rx_rate=1e9, tx_rate=0.0,
                                                total=Traffic(9_000_000_000, 0, 1, 0)))  # fmt: skip
    app = app_on(dataclasses.replace(base, processes=rows, connections=conns))
    async with app.run_test(size=BIG) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "Container/Unit" in text
        (line,) = [line for line in text.splitlines() if " nginx " in line]
        assert "docker/web" in line
        assert "\\x1b[2J\\x07bad.service" in text and "\x1b[2J" not in text
        await pilot.press("2")
        await pilot.pause()
        text = screen_text(app)
        assert "Container/Unit" in text and "docker/web" in text
    app = app_on()
    async with app.run_test(size=BIG) as pilot:
        await pilot.pause()
        assert "Container/Unit" not in screen_text(app)
        await pilot.press("2")
        await pilot.pause()
        assert "Container/Unit" not in screen_text(app)


async def test_sorting_by_group_keeps_each_containers_processes_together() -> None:
    snapshot = monitor_snapshot()
    a, b = ProcessRef(1, "a", "", "docker/a"), ProcessRef(2, "b", "", "nginx.service")
    c = ProcessRef(3, "c", "", "docker/a")
    rows = (ProcessRow(a, Traffic(1, 0, 1, 0)), ProcessRow(b, Traffic(5, 0, 1, 0)),
            ProcessRow(c, Traffic(3, 0, 1, 0)), *snapshot.processes)  # fmt: skip
    app = app_on(dataclasses.replace(snapshot, processes=rows), sort="group")
    async with app.run_test(size=BIG) as pilot:
        await pilot.pause()
        shown = [r.process for r in app.query_one(ProcessTable).rows if isinstance(r, ProcessRow)]
        assert shown[:3] == [c, a, b]
        assert "group" in status(app)
