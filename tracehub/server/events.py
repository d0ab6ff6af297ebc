"""Socket.IO fan-out of TraceHub events.

Events from every node and worker travel on one Redis pub/sub channel; each node
relays them to its own Socket.IO clients. Two kinds are rate-shaped on the way:
``log:new`` is capped per second (the surplus is reported as ``log:skipped``), and
``ack:sent`` is coalesced to the latest ACK per service every ACK_FLUSH_S.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import orjson
import socketio
from redis.exceptions import RedisError

from tracehub.queue import RedisQueue

log = logging.getLogger(__name__)

ACK_FLUSH_S = 0.25
SNAPSHOT_EVERY_S = 2.0


class EventHub:
    """Relays the Redis event channel to this node's Socket.IO clients."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        queue: RedisQueue,
        log_events_per_s: int,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        on_control: Callable[[], Awaitable[None]],
    ) -> None:
        self.sio = sio
        self.queue = queue
        self.log_events_per_s = log_events_per_s
        self.snapshot = snapshot
        self.on_control = on_control
        self._pending_acks: dict[str, dict[str, Any]] = {}
        self._sent_in_window = 0
        self._stopping = asyncio.Event()
        self._skipped = 0

    def ack_sent(self, service: str, ack_till: int, missing: list[int]) -> None:
        """Note an ACK; the latest one per service is published at the next flush."""
        self._pending_acks[service] = {"service": service, "ackTill": ack_till, "missing": missing[:100]}

    def stop(self) -> None:
        """Ask the relay to end; it notices within a second, cancelled or not."""
        self._stopping.set()

    async def run(self) -> None:
        """Relay events until stopped or cancelled; reconnects to Redis when it drops."""
        tasks = [
            asyncio.create_task(self._relay(), name="events-relay"),
            asyncio.create_task(self._flush_acks(), name="events-acks"),
            asyncio.create_task(self._snapshots(), name="events-snapshots"),
            asyncio.create_task(self._new_log_window(), name="events-log-window"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                async with self.queue.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.queue.keys.events)
                    backoff = 0.2
                    while not self._stopping.is_set():
                        # redis-py's pub/sub read can swallow a cancellation (seen with
                        # redis 8.2), so the loop also ends on the stop flag, checked
                        # at least once a second.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message["type"] == "message":
                            await self._dispatch(orjson.loads(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("event relay lost Redis (%s); resubscribing in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        event, data = message["event"], message["data"]
        if event == "log:batch":
            await self._emit_logs(data["logs"], data["total"])
            return
        if event == "ack:batch":
            for ack in data:
                await self.sio.emit("ack:sent", ack)
            return
        if event == "sim:control":
            await self.on_control()
        await self.sio.emit(event, data)

    async def _emit_logs(self, logs: list[dict[str, Any]], total: int) -> None:
        """Send log:new for as many logs as this second's budget allows; count the rest."""
        room = max(0, self.log_events_per_s - self._sent_in_window)
        for item in logs[len(logs) - min(room, len(logs)) :]:  # the newest ones
            await self.sio.emit("log:new", item)
        sent = min(room, len(logs))
        self._sent_in_window += sent
        self._skipped += total - sent

    async def _new_log_window(self) -> None:
        """Report the logs skipped in the last second and reset the budget, every second."""
        while True:
            await asyncio.sleep(1.0)
            skipped, self._skipped, self._sent_in_window = self._skipped, 0, 0
            if skipped:
                await self.sio.emit("log:skipped", {"count": skipped, "windowS": 1})

    async def _flush_acks(self) -> None:
        while True:
            await asyncio.sleep(ACK_FLUSH_S)
            if not self._pending_acks:
                continue
            acks, self._pending_acks = list(self._pending_acks.values()), {}
            try:
                await self.queue.publish("ack:batch", acks)
            except (RedisError, OSError) as exc:
                log.warning("could not publish %d ack:sent events: %s", len(acks), exc)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            try:
                await self.sio.emit("metrics:snapshot", await self.snapshot())
            except (RedisError, OSError) as exc:
                log.warning("metrics snapshot failed: %s", exc)
