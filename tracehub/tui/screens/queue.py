"""Screen 4: the Redis queue, the workers, and fault events as they happen."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Static

from tracehub.tui import format as fmt
from tracehub.tui.model import DashboardModel, Event
from tracehub.tui.screens.base import DashboardScreen, Topic
from tracehub.tui.widgets.chart import BarChart

WORKER_COLUMNS = (
    "worker",
    "state",
    "alive",
    "batches",
    "rows",
    "last batch",
    "pending",
)
EVENT_STYLES = {"fault": "yellow bold", "ok": "green", "replay": "cyan"}


class QueueScreen(DashboardScreen):
    """Depth charts of the stream and the retry queue, workers, and the event log."""

    MODE = "queue"
    RELOAD_EVERY_S = 2.0
    CSS_PATH = "queue.tcss"
    HELP = (
        "Queue: the depth of the Redis stream of batches waiting for a worker and "
        "of the retry queue, one bar per metrics snapshot (every 2 s). 'pending' "
        "counts batches a worker has read but not yet acknowledged, and 'dead' "
        "counts batches that failed every retry. The worker table joins worker "
        "heartbeats with the stream's consumers (GET /metrics/queue, reloaded "
        "every 2 s). The event log lists faults, worker crashes and recoveries, "
        "completed replays and connection changes, newest first."
    )

    def compose_body(self) -> Iterable[Widget]:
        yield Static(id="queue-figures")
        with Horizontal(id="queue-charts"):
            stream = BarChart(id="stream-chart")
            stream.border_title = "stream depth"
            yield stream
            retry = BarChart(id="retry-chart")
            retry.border_title = "retry queue"
            yield retry
        table: DataTable[Any] = DataTable(id="worker-table", cursor_type="none")
        table.add_columns(*WORKER_COLUMNS)
        yield table
        events = Static(id="queue-events")
        events.border_title = "events"
        yield events

    def reload(self) -> None:
        self.dashboard.load_queue()

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        model = self.model
        if topics & {Topic.METRICS, Topic.QUEUE}:
            self.query_one("#queue-figures", Static).update(figures_text(model))
            self._show_workers(model)
        if Topic.METRICS in topics:
            self._show_chart("#stream-chart", model.stream_history)
            self._show_chart("#retry-chart", model.retry_history)
        if topics & {Topic.EVENTS, Topic.FAULTS}:
            newest_first = sorted(
                model.events, key=lambda event: event.at, reverse=True
            )
            self.query_one("#queue-events", Static).update(events_text(newest_first))

    def _show_chart(self, selector: str, values: Iterable[float]) -> None:
        chart = self.query_one(selector, BarChart)
        chart.plot(list(values))
        chart.border_subtitle = f"now {fmt.count(chart.data[-1] if chart.data else 0)}"

    def _show_workers(self, model: DashboardModel) -> None:
        table: DataTable[Any] = self.query_one("#worker-table", DataTable)
        table.clear()
        now = self.now()
        for row in worker_rows(model, now):
            table.add_row(*row)


def figures_text(model: DashboardModel) -> Text:
    queue = model.metrics.get("queue") or {}
    stream = (model.queue.get("stream") or {}).get("key", "queue:logs")
    text = Text()
    for label, value in (
        (f"{stream} ", queue.get("depth")), ("pending ", queue.get("pending")),
        ("retry ", queue.get("retry")), ("dead ", queue.get("dead")),
    ):  # fmt: skip
        text.append(label, style="dim")
        text.append(f"{fmt.count(value)}   ", style="bold")
    return text


def worker_rows(model: DashboardModel, now: float) -> list[list[Any]]:
    consumers = {c.get("name"): c for c in model.queue.get("consumers") or []}
    rows = []
    for worker in model.metrics.get("workers") or []:
        consumer = consumers.get(worker.get("name"), {})
        alive = bool(worker.get("alive"))
        rows.append([
            worker.get("name", ""), worker.get("state", ""),
            Text("yes" if alive else "NO", style="green" if alive else "red bold"),
            fmt.count(worker.get("batches")), fmt.count(worker.get("rows")),
            fmt.age(worker.get("lastBatchAt"), now) if worker.get("lastBatchAt") else fmt.NO_VALUE,
            fmt.count(consumer.get("pending")),
        ])  # fmt: skip
    return rows


def events_text(events: list[Event]) -> Text:
    if not events:
        return Text("no events yet", style="dim")
    text = Text()
    for event in events:
        text.append(f"{fmt.clock(event.at)}  ", style="dim")
        text.append(f"{event.text}\n", style=EVENT_STYLES.get(event.kind, ""))
    text.rstrip()
    return text
