"""The state one server node shares between its routes and background tasks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tracehub.auth import Principal, Tokens
from tracehub.config import Settings
from tracehub.faults import TIMED
from tracehub.node import Backends
from tracehub.server.events import EventHub
from tracehub.server.metrics import LatencyWindow

log = logging.getLogger(__name__)


@dataclass
class Node:
    """A running server node: its backends, event hub and ACK latency window."""

    settings: Settings
    backends: Backends
    hub: EventHub | None = None
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.backends.store

    @property
    def queue(self):  # type: ignore[no-untyped-def]
        return self.backends.queue

    @property
    def ingestor(self):  # type: ignore[no-untyped-def]
        return self.backends.ingestor

    @property
    def faults(self):  # type: ignore[no-untyped-def]
        return self.backends.faults

    async def apply_control(self, action: str, duration_ms: int, wipe: bool) -> dict[str, Any]:
        """Start, run or end a fault on every node; returns what was done."""
        result: dict[str, Any] = {"action": action}
        if action in TIMED:
            fault = await self.faults.start(action, duration_ms)
            result.update(fault.to_json())
        elif action == "flush-queue":
            result["flushed"] = await self.queue.flush()
        elif action == "reset":
            await self.faults.clear()
            if wipe:
                await self.store.clear_all()
                await self.queue.wipe()
                self.ingestor.forget_cache()
            result["all"] = wipe
        log.warning("fault control: %s", result)
        result["active"] = self.faults.snapshot()
        result["at"] = time.time()
        await self.queue.publish("sim:control", result)
        return result


NODE = web.AppKey("node", Node)
TOKENS = web.AppKey("tokens", Tokens)
PRINCIPAL = web.RequestKey("principal", Principal)
