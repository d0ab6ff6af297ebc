"""The dashboard's state of the server, kept apart from how it is drawn.

The model is plain Python with no I/O and no Textual, so its rules (bounded buffers,
gap marks, de-duplication, fault timing) can be tested on their own. Times are epoch
seconds, and the caller passes `now`, so a fixed clock gives fixed output.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

from tracehub.protocol import LEVELS
from tracehub.tui import format as fmt

MAX_LOG_ROWS = 1000
HISTORY_POINTS = 150  # 5 minutes of metrics:snapshot events, which come every 2 s
MAX_EVENTS = 200
MAX_LIVE_REPLAYS = 100


@dataclass(frozen=True, slots=True)
class LogRow:
    """One committed log entry, in the shape of a log:new event."""

    service: str
    seq: int
    level: str
    message: str
    ts: str
    request_id: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogRow:
        return cls(
            service=str(data["service"]),
            seq=int(data["seq"]),
            level=str(data.get("level", "info")),
            message=str(data.get("message", "")),
            ts=str(data.get("ts", "")),
            request_id=data.get("request_id"),
            attrs=data.get("attrs") or {},
        )

    @property
    def key(self) -> tuple[str, int]:
        return (self.service, self.seq)


@dataclass(frozen=True, slots=True)
class GapMark:
    """A forward jump in one service's seqs within the live stream."""

    service: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


LogItem = LogRow | GapMark


@dataclass(frozen=True)
class LogFilter:
    """The filters of the live log table; empty fields match everything."""

    service: str = ""
    min_level: str = ""
    text: str = ""

    def accepts(self, item: LogItem) -> bool:
        if self.service and self.service.lower() not in item.service.lower():
            return False
        if isinstance(item, GapMark):
            return True
        if self.min_level and _level_rank(item.level) < _level_rank(self.min_level):
            return False
        return not self.text or self.text.lower() in item.message.lower()


def _level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else len(LEVELS)


class LogRing:
    """The newest log rows and gap marks, bounded, without repeated (service, seq).

    A gap mark goes in front of a row whose seq is more than one past the highest
    seq seen for its service. Late rows (lower seqs, such as replayed ones) are
    added without a mark.
    """

    def __init__(self, size: int = MAX_LOG_ROWS) -> None:
        self.size = size
        self.items: deque[LogItem] = deque()
        self.highest: dict[str, int] = {}
        self.total = 0  # items ever added, so a reader can ask for what it missed
        self.generation = 0  # bumped when the items are reordered, so readers rebuild
        self._keys: set[tuple[str, int]] = set()

    def add(self, rows: Iterable[LogRow]) -> list[LogItem]:
        """Add rows in arrival order; return the items added, gap marks included."""
        added: list[LogItem] = []
        for row in rows:
            if row.key in self._keys:
                continue
            highest = self.highest.get(row.service)
            if highest is not None and row.seq > highest + 1:
                added.append(self._push(GapMark(row.service, highest + 1, row.seq - 1)))
            if highest is None or row.seq > highest:
                self.highest[row.service] = row.seq
            added.append(self._push(row))
        return added

    def merge(self, rows: Iterable[LogRow]) -> bool:
        """Add rows fetched out of band (the HTTP catch-up) and put every row in ts
        order, since they may be older than rows already streamed. Return True when
        any row was new."""
        fresh = [row for row in rows if row.key not in self._keys]
        if not fresh:
            return False
        ordered = sorted(
            self.rows() + fresh, key=lambda row: fmt.parse_time(row.ts) or 0.0
        )
        self.items.clear()
        self._keys.clear()
        self.highest.clear()
        self.add(ordered[-self.size :])
        self.generation += 1
        return True

    def _push(self, item: LogItem) -> LogItem:
        if len(self.items) >= self.size:
            evicted = self.items.popleft()
            if isinstance(evicted, LogRow):
                self._keys.discard(evicted.key)
        if isinstance(item, LogRow):
            self._keys.add(item.key)
        self.items.append(item)
        self.total += 1
        return item

    def since(self, total: int) -> list[LogItem]:
        """Return the items added after the ring had `total` items, if still held."""
        fresh = min(self.total - total, len(self.items))
        return list(itertools.islice(self.items, len(self.items) - fresh, None))

    def matching(self, log_filter: LogFilter) -> list[LogItem]:
        return [item for item in self.items if log_filter.accepts(item)]

    def rows(self) -> list[LogRow]:
        return [item for item in self.items if isinstance(item, LogRow)]


