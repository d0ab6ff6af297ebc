"""Screen 1: the system at a glance."""

from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Static

from tracehub.tui import format as fmt
from tracehub.tui.model import DashboardModel, service_status
from tracehub.tui.screens.base import DashboardScreen, Topic
from tracehub.tui.widgets.chart import BarChart
from tracehub.tui.widgets.fault_panel import FaultPanel
from tracehub.tui.widgets.log_table import LogTable

TAIL_ROWS = 100
STATS = (
    ("eps", "EPS"),
    ("queue", "queue"),
    ("ack", "ACK/s"),
    ("p99", "ACK p99"),
    ("replays", "replays"),
    ("skipped", "skipped"),
)


class OverviewScreen(DashboardScreen):
    """Headline figures, the EPS chart, services, faults and a short live tail."""

    MODE = "overview"
    CSS_PATH = "overview.tcss"
    HELP = (
        "Overview: events per second (the chart covers the last 5 minutes), queue "
        "depth, ACK rate and p99 latency, pending replays, the status of each "
        "service, active faults with their time left, and the newest log lines. "
        "'skipped' counts log:new events the server capped plus those this "
        "dashboard dropped to keep up."
    )

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="overview-stats"):
            for key, label in STATS:
                stat = Static(id=f"stat-{key}", classes="stat")
                stat.border_title = label
                yield stat
        chart = BarChart(id="eps-chart")
        chart.border_title = "EPS, last 5 min"
        yield chart
        with Horizontal(id="overview-middle"):
            services = Static(id="overview-services")
            services.border_title = "services"
            yield services
            faults = FaultPanel(id="overview-faults")
            faults.border_title = "faults"
            yield faults
        yield LogTable(TAIL_ROWS, show_cursor=False, id="overview-tail")

    def __init__(self) -> None:
        super().__init__()
        self.tail_seen = 0
        self.tail_generation = 0

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        model = self.model
        if topics & {Topic.METRICS, Topic.LOGS}:
            self._show_stats(model)
        if Topic.METRICS in topics:
            self._show_chart(model)
            self.query_one("#overview-services", Static).update(
                services_table(model.services())
            )
        if topics & {Topic.METRICS, Topic.FAULTS, Topic.CLOCK}:
            now = self.now()
            self.query_one(FaultPanel).show(model.active_faults(now), now)
        if Topic.LOGS in topics:
            self._show_tail(model)

    def _show_stats(self, model: DashboardModel) -> None:
        for key, value in stat_values(model).items():
            self.query_one(f"#stat-{key}", Static).update(value)

    def _show_chart(self, model: DashboardModel) -> None:
        chart = self.query_one(BarChart)
        chart.plot(model.eps_history)
        top = max(model.eps_history, default=0)
        chart.border_subtitle = f"max {fmt.rate(top)}"

    def _show_tail(self, model: DashboardModel) -> None:
        tail = self.query_one(LogTable)
        if model.logs.generation != self.tail_generation:
            self.tail_generation = model.logs.generation
            tail.replace(list(model.logs.items)[-TAIL_ROWS:])
        else:
            tail.append(model.logs.since(self.tail_seen))
        self.tail_seen = model.logs.total


def stat_values(model: DashboardModel) -> dict[str, str]:
    metrics = model.metrics
    eps = metrics.get("eps") or {}
    queue = metrics.get("queue") or {}
    replays = metrics.get("replays") or {}
    return {
        "eps": fmt.rate(eps.get("1s")) if metrics else fmt.NO_VALUE,
        "queue": fmt.count(queue.get("depth")),
        "ack": fmt.rate((metrics.get("ackRate") or {}).get("1s"))
        if metrics
        else fmt.NO_VALUE,
        "p99": fmt.millis((metrics.get("ackLatencyMs") or {}).get("p99")),
        "replays": fmt.count(replays.get("pending")),
        "skipped": fmt.count(model.skipped_by_server + model.dropped_locally),
    }


def services_table(services: list[dict[str, Any]]) -> Table | Text:
    if not services:
        return Text("no services yet", style="dim")
    table = Table(box=None, padding=(0, 1), expand=True, header_style="bold")
    table.add_column("service", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("status", no_wrap=True)
    table.add_column("EPS", justify="right", no_wrap=True)
    table.add_column("missing", justify="right", no_wrap=True)
    for figures in services:
        status = service_status(figures)
        table.add_row(
            figures["service"], Text(status, style=STATUS_STYLES.get(status, "")),
            fmt.count(figures.get("eps1s")), fmt.count(figures.get("missingTotal")),
        )  # fmt: skip
    return table


STATUS_STYLES = {
    "ok": "green",
    "gaps": "yellow bold",
    "lost": "red bold",
    "idle": "dim",
}
