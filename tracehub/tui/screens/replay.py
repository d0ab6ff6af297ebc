"""Screen 3: replay requests, pending and completed, and a form to request one."""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Static

from tracehub.tui import format as fmt
from tracehub.tui.model import DashboardModel
from tracehub.tui.screens.base import DashboardScreen, Topic

LIVE_LINES = 3
COLUMNS = ("id", "service", "seqs", "status", "age", "latency", "filled")


class ReplayScreen(DashboardScreen):
    """GET /logs/replay as a table, live replay:completed events, and POST /logs/replay."""

    MODE = "replay"
    RELOAD_EVERY_S = 5.0
    CSS_PATH = "replay.tcss"
    HELP = (
        "Replays: the server asks a producer's buffer for seqs it is missing and "
        "re-ingests them. The table lists replay requests, newest first, reloaded "
        "every 5 s; replay:completed events update it at once. Age counts from the "
        "request, latency from the request to completion. The form at the bottom "
        "requests a replay of a service's seq range (inclusive)."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "reload", "Reload", id="replay.reload"),
        Binding("slash", "focus_form", "Request", key_display="/", id="replay.form"),
        Binding(
            "escape", "focus_table", "Back to table", show=False, id="replay.table"
        ),
    ]

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="replay-counts")
        table: DataTable[Any] = DataTable(id="replay-table", cursor_type="row")
        table.add_columns(*COLUMNS)
        yield table
        yield Static(id="replay-live")
        with Horizontal(id="replay-form"):
            yield Static("replay", classes="form-label")
            yield Input(placeholder="service", id="replay-service", compact=True)
            yield Input(
                placeholder="from seq", id="replay-from", type="integer", compact=True
            )
            yield Input(
                placeholder="to seq", id="replay-to", type="integer", compact=True
            )
            yield Button("Request", id="replay-request", compact=True)

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        model = self.model
        if topics & {Topic.REPLAYS, Topic.CLOCK}:
            self._show_table(model)
        if Topic.REPLAYS in topics:
            self.query_one("#replay-counts", Static).update(
                counts_text(model.replay_counts)
            )
            self.query_one("#replay-live", Static).update(live_text(model, self.now()))

    def _show_table(self, model: DashboardModel) -> None:
        table: DataTable[Any] = self.query_one("#replay-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        now = self.now()
        for replay in model.replays:
            table.add_row(*replay_cells(model, replay, now), key=str(replay["id"]))
        if model.replays:
            table.move_cursor(row=min(cursor, len(model.replays) - 1), animate=False)

    # --- actions -------------------------------------------------------------------

    def reload(self) -> None:
        self.dashboard.load_replays()

    def action_reload(self) -> None:
        self.reload()

    def action_focus_form(self) -> None:
        self.query_one("#replay-service", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#replay-table", DataTable).focus()

    def prefill(self, service: str, first: int, last: int) -> None:
        self.query_one("#replay-service", Input).value = service
        self.query_one("#replay-from", Input).value = str(first)
        self.query_one("#replay-to", Input).value = str(last)
        self.query_one("#replay-request", Button).focus()

    def on_input_submitted(self) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "replay-request":
            self._submit()

    def _submit(self) -> None:
        service = self.query_one("#replay-service", Input).value.strip()
        bounds = parse_range(
            self.query_one("#replay-from", Input).value,
            self.query_one("#replay-to", Input).value,
        )
        if not service or bounds is None:
            self.notify(
                "Enter a service and a seq range: from and to are integers, from <= to.",
                title="Invalid replay request", severity="warning",
            )  # fmt: skip
            return
        self.dashboard.request_replay(service, *bounds)


def parse_range(first: str, last: str) -> tuple[int, int] | None:
    """Return (from, to) when both are integers of at least 1 and from <= to."""
    try:
        low, high = int(first), int(last)
    except ValueError:
        return None
    return (low, high) if 1 <= low <= high else None


def replay_cells(
    model: DashboardModel, replay: dict[str, Any], now: float
) -> list[Any]:
    status = replay.get("status", "")
    return [
        str(replay.get("id")),
        replay.get("service", ""),
        fmt.seq_range(replay.get("from_seq", 0), replay.get("to_seq", 0)),
        Text(status, style=STATUS_STYLES.get(status, "")),
        fmt.age(replay.get("created_at"), now),
        fmt.millis(model.latency_ms(replay)) if status == "completed" else fmt.NO_VALUE,
        str(replay.get("filled", 0)),
    ]


STATUS_STYLES = {"pending": "yellow", "completed": "green", "lost": "red bold"}


def counts_text(counts: dict[str, int]) -> Text:
    text = Text()
    for status in ("pending", "completed", "lost"):
        text.append(f"{status} ", style=STATUS_STYLES[status])
        text.append(f"{fmt.count(counts.get(status, 0))}   ", style="bold")
    return text


def live_text(model: DashboardModel, now: float) -> Text:
    if not model.live_replays:
        return Text(
            "no replay:completed events since the dashboard started", style="dim"
        )
    text = Text()
    for event in list(model.live_replays)[:LIVE_LINES]:
        text.append(
            f"{fmt.clock(event.get('at'))}  replay {event.get('id')} of {event.get('service')} "
            f"{fmt.seq_range(event.get('fromSeq', 0), event.get('toSeq', 0))}: "
            f"{fmt.plural(int(event.get('count') or 0), 'seq', 'seqs')} in "
            f"{fmt.millis(event.get('latencyMs'))}\n"
        )
    text.rstrip()
    return text
