"""Screen 5: one row per service, with a drill-down on enter."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tracehub.tui import format as fmt
from tracehub.tui.model import DashboardModel, service_status
from tracehub.tui.screens.base import DashboardScreen, Topic
from tracehub.tui.screens.overview import STATUS_STYLES
from tracehub.tui.screens.service_detail import ServiceDetailScreen

COLUMNS = (
    "service",
    "status",
    "EPS",
    "errors",
    "ackTill",
    "durableTill",
    "missing",
    "lag",
)


class ServicesScreen(DashboardScreen):
    """The figures of every service from the latest metrics snapshot."""

    MODE = "services"
    CSS_PATH = "services.tcss"
    HELP = (
        "Services: EPS is the last second's ingest rate, errors the share of "
        "error and fatal entries over the last minute. ackTill is the highest seq "
        "below which every seq has arrived, durableTill the highest below which "
        "every seq is stored in PostgreSQL, and lag the difference. missing counts "
        "seqs above a gap that the server is still waiting for. enter opens a "
        "service with its last ACK and its replays."
    )

    def compose_body(self) -> Iterable[Widget]:
        table: DataTable[Any] = DataTable(id="services-table", cursor_type="row")
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static(
            "enter: details of the service under the cursor", id="services-hint"
        )

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        if Topic.METRICS in topics:
            self._show(self.model)

    def _show(self, model: DashboardModel) -> None:
        table: DataTable[Any] = self.query_one("#services-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for figures in model.services():
            table.add_row(*service_cells(figures), key=figures["service"])
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        name = event.row_key.value
        figures = self.model.service(name) if name else None
        if name is None or figures is None:
            return
        detail = ServiceDetailScreen(
            figures, self.model.acks.get(name), self.dashboard.api
        )
        self.app.push_screen(detail)


def service_cells(figures: dict[str, Any]) -> list[Any]:
    status = service_status(figures)
    missing = figures.get("missingTotal") or 0
    return [
        figures["service"],
        Text(status, style=STATUS_STYLES.get(status, "")),
        Text(fmt.count(figures.get("eps1s")), justify="right"),
        Text(fmt.percent(figures.get("errorRate")), justify="right"),
        Text(fmt.seq(figures.get("ackTill")), justify="right"),
        Text(fmt.seq(figures.get("durableTill")), justify="right"),
        Text(
            fmt.count(missing), justify="right", style="yellow bold" if missing else ""
        ),
        Text(fmt.count(figures.get("lag")), justify="right"),
    ]