class Link(Enum):
    """The state of the live connection to the server."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class Connection:
    """The connection state, with the error and retry delay while it is down."""

    link: Link = Link.CONNECTING
    url: str = ""
    error: str = ""
    attempt: int = 0
    retry_in_s: float | None = None


@dataclass(frozen=True)
class Event:
    """A line of the event log: faults, worker crashes, connection changes."""

    at: float
    text: str
    kind: str = "info"


def service_status(figures: dict[str, Any]) -> str:
    """Return one word for a service's health, from its /metrics figures."""
    if figures.get("lost"):
        return "lost"
    if figures.get("missingTotal"):
        return "gaps"
    if not figures.get("eps1m") and not figures.get("lag"):
        return "idle"
    return "ok"


def fault_remaining_s(fault: dict[str, Any], now: float) -> float:
    return max(0.0, float(fault.get("endsAt", now)) - now)


def control_summary(body: dict[str, Any]) -> str:
    """Describe a POST /metrics/control response or a sim:control event."""
    action = body.get("action", "?")
    if body.get("ended"):
        return f"{action} ended"
    if "endsAt" in body:
        length = float(body["endsAt"]) - float(body.get("startedAt", body["endsAt"]))
        return f"{action} on for {fmt.duration(length)}"
    if action == "flush-queue":
        flushed = body.get("flushed") or {}
        batches = fmt.plural(int(flushed.get("stream", 0)), "batch", "batches")
        retries = fmt.plural(int(flushed.get("retry", 0)), "retry", "retries")
        return f"queue flushed: {batches}, {retries}"
    if action == "reset":
        return "reset: every fault ended" + (
            ", all data deleted" if body.get("all") else ""
        )
    return str(action)


