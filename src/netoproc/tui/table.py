"""`RowTable`: the table every view is drawn with, built on Textual's Line API.

It keeps the rows as plain objects in display order and formats only the
lines on screen, so a refresh costs the same with 50 rows or 50,000 (a
DataTable measures every cell of every row: 300-600 ms for such an update,
see the README's Performance section).
Subclasses say what a row looks like (`render_row`) and what identifies it
(`row_key`), so the cursor stays on the same process or connection while the
rows under it move. The header line stays on top; the table scrolls itself
(no scrollbar, so columns keep their width; the status bar shows where the
cursor is).

Column widths come from `layout`: each column has a minimum and a maximum;
spare width is shared out in `grow` order, and when even the minimums do
not fit, columns with a `drop` rank are left out, lowest rank first.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from netoproc.tui.cells import fit

RowT = TypeVar("RowT")

GAP = 1  # spaces between columns (and before the first)


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int  # the least it is shown with
    most: int = 0  # the most it grows to (0: never grows)
    right: bool = False  # numbers are right-aligned
    grow: int = 0  # spare width goes to lower `grow` first
    drop: int = 0  # when too narrow, leave out columns with the lowest non-zero rank first


def layout(
    columns: Sequence[Column], width: int, hidden: frozenset[int] = frozenset()
) -> list[int]:
    """The width of each column for a table `width` cells wide; 0 means left out
    (as are the `hidden` columns, by index)."""
    widths = [0 if i in hidden else c.width for i, c in enumerate(columns)]

    def used() -> int:
        shown = [w for w in widths if w]
        return sum(shown) + GAP * len(shown)

    for rank in sorted({c.drop for c in columns if c.drop}):
        if used() <= width:
            break
        for i, column in enumerate(columns):
            if column.drop == rank:
                widths[i] = 0
    for stage in sorted({c.grow for c in columns if c.most > c.width}):
        growing = [
            i for i, c in enumerate(columns) if widths[i] and c.grow == stage and c.most > c.width
        ]
        while growing and (spare := width - used()) > 0:
            share = max(1, spare // len(growing))
            for i in list(growing):
                extra = min(share, columns[i].most - widths[i], width - used())
                widths[i] += extra
                if widths[i] >= columns[i].most:
                    growing.remove(i)
    return widths


class RowTable(Widget, Generic[RowT], can_focus=True):
    """Rows of one kind under a fixed header, with a cursor and paging keys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First row", show=False),
        Binding("end", "last", "Last row", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"row-table--header", "row-table--cursor"}
    DEFAULT_CSS = """
    RowTable {
        height: 1fr;
        & > .row-table--header { text-style: bold; background: $panel; }
        & > .row-table--cursor { background: $block-cursor-background; }
        &:blur > .row-table--cursor { background: $block-cursor-blurred-background; }
    }
    """

    COLUMNS: ClassVar[Sequence[Column]] = ()
    SHOW_CURSOR: ClassVar[bool] = True  # False: a plain list that scrolls
    HEADER: ClassVar[bool] = True

    class CursorMoved(Message):
        """The cursor moved (the status bar shows where it is)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: Sequence[RowT] = ()
        self.cursor = 0
        self.top = 0
        self.follow_end = False  # keep the cursor on the last row as rows arrive (logs)
        self._widths: list[int] = []
        self._width_for = -1
        self._hidden: frozenset[int] = frozenset()
        self._base_style: Style | None = None
        # what the last repaint showed (see _repaint): the place, and each row's segments
        self._frame: tuple[object, ...] = ()
        self._lines: list[tuple[Segment, ...]] = []

    # what subclasses provide -------------------------------------------------

    def render_row(self, row: RowT, widths: Sequence[int]) -> list[Segment]:
        """The segments of one row; `fit` each cell to its width."""
        raise NotImplementedError

    def row_key(self, row: RowT) -> Hashable:
        """What identifies a row from one snapshot to the next."""
        return id(row)

    # rows -------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[RowT]) -> None:
        """Show `rows` (already in display order), keeping the cursor on the same row."""
        old_key = self.row_key(self.rows[self.cursor]) if self.cursor < len(self.rows) else None
        at_end = self.follow_end and self.cursor >= len(self.rows) - 1
        self.rows = rows
        if at_end:
            self.cursor = max(0, len(rows) - 1)
        elif old_key is not None:
            self.cursor = self._index_of(old_key, self.cursor)
        self._clamp()
        self._repaint()

    def _repaint(self) -> None:
        """Repaint what changed on screen. New rows that look the same (an idle
        machine, a minute of the same figures) repaint nothing, and a row whose
        figures moved repaints its own line: Textual's compositor was most of an
        idle monitor's CPU, redrawing a whole table for one changed row."""
        widths = self.widths
        shown = self.rows[self.top : self.top + self.page_height]
        frame = (self.top, self.cursor, self.size)
        lines = [tuple(self.render_row(row, widths)) for row in shown]
        if frame != self._frame or len(lines) != len(self._lines):
            self.refresh()
        else:
            width, header = self.size.width, self.HEADER
            pairs = enumerate(zip(lines, self._lines, strict=True))
            changed = [Region(0, header + y, width, 1) for y, (line, was) in pairs if line != was]
            if changed:
                self.refresh(*changed)
        self._frame, self._lines = frame, lines

    def _index_of(self, key: Hashable, near: int) -> int:
        # the row usually stays where it was; look there first
        for i in range(max(0, near - 2), min(len(self.rows), near + 3)):
            if self.row_key(self.rows[i]) == key:
                return i
        for i, row in enumerate(self.rows):
            if self.row_key(row) == key:
                return i
        return min(near, max(0, len(self.rows) - 1))

    @property
    def current(self) -> RowT | None:
        return self.rows[self.cursor] if self.cursor < len(self.rows) else None

    @property
    def page_height(self) -> int:
        return max(1, self.size.height - self.HEADER)

    def _clamp(self) -> None:
        last = max(0, len(self.rows) - 1)
        self.cursor = min(max(self.cursor, 0), last)
        page = self.page_height
        if self.SHOW_CURSOR:
            if self.cursor < self.top:
                self.top = self.cursor
            elif self.cursor >= self.top + page:
                self.top = self.cursor - page + 1
        self.top = max(0, min(self.top, len(self.rows) - page))

    def move_to(self, index: int) -> None:
        if self.SHOW_CURSOR:
            self.cursor = index
        else:  # a plain list scrolls instead
            self.top = index
        self._clamp()
        self._repaint()
        self.post_message(self.CursorMoved())

    # keys and mouse -----------------------------------------------------------

    def action_cursor(self, step: int) -> None:
        self.move_to((self.cursor if self.SHOW_CURSOR else self.top) + step)

    def action_page(self, pages: int) -> None:
        step = pages * self.page_height
        if self.SHOW_CURSOR:  # the page turns and the cursor keeps its place on screen
            self.top += step
            self.move_to(self.cursor + step)
        else:
            self.move_to(self.top + step)

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(len(self.rows) - 1)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self.action_cursor(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.action_cursor(-3)

    def on_click(self, event: events.Click) -> None:
        if event.y >= self.HEADER and self.SHOW_CURSOR:
            self.move_to(self.top + event.y - self.HEADER)

    def on_resize(self, _event: events.Resize) -> None:
        self._clamp()  # rows set while the view was hidden were placed for a zero height
        self._repaint()

    # drawing ------------------------------------------------------------------

    def hide_columns(self, hidden: frozenset[int]) -> None:
        """Leave out these columns (by index), e.g. one no row has a value for."""
        if hidden != self._hidden:
            self._hidden = hidden
            self._width_for = -1
            self.refresh()

    @property
    def widths(self) -> list[int]:
        if self._width_for != self.size.width:
            self._widths = layout(self.COLUMNS, self.size.width, self._hidden)
            self._width_for = self.size.width
        return self._widths

    def header_segments(self, widths: Sequence[int]) -> list[Segment]:
        segments = []
        for column, width in zip(self.COLUMNS, widths, strict=True):
            if width:
                segments.append(Segment(" " * GAP + fit(column.title, width, column.right)))
        return segments

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base_style = None

    @property
    def base_style(self) -> Style:
        """The widget's own colours (computing them is dear; they change only with the CSS)."""
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style
        if self.HEADER and y == 0:
            style = base + self.get_component_rich_style("row-table--header")
            segments = self.header_segments(self.widths)
            return Strip(segments).adjust_cell_length(width).apply_style(style)
        index = self.top + y - self.HEADER
        if index >= len(self.rows):
            return Strip.blank(width, base)
        strip = Strip(self.render_row(self.rows[index], self.widths)).adjust_cell_length(width)
        if self.SHOW_CURSOR and index == self.cursor:
            strip = strip.apply_style(self._cursor_style())
        return strip.apply_style(base)

    def _cursor_style(self) -> Style:
        if self.app.no_color:  # no background colours to show it with
            return Style(reverse=True)
        return self.get_component_rich_style("row-table--cursor")
