"""One service's figures and its recent replays (the gaps it had), in a modal."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tracehub.tui import format as fmt
from tracehub.tui.api import TraceHubApi
from tracehub.tui.messages import ServiceReplaysLoaded
from tracehub.tui.model import service_status

RECENT_REPLAYS = 20


class ServiceDetailScreen(ModalScreen[None]):
    """Shows a service's /metrics figures, its last ACK and its replays."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "app.pop_screen", "Close", id="service.close"),
    ]

    def __init__(
        self, figures: dict[str, Any], ack: dict[str, Any] | None, api: TraceHubApi
    ) -> None:
        super().__init__()
        self.figures = figures
        self.ack = ack
        self.api = api

    @property
    def service(self) -> str:
        return str(self.figures["service"])

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="service-dialog") as dialog:
            dialog.border_title = self.service
            dialog.border_subtitle = "esc to close"
            yield Static(figures_table(self.figures, self.ack))
            yield Static("loading replays…", id="service-replays")

    def on_mount(self) -> None:
        self.run_worker(self._load(), group="service-replays", exit_on_error=False)

    async def _load(self) -> None:
        body = await self.api.replays(self.service, RECENT_REPLAYS)
        self.post_message(ServiceReplaysLoaded(self.service, body))

    def on_service_replays_loaded(self, message: ServiceReplaysLoaded) -> None:
        message.stop()
        self.query_one("#service-replays", Static).update(replays_table(message.body))


def figures_table(figures: dict[str, Any], ack: dict[str, Any] | None) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1))
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = (
        ("status", service_status(figures)),
        ("EPS now / 1 min", f"{fmt.rate(figures.get('eps1s'))} / {fmt.rate(figures.get('eps1m'))}"),
        ("error rate", fmt.percent(figures.get("errorRate"))),
        ("ackTill", fmt.seq(figures.get("ackTill"))),
        ("durableTill", fmt.seq(figures.get("durableTill"))),
        ("lag (not yet durable)", fmt.count(figures.get("lag"))),
        ("missing", fmt.count(figures.get("missingTotal"))),
        ("lost", fmt.count(figures.get("lost"))),
        ("epoch", str(figures.get("epoch") or fmt.NO_VALUE)),
    )  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    if ack is not None and ack.get("missing"):
        listed = ", ".join(str(seq) for seq in ack["missing"][:20])
        table.add_row("last ACK missing", listed)
    return table


def replays_table(body: dict[str, Any]) -> Table | Text:
    replays = body.get("replays") or []
    if not replays:
        return Text("no replays: this service has had no gaps", style="dim")
    table = Table(
        title="recent replays (gaps)", box=None, padding=(0, 1), title_justify="left"
    )
    for column in ("id", "seqs", "status", "filled", "attempts", "created"):
        table.add_column(column, no_wrap=True)
    for replay in replays:
        table.add_row(
            str(replay["id"]), fmt.seq_range(replay["from_seq"], replay["to_seq"]),
            replay["status"], str(replay.get("filled", 0)), str(replay.get("attempts", 0)),
            fmt.clock(replay.get("created_at")),
        )  # fmt: skip
    return table
