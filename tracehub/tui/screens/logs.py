"""Screen 2: the live log stream, with filters, pause and gap marks."""

from __future__ import annotations

from typing import ClassVar, Iterable

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Select, Static

from tracehub.tui import format as fmt
from tracehub.tui.model import GapMark, LogFilter, LogItem, LogRow
from tracehub.tui.screens.base import DashboardScreen, Topic
from tracehub.tui.screens.log_detail import REPLAY_RESULT, LogDetailScreen
from tracehub.tui.widgets.log_table import LogTable

LEVEL_CHOICES = (
    ("all levels", ""),
    ("debug and up", "debug"),
    ("info and up", "info"),
    ("warn and up", "warn"),
    ("error and up", "error"),
    ("fatal only", "fatal"),
)


class LogsScreen(DashboardScreen):
    """The newest log rows as they are committed, newest at the bottom."""

    MODE = "logs"
    CSS_PATH = "logs.tcss"
    HELP = (
        "Live logs: each row is a committed entry from log:new (time in UTC). "
        "A ┄ gap ┄ row marks a jump in one service's seqs within the stream. "
        "space pauses and resumes following, and while paused the view holds still "
        "and counts the rows that arrive. Moving the cursor up pauses too. enter "
        "opens a row with every field and attr. / jumps to the filters (service "
        "and message text match case-insensitively), esc returns to the table."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_pause", "Pause", id="logs.pause"),
        Binding(
            "slash",
            "focus_filters",
            "Filter",
            key_display="/",
            show=False,
            id="logs.filter",
        ),
        Binding("escape", "focus_table", "Back to table", show=False, id="logs.table"),
    ]

    paused: reactive[bool] = reactive(False, init=False)
    held_rows: reactive[int] = reactive(0, init=False)
    log_filter: reactive[LogFilter] = reactive(LogFilter, init=False)

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="log-filters"):
            yield Input(placeholder="service", id="filter-service", compact=True)
            yield Select(
                LEVEL_CHOICES,
                value="",
                allow_blank=False,
                id="filter-level",
                compact=True,
            )
            yield Input(placeholder="text in message", id="filter-text", compact=True)
        with Horizontal(id="logs-status-bar"):
            yield Static(id="logs-status")
            yield Static(id="logs-counts")
        yield LogTable(id="logs-table")

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.generation = 0

    def on_mount(self) -> None:
        self.query_one(LogTable).focus()

    # --- model updates -------------------------------------------------------------

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        if Topic.LOGS not in topics:
            return
        if self.model.logs.generation != self.generation and not self.paused:
            self._rebuild()
            return
        fresh = self.model.logs.since(self.seen)
        self.seen = self.model.logs.total
        matching = [item for item in fresh if self.log_filter.accepts(item)]
        if self.paused:
            self.held_rows += sum(1 for item in matching if isinstance(item, LogRow))
        else:
            self.query_one(LogTable).append(matching)
        self._show_status()

    def _rebuild(self) -> None:
        self.seen = self.model.logs.total
        self.generation = self.model.logs.generation
        self.query_one(LogTable).replace(self.model.logs.matching(self.log_filter))
        self._show_status()

    def _show_status(self) -> None:
        model = self.model
        self.query_one("#logs-status", Static).update(
            status_text(self.paused, self.held_rows)
        )
        self.query_one("#logs-counts", Static).update(
            counts_text(model.received, model.skipped_by_server, model.dropped_locally)
        )

    # --- reactives -----------------------------------------------------------------

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            self.held_rows = 0
            self._rebuild()
        self._show_status()

    def watch_log_filter(self) -> None:
        self.held_rows = 0
        self._rebuild()

    # --- user input ----------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_focus_filters(self) -> None:
        self.query_one("#filter-service", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(LogTable).focus()

    @on(Input.Changed)
    @on(Select.Changed)
    def _filters_changed(self) -> None:
        level = self.query_one("#filter-level", Select).value
        self.log_filter = LogFilter(
            service=self.query_one("#filter-service", Input).value.strip(),
            min_level=level if isinstance(level, str) else "",
            text=self.query_one("#filter-text", Input).value,
        )

    @on(Input.Submitted)
    def _filters_submitted(self) -> None:
        self.action_focus_table()

    def on_log_table_browsed(self) -> None:
        self.paused = True

    def on_log_table_selected(self, event: LogTable.Selected) -> None:
        self.app.push_screen(
            LogDetailScreen(event.item), self._detail_closed(event.item)
        )

    def _detail_closed(self, item: LogItem):  # type: ignore[no-untyped-def]
        def closed(result: str | None) -> None:
            if result == REPLAY_RESULT and isinstance(item, GapMark):
                self.dashboard.open_replay_form(item.service, item.first, item.last)

        return closed


def status_text(paused: bool, held_rows: int) -> Text:
    if not paused:
        return Text("▶ following", style="bold")
    text = Text("‖ PAUSED", style="bold reverse")
    text.append(f" · {fmt.count(held_rows)} new rows held · space resumes")
    return text


def counts_text(received: int, skipped_by_server: int, dropped_locally: int) -> Text:
    """Describe the events received and skipped, naming local drops when there are any."""
    text = Text(f"received {fmt.count(received)} · skipped ")
    text.append(
        fmt.count(skipped_by_server + dropped_locally),
        style="bold" if dropped_locally else "",
    )
    if dropped_locally:
        text.append(f" ({fmt.count(dropped_locally)} local)")
    return text
