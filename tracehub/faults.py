"""Fault injection: the failures an operator can switch on to watch TraceHub recover.

Active faults are stored in a Redis hash, so every node and worker sharing the Redis
reads the same set. Each node keeps a local copy, refreshed by the ``sim:control``
event and a periodic poll, so the hot path never waits on Redis for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from tracehub.queue import RedisQueue

ACTIONS = ("crash-worker", "drop-network", "delay-ack", "flush-queue", "reset")
TIMED = ("crash-worker", "drop-network", "delay-ack")
DEFAULT_DURATION_MS = {"crash-worker": 5000, "drop-network": 10_000, "delay-ack": 3000}
MAX_DURATION_MS = 3_600_000


@dataclass(frozen=True)
class Fault:
    """An active fault and its time window, in epoch seconds."""

    action: str
    started_at: float
    ends_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "startedAt": self.started_at,
            "endsAt": self.ends_at,
            "remainingMs": max(0, int((self.ends_at - time.time()) * 1000)),
        }


class Faults:
    """The local view of active faults, and the operations that change them."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self.active: dict[str, Fault] = {}
        self._ended: list[Fault] = []  # ran out of time, not yet announced

    def is_active(self, action: str) -> bool:
        fault = self.active.get(action)
        return fault is not None and fault.ends_at > time.time()

    def remaining_s(self, action: str) -> float:
        fault = self.active.get(action)
        return max(0.0, fault.ends_at - time.time()) if fault else 0.0

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        return [f.to_json() for f in self.active.values() if f.ends_at > now]

    async def refresh(self) -> None:
        """Reload active faults from Redis, dropping those that have ended."""
        raw = await self.queue.redis.hgetall(self.queue.keys.faults)
        now = time.time()
        active = {}
        for key, value in raw.items():
            data = orjson.loads(value)
            fault = Fault(key.decode(), data["startedAt"], data["endsAt"])
            if fault.ends_at > now:
                active[fault.action] = fault
        self._ended += [f for a, f in self.active.items() if a not in active and f.ends_at <= now]
        self.active = active

    async def start(self, action: str, duration_ms: int) -> Fault:
        """Switch a timed fault on for duration_ms, on every node."""
        now = time.time()
        fault = Fault(action, now, now + duration_ms / 1000)
        await self.queue.redis.hset(
            self.queue.keys.faults,
            action,
            orjson.dumps({"startedAt": fault.started_at, "endsAt": fault.ends_at}),
        )
        self.active[action] = fault
        return fault

    async def refresh_and_announce(self) -> None:
        """Reload active faults and publish a sim:control event for each fault that
        ran out of time since the last refresh. When several nodes notice the same
        expiry, a Redis key set with NX lets exactly one of them announce it."""
        await self.refresh()
        ended, self._ended = self._ended, []
        now = time.time()
        for fault in ended:
            action = fault.action
            marker = f"{self.queue.keys.faults}:ended:{action}:{fault.started_at}"
            if await self.queue.redis.set(marker, 1, nx=True, ex=60):
                await self.queue.publish(
                    "sim:control",
                    {"action": action, "ended": True, "startedAt": fault.started_at,
                     "endsAt": fault.ends_at, "active": self.snapshot(), "at": now},
                )  # fmt: skip

    async def clear(self) -> None:
        """End every fault at once."""
        await self.queue.redis.delete(self.queue.keys.faults)
        self.active = {}
        self._ended = []