@dataclass
class DashboardModel:
    """Everything the screens draw, updated by the app's message handlers."""

    metrics: dict[str, Any] = field(default_factory=dict)
    queue: dict[str, Any] = field(default_factory=dict)
    logs: LogRing = field(default_factory=LogRing)
    eps_history: deque[float] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS)
    )
    stream_history: deque[float] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS)
    )
    retry_history: deque[float] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS)
    )
    faults: list[dict[str, Any]] = field(default_factory=list)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    replays: list[dict[str, Any]] = field(default_factory=list)
    replay_counts: dict[str, int] = field(default_factory=dict)
    live_replays: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=MAX_LIVE_REPLAYS)
    )
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    connection: Connection = field(default_factory=Connection)
    received: int = 0
    skipped_by_server: int = 0
    dropped_locally: int = 0
    _last_control_at: float | None = None

    # --- metrics -------------------------------------------------------------------

    def apply_metrics(self, body: dict[str, Any]) -> None:
        """Take a metrics:snapshot (or GET /metrics) body and extend the charts."""
        self.metrics = body
        self.faults = list(body.get("faults") or [])
        self.eps_history.append(float((body.get("eps") or {}).get("1s") or 0))
        queue = body.get("queue") or {}
        self.stream_history.append(float(queue.get("depth") or 0))
        self.retry_history.append(float(queue.get("retry") or 0))

    def services(self) -> list[dict[str, Any]]:
        return sorted(self.metrics.get("services") or [], key=lambda s: s["service"])

    def service(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services() if s["service"] == name), None)

    def active_faults(self, now: float) -> list[dict[str, Any]]:
        return [f for f in self.faults if fault_remaining_s(f, now) > 0]

    # --- live stream ---------------------------------------------------------------

    def add_logs(self, events: Iterable[dict[str, Any]]) -> list[LogItem]:
        rows = [LogRow.from_json(event) for event in events]
        self.received += len(rows)
        return self.logs.add(rows)

    def merge_logs(self, stored: Iterable[dict[str, Any]]) -> bool:
        return self.logs.merge(LogRow.from_json(row) for row in stored)

    def count_skipped(self, by_server: int, locally: int) -> None:
        self.skipped_by_server += by_server
        self.dropped_locally += locally

    def apply_acks(self, acks: Iterable[dict[str, Any]]) -> None:
        for ack in acks:
            self.acks[ack["service"]] = ack

    # --- replays -------------------------------------------------------------------

    def apply_replays(self, body: dict[str, Any]) -> None:
        self.replays = list(body.get("replays") or [])
        self.replay_counts = dict(body.get("counts") or {})

    def replay_completed(self, event: dict[str, Any], now: float) -> None:
        """Record a replay:completed event and mark the listed replay completed."""
        self.live_replays.appendleft({**event, "at": now})
        for replay in self.replays:
            if (
                replay.get("id") == event.get("id")
                and replay.get("status") == "pending"
            ):
                replay["status"] = "completed"
                replay["latency_ms"] = event.get("latencyMs")
                self._shift_count("pending", "completed")
        self.note(
            now,
            f"replay {event.get('id')} of {event.get('service')} "
            f"{fmt.seq_range(event.get('fromSeq', 0), event.get('toSeq', 0))} completed "
            f"in {fmt.millis(event.get('latencyMs'))}",
            "replay",
        )

    def _shift_count(self, source: str, target: str) -> None:
        self.replay_counts[source] = max(0, self.replay_counts.get(source, 0) - 1)
        self.replay_counts[target] = self.replay_counts.get(target, 0) + 1

    def latency_ms(self, replay: dict[str, Any]) -> float | None:
        """Return a replay's latency: from its event, else completed_at - created_at."""
        if replay.get("latency_ms") is not None:
            return float(replay["latency_ms"])
        done = fmt.parse_time(replay.get("completed_at"))
        created = fmt.parse_time(replay.get("created_at"))
        if done is None or created is None:
            return None
        return (done - created) * 1000

    # --- faults, workers and the connection ----------------------------------------

    def apply_control(self, body: dict[str, Any], now: float) -> None:
        """Record a control response or sim:control event, each `at` only once."""
        self.faults = list(body.get("active") or [])
        if body.get("at") is not None and body.get("at") == self._last_control_at:
            return
        self._last_control_at = body.get("at")
        kind = "ok" if body.get("ended") or body.get("action") == "reset" else "fault"
        self.note(float(body.get("at") or now), control_summary(body), kind)

    def worker_crashed(self, event: dict[str, Any], now: float) -> None:
        at = float(event.get("at", now))
        down = fmt.duration(float(event.get("until", at)) - at)
        self.note(at, f"worker {event.get('worker')} crashed, down for {down}", "fault")

    def worker_recovered(self, event: dict[str, Any], now: float) -> None:
        self.note(
            float(event.get("at", now)), f"worker {event.get('worker')} recovered", "ok"
        )

    def set_connection(self, connection: Connection, now: float) -> bool:
        """Store the connection state; return True when it just went down, which the
        event log notes once per outage rather than once per retry."""
        previous = self.connection.link
        self.connection = connection
        if connection.link is Link.CONNECTED and previous is not Link.CONNECTED:
            self.note(now, f"connected to {connection.url}", "ok")
        went_down = connection.link is Link.DISCONNECTED and previous in (
            Link.CONNECTED, Link.CONNECTING,
        )  # fmt: skip
        if went_down and previous is Link.CONNECTED:
            self.note(now, f"connection lost: {connection.error}", "fault")
        elif went_down:
            self.note(
                now, f"cannot connect to {connection.url}: {connection.error}", "fault"
            )
        return went_down

    def note(self, now: float, text: str, kind: str = "info") -> None:
        self.events.appendleft(Event(now, text, kind))
