"""Messages that carry server data into the app, posted by the feed and by workers.

Snapshot-like messages are replaceable: when a newer one is queued behind an older
one of the same class, Textual drops the older, so a flood collapses to the latest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from tracehub.tui.model import Connection


class _Replaceable(Message):
    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)


@dataclass
class MetricsUpdated(_Replaceable):
    """A metrics:snapshot event or a GET /metrics response."""

    body: dict[str, Any]


@dataclass
class LiveReady(_Replaceable):
    """The live buffer contains new log:new, log:skipped or ack:sent events to drain."""


@dataclass
class ConnectionChanged(Message):
    """The live connection went up, down, or is retrying (every change counts)."""

    connection: Connection


@dataclass
class CaughtUp(Message):
    """The HTTP catch-up after each connect: figures and the newest stored logs."""

    metrics: dict[str, Any]
    logs: list[dict[str, Any]]


@dataclass
class ReplayCompleted(Message):
    """A replay:completed event."""

    event: dict[str, Any]


@dataclass
class WorkerCrashed(Message):
    """A worker:crashed event."""

    event: dict[str, Any]


@dataclass
class WorkerRecovered(Message):
    """A worker:recovered event."""

    event: dict[str, Any]


@dataclass
class ControlApplied(Message):
    """A sim:control event, or the response of POST /metrics/control."""

    body: dict[str, Any]


@dataclass
class ReplaysLoaded(_Replaceable):
    """A GET /logs/replay response."""

    body: dict[str, Any]


@dataclass
class QueueLoaded(_Replaceable):
    """A GET /metrics/queue response."""

    body: dict[str, Any]


@dataclass
class ServiceReplaysLoaded(Message):
    """A GET /logs/replay?service= response for the service detail screen."""

    service: str
    body: dict[str, Any]
