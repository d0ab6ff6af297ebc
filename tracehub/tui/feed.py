"""The live connection: Socket.IO events in, messages to the app out.

log:new can arrive thousands of times a second, far faster than a terminal can be
redrawn. Events go into a bounded LiveBuffer, and a replaceable LiveReady message,
posted at most once per FLUSH_INTERVAL_S, makes the app drain it. When the app
falls behind, the buffer drops its oldest events and counts them, so the screen
shows what it skipped instead of lagging further and further behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import socketio
from textual.message import Message

from tracehub.tui import messages
from tracehub.tui.api import ApiError, TraceHubApi
from tracehub.tui.model import Connection, Link

log = logging.getLogger(__name__)

BUFFER_SIZE = 1000
FLUSH_INTERVAL_S = 0.1
CONNECT_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
CATCH_UP_LOGS = 100


@dataclass(frozen=True)
class LiveBatch:
    """The events taken from the buffer by one drain."""

    logs: list[dict[str, Any]]
    acks: list[dict[str, Any]]
    skipped_by_server: int
    dropped_locally: int


class LiveBuffer:
    """The bounded holding area between Socket.IO handlers and the app."""

    def __init__(self, size: int = BUFFER_SIZE) -> None:
        self._logs: deque[dict[str, Any]] = deque(maxlen=size)
        self._acks: dict[str, dict[str, Any]] = {}
        self._skipped_by_server = 0
        self._dropped_locally = 0

    def add_log(self, event: dict[str, Any]) -> None:
        if len(self._logs) == self._logs.maxlen:
            self._dropped_locally += 1
        self._logs.append(event)

    def add_skipped(self, count: int) -> None:
        self._skipped_by_server += count

    def add_ack(self, ack: dict[str, Any]) -> None:
        self._acks[ack["service"]] = ack

    def drain(self) -> LiveBatch:
        batch = LiveBatch(
            list(self._logs), list(self._acks.values()),
            self._skipped_by_server, self._dropped_locally,
        )  # fmt: skip
        self._logs.clear()
        self._acks = {}
        self._skipped_by_server = self._dropped_locally = 0
        return batch


def backoff_s(attempt: int) -> float:
    """Return the delay before reconnect attempt `attempt` (1-based), with 20% jitter."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempt - 1))
    return base * random.uniform(0.8, 1.2)


def reason(data: Any) -> str:
    """Return the message of a connect_error event (a string or {"message": ...})."""
    if isinstance(data, dict):
        return str(data.get("message", data))
    return str(data)


class LiveFeed:
    """Keeps a Socket.IO connection up, catching up over HTTP after each connect."""

    def __init__(
        self,
        url: str,
        api: TraceHubApi,
        buffer: LiveBuffer,
        post: Callable[[Message], Any],
    ) -> None:
        self.url = url.rstrip("/")
        self.api = api
        self.buffer = buffer
        self.post = post
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = 0.0

    async def run(self) -> None:
        """Connect, and reconnect with backoff, until cancelled."""
        attempt = 0
        while True:
            link = Link.CONNECTING if attempt == 0 else Link.RECONNECTING
            self._report(Connection(link, self.url, attempt=attempt))
            client = self._client()
            lost = asyncio.Event()
            # Bind this attempt's event: a client of an earlier attempt may still
            # report its disconnect after a new attempt has started.
            client.on("disconnect", lambda *_, event=lost: event.set())
            connect_errors: list[str] = []  # the server's reason, such as a rejected token
            client.on(
                "connect_error", lambda data, into=connect_errors: into.append(reason(data))
            )
            try:
                await client.connect(
                    self.url, auth=self._auth(), wait_timeout=CONNECT_TIMEOUT_S
                )
            except (socketio.exceptions.ConnectionError, OSError) as exc:
                attempt += 1
                error = connect_errors[-1] if connect_errors else str(exc) or type(exc).__name__
                await self._wait_to_retry(client, attempt, error)
                continue
            log.info("connected to %s (sid %s)", self.url, client.sid)
            attempt = 0
            self._report(Connection(Link.CONNECTED, self.url))
            try:
                await self._catch_up()
                await lost.wait()
            finally:
                await client.disconnect()
            attempt = 1
            log.warning("connection to %s lost; reconnecting", self.url)
            await self._wait_to_retry(client, attempt, "connection closed")

    async def _wait_to_retry(
        self, client: socketio.AsyncClient, attempt: int, error: str
    ) -> None:
        delay = backoff_s(attempt)
        log.warning(
            "no connection to %s (%s); retry %d in %.1fs",
            self.url,
            error,
            attempt,
            delay,
        )
        await client.disconnect()
        self._report(Connection(Link.DISCONNECTED, self.url, error, attempt, delay))
        await asyncio.sleep(delay)

    def _auth(self) -> dict[str, str] | None:
        return {"token": self.api.token} if self.api.token else None

    def _client(self) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        client.on(
            "metrics:snapshot", lambda body: self.post(messages.MetricsUpdated(body))
        )
        client.on("log:new", self._on_log)
        client.on("log:skipped", self._on_skipped)
        client.on("ack:sent", self._on_ack)
        client.on("replay:completed", lambda e: self.post(messages.ReplayCompleted(e)))
        client.on("worker:crashed", lambda e: self.post(messages.WorkerCrashed(e)))
        client.on("worker:recovered", lambda e: self.post(messages.WorkerRecovered(e)))
        client.on("sim:control", lambda body: self.post(messages.ControlApplied(body)))
        return client

    async def _catch_up(self) -> None:
        """Fetch the figures and the newest logs missed while disconnected."""
        try:
            figures = await self.api.metrics()
            logs = await self.api.recent_logs(CATCH_UP_LOGS)
        except ApiError as exc:
            log.warning("catch-up from %s failed: %s", self.url, exc)
            return
        log.info("caught up from %s: %d logs", self.url, len(logs))
        self.post(messages.CaughtUp(figures, logs))

    def _report(self, connection: Connection) -> None:
        self.post(messages.ConnectionChanged(connection))

    # --- coalescing ----------------------------------------------------------------

    def _on_log(self, event: dict[str, Any]) -> None:
        self.buffer.add_log(event)
        self._schedule_flush()

    def _on_skipped(self, event: dict[str, Any]) -> None:
        self.buffer.add_skipped(int(event.get("count", 0)))
        self._schedule_flush()

    def _on_ack(self, ack: dict[str, Any]) -> None:
        self.buffer.add_ack(ack)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        wait = max(0.0, self._last_flush + FLUSH_INTERVAL_S - time.monotonic())
        self._flush_handle = asyncio.get_running_loop().call_later(wait, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._last_flush = time.monotonic()
        self.post(messages.LiveReady())
