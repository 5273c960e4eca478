"""RowTable: column layout, the cursor that follows its row, paging, and drawing only what shows."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.segment import Segment
from textual.app import App, ComposeResult
from textual.geometry import Region

from netoproc.tui.cells import fit
from netoproc.tui.table import GAP, Column, RowTable, layout
from tests.tui.screen import screen_lines


def test_layout_grows_in_stages_up_to_each_maximum() -> None:
    columns = [Column("a", 4, most=10), Column("b", 4, most=6, grow=1), Column("c", 3)]
    used = 4 + 4 + 3 + 3 * GAP
    assert layout(columns, used) == [4, 4, 3]
    assert layout(columns, used + 5) == [9, 4, 3]  # stage 0 first
    assert layout(columns, used + 100) == [10, 6, 3]  # then stage 1, never past a maximum


def test_layout_shares_spare_width_evenly_within_a_stage() -> None:
    columns = [Column("a", 2, most=50, grow=1), Column("b", 2, most=50, grow=1)]
    assert layout(columns, 2 + 2 + 2 * GAP + 10) == [7, 7]


def test_layout_drops_the_lowest_ranks_first_when_even_minimums_do_not_fit() -> None:
    columns = [Column("keep", 10), Column("first", 10, drop=1), Column("then", 5, drop=2)]
    assert layout(columns, 40) == [10, 10, 5]
    assert layout(columns, 25) == [10, 0, 5]  # leaving out rank 1 was enough
    assert layout(columns, 12) == [10, 0, 0]


class Numbers(RowTable[int]):
    COLUMNS: ClassVar[Sequence[Column]] = (Column("n", 6, right=True),)
    rendered: list[int]

    def row_key(self, row: int) -> Hashable:
        return row

    def render_row(self, row: int, widths: Sequence[int]) -> list[Segment]:
        self.rendered.append(row)
        return [Segment(" " * GAP + fit(str(row), widths[0], right=True))]


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        table = Numbers()
        table.rendered = []
        yield table


async def test_keys_move_the_cursor_and_the_page_follows() -> None:
    app = TableApp()
    async with app.run_test(size=(20, 11)) as pilot:  # a header and ten rows
        table = app.query_one(Numbers)
        table.focus()
        table.set_rows(list(range(100)))
        await pilot.press("down", "down")
        assert table.cursor == 2
        await pilot.press("pagedown")
        assert (table.cursor, table.top) == (12, 10)
        await pilot.press("end")
        assert (table.cursor, table.top) == (99, 90)
        await pilot.press("pageup")
        assert (table.cursor, table.top) == (89, 80)
        await pilot.press("home", "up")
        assert (table.cursor, table.top) == (0, 0)
        await pilot.pause()
        lines = screen_lines(app)
        assert lines[0].strip() == "n" and lines[1].strip() == "0" and lines[10].strip() == "9"


async def test_the_cursor_stays_on_its_row_when_rows_move() -> None:
    app = TableApp()
    async with app.run_test(size=(20, 11)):
        table = app.query_one(Numbers)
        table.set_rows([5, 6, 7, 8])
        table.move_to(2)
        table.set_rows([9, 7, 5])  # 7 moved up; the cursor goes with it
        assert table.current == 7
        table.set_rows([1, 2])  # 7 is gone: the cursor keeps its place as far as it can
        assert table.cursor == 1


async def test_only_the_rows_on_screen_are_formatted() -> None:
    app = TableApp()
    async with app.run_test(size=(20, 11)) as pilot:
        table = app.query_one(Numbers)
        table.set_rows(list(range(100_000)))
        await pilot.pause()
        assert set(table.rendered) <= set(range(10))


async def test_rows_that_look_the_same_are_not_repainted_and_a_changed_one_alone() -> None:
    app = TableApp()
    async with app.run_test(size=(20, 11)) as pilot:
        table = app.query_one(Numbers)
        table.set_rows(list(range(100)))
        await pilot.pause()
        repaints: list[object] = []
        table.refresh = lambda *a, **k: repaints.append(a)  # type: ignore[assignment, method-assign]
        table.set_rows(list(range(100)))  # new rows, the same on screen
        table.set_rows([*range(10), 99])  # the same on screen: row 99 is below it
        assert repaints == []
        table.set_rows([*range(9), 42])  # the last line on screen changed: it alone
        assert repaints == [(Region(0, 10, 20, 1),)]
        table.move_to(3)  # the cursor moved: everything
        assert repaints[1:] == [()]
        table.set_rows([*range(9), 42])
        assert len(repaints) == 2
        table.set_rows([3, 0, 1, 2, *range(4, 9), 42])  # the cursor's row moved to the top
        assert (table.cursor, repaints[2:]) == (0, [()])
        table.set_rows([3, 7, 1, 2, *range(4, 9), 43, 44])  # two lines changed, the rest did not
        assert repaints[3:] == [(Region(0, 2, 20, 1), Region(0, 10, 20, 1))]
        del table.refresh  # the real one again: what shows is what was asked for
        table.refresh()
        await pilot.pause()
        table.set_rows([3, 6, 1, 2, *range(4, 9), 41])
        await pilot.pause()
        assert [line.strip() for line in screen_lines(app)[1:11]] == [
            str(n) for n in [3, 6, 1, 2, *range(4, 9), 41]
        ]


async def test_a_log_follows_its_end_until_the_cursor_leaves_it() -> None:
    app = TableApp()
    async with app.run_test(size=(20, 11)):
        table = app.query_one(Numbers)
        table.follow_end = True
        table.set_rows([1, 2, 3])
        table.move_to(2)
        table.set_rows([1, 2, 3, 4])
        assert table.current == 4
        table.move_to(0)
        table.set_rows([1, 2, 3, 4, 5])
        assert table.current == 1
