"""A bounded, virtual table of log rows and gap marks, with a cursor.

Only the visible lines are rendered, so appending to a full table costs the same
as appending to an empty one. Line 0 is a fixed header; item i is drawn on line
i + 1 of the virtual content.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Iterable

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tracehub.protocol import LEVELS
from tracehub.tui import format as fmt
from tracehub.tui.model import MAX_LOG_ROWS, GapMark, LogItem, LogRow

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
TIME_WIDTH = 12
LEVEL_WIDTH = 5
SEQ_WIDTH = 9


@dataclass(frozen=True)
class Columns:
    """Cell widths of the table's columns at one widget width."""

    service: int
    message: int

    @classmethod
    def for_width(cls, width: int) -> Columns:
        service = 14 if width < 120 else 24
        fixed = 1 + TIME_WIDTH + 1 + service + 1 + LEVEL_WIDTH + SEQ_WIDTH + 1
        return cls(service, max(10, width - fixed))


class LogTable(ScrollView, can_focus=True):
    """Log rows (time, service, level, seq, message) and gap marks, newest last."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-table--header",
        "log-table--cursor",
        "log-table--gap",
        *(f"log-table--{level}" for level in LEVELS),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False, id="log-table.up"),
        Binding("down", "move(1)", "Down", show=False, id="log-table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="log-table.page-up"),
        Binding(
            "pagedown", "page(1)", "Page down", show=False, id="log-table.page-down"
        ),
        Binding("home", "jump(0)", "First row", show=False, id="log-table.first"),
        Binding("end", "jump(-1)", "Last row", show=False, id="log-table.last"),
        Binding("enter", "select", "Open", id="log-table.open"),
    ]

    DEFAULT_CSS = """
    LogTable {
        overflow-x: hidden;
        .log-table--header { text-style: bold; color: $text-muted; }
        .log-table--cursor { background: $accent 40%; text-style: bold; }
        .log-table--gap { color: $warning; text-style: italic; }
        .log-table--trace { color: $text-muted; }
        .log-table--debug { color: $text-muted; }
        .log-table--info { color: $success; }
        .log-table--warn { color: $warning; text-style: bold; }
        .log-table--error { color: $error; text-style: bold reverse; }
        .log-table--fatal { color: $error; text-style: bold reverse underline; }
    }
    """

    cursor: reactive[int] = reactive(-1, layout=False)

    @dataclass
    class Selected(Message):
        """The user opened the item under the cursor."""

        table: LogTable
        item: LogItem

    @dataclass
    class Browsed(Message):
        """The user moved the cursor away from the newest row."""

        table: LogTable

    def __init__(
        self,
        max_rows: int = MAX_LOG_ROWS,
        *,
        show_cursor: bool = True,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.items: deque[LogItem] = deque(maxlen=max_rows)
        self.show_cursor = show_cursor
        self.can_focus = show_cursor

    # --- content -------------------------------------------------------------------

    def replace(self, items: Iterable[LogItem], *, follow: bool = True) -> None:
        """Show these items instead of the current ones."""
        self.items.clear()
        self.items.extend(items)
        self._content_changed(follow, dropped=0)

    def append(self, items: list[LogItem], *, follow: bool = True) -> None:
        """Add items at the bottom, dropping the oldest beyond max_rows."""
        if not items:
            return
        room = (self.items.maxlen or 0) - len(self.items)
        dropped = max(0, len(items) - room)
        self.items.extend(items)
        self._content_changed(follow, dropped)

    def _content_changed(self, follow: bool, dropped: int) -> None:
        self.virtual_size = Size(0, len(self.items) + 1)
        if follow or self.cursor >= len(self.items):
            self.cursor = len(self.items) - 1
            self._scroll_to_end()
        elif dropped:
            self.cursor = max(0, self.cursor - dropped)
        self.refresh()

    def _scroll_to_end(self) -> None:
        # force: right after new content, the layout has not yet decided that the
        # table overflows, and without force Textual would not scroll it.
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def on_resize(self) -> None:
        if self.cursor == len(self.items) - 1:
            self._scroll_to_end()

    @property
    def current(self) -> LogItem | None:
        if 0 <= self.cursor < len(self.items):
            return self.items[self.cursor]
        return None

    # --- cursor --------------------------------------------------------------------

    def watch_cursor(self) -> None:
        self._scroll_to_cursor()
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True, force=True)
        elif self.cursor >= top + visible:
            top = self.cursor - visible + 1
            self.scroll_to(y=top, animate=False, immediate=True, force=True)

    def action_move(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, index: int) -> None:
        self._move_to(index if index >= 0 else len(self.items) - 1)

    def _move_to(self, index: int) -> None:
        if not self.items:
            return
        self.cursor = min(max(0, index), len(self.items) - 1)
        if self.cursor < len(self.items) - 1:
            self.post_message(self.Browsed(self))

    def action_select(self) -> None:
        item = self.current
        if item is not None:
            self.post_message(self.Selected(self, item))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self._move_to(int(self.scroll_y) + event.y - 1)

    # --- rendering -----------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        columns = Columns.for_width(width)
        if y == 0:
            segments = self._header(columns)
        else:
            index = int(self.scroll_y) + y - 1
            if index >= len(self.items):
                return Strip.blank(width, base)
            segments = self._line(self.items[index], columns, index == self.cursor)
        return Strip(segments).crop_extend(0, width, base)

    def _header(self, columns: Columns) -> list[Segment]:
        style = self.rich_style + self.get_component_rich_style(
            "log-table--header", partial=True
        )
        text = (
            f" {'time (UTC)':<{TIME_WIDTH}} {'service':<{columns.service}} "
            f"{'level':<{LEVEL_WIDTH}}{'seq':>{SEQ_WIDTH}} message"
        )
        return [Segment(text, style)]

    def _line(self, item: LogItem, columns: Columns, at_cursor: bool) -> list[Segment]:
        marked = at_cursor and self.show_cursor
        style = self.rich_style
        if marked:
            style += self.get_component_rich_style("log-table--cursor", partial=True)
        gutter = Segment("›" if marked else " ", style)
        if isinstance(item, GapMark):
            return [gutter, *self._gap(item, columns, style)]
        return [gutter, *self._row(item, columns, style)]

    def _row(self, row: LogRow, columns: Columns, style: Style) -> list[Segment]:
        level_style = style + self.get_component_rich_style(
            f"log-table--{row.level}", partial=True
        )
        service = fit(row.service, columns.service)
        message = _CONTROL_CHARS.sub(" ", row.message)
        return [
            Segment(
                f"{fmt.clock(row.ts, millis=True):<{TIME_WIDTH}} {service} ", style
            ),
            Segment(f"{row.level:<{LEVEL_WIDTH}}", level_style),
            Segment(f"{row.seq:>{SEQ_WIDTH}} ", style),
            Segment(message, style),
        ]

    def _gap(self, gap: GapMark, columns: Columns, style: Style) -> list[Segment]:
        gap_style = style + self.get_component_rich_style(
            "log-table--gap", partial=True
        )
        text = (
            f"{'':<{TIME_WIDTH}} {fit(gap.service, columns.service)} "
            f"{'gap':<{LEVEL_WIDTH}} ┄┄ seq {fmt.seq_range(gap.first, gap.last)} "
            f"not in stream ({fmt.count(gap.size)}) ┄┄"
        )
        return [Segment(text, gap_style)]


def fit(text: str, width: int) -> str:
    """Pad or cut text to width cells, marking a cut with an ellipsis."""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…"
