"""The aiohttp application: routes, Socket.IO, the event hub and an in-process worker."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import socketio
from aiohttp import web

from tracehub.auth import Tokens
from tracehub.config import Settings
from tracehub.node import Backends
from tracehub.server.events import EventHub
from tracehub.server.routes import auth_middleware, error_middleware, node_snapshot, routes
from tracehub.server.state import NODE, TOKENS, Node
from tracehub.worker import supervise

log = logging.getLogger(__name__)

FAULT_POLL_S = 1.0
BODY_SLACK = 1024  # lets the route answer an oversized body itself, with a JSON 413


def create_app(backends: Backends, *, run_worker: bool = True, tokens: Tokens | None = None) -> web.Application:
    """Build the application over open backends; background tasks start with it."""
    settings = backends.settings
    tokens = tokens or Tokens()
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=settings.max_body_bytes + BODY_SLACK)  # fmt: skip
    node = Node(settings, backends)
    app[NODE] = node
    app[TOKENS] = tokens
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False)
    sio.attach(app)
    node.hub = EventHub(sio, backends.queue, settings.log_events_per_s, lambda: node_snapshot(node), backends.faults.refresh)

    @sio.event
    async def connect(sid: str, environ: dict, auth: object = None) -> None:  # type: ignore[type-arg]
        token = auth.get("token") if isinstance(auth, dict) else None
        header = f"Bearer {token}" if token else environ.get("HTTP_AUTHORIZATION")
        principal = tokens.principal(header)
        if principal is None or not principal.can_read():
            log.warning("Socket.IO client %s rejected: missing or invalid read token", sid)
            raise socketio.exceptions.ConnectionRefusedError("missing or invalid read token")
        log.info("Socket.IO client %s connected", sid)
        await sio.emit("metrics:snapshot", await node_snapshot(node), to=sid)

    @sio.event
    async def disconnect(sid: str, *args: object) -> None:
        log.info("Socket.IO client %s disconnected", sid)

    app.add_routes(routes)
    app.cleanup_ctx.append(_background(run_worker))
    return app


def _background(run_worker: bool):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE]
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(node.hub.run(), name="event-hub"),  # type: ignore[union-attr]
            asyncio.create_task(_poll_faults(node), name="fault-poll"),
        ]
        if run_worker:
            tasks.append(asyncio.create_task(
                supervise(node.backends.new_worker, node.faults, node.queue, stop), name="worker"))  # fmt: skip
        for task in tasks:
            task.add_done_callback(_report_death)
        yield
        stop.set()
        for task in tasks:
            if task.get_name() != "worker":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return context


def _report_death(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("background task %s died: %r", task.get_name(), exc, exc_info=exc)


async def _poll_faults(node: Node) -> None:
    while True:
        try:
            await node.faults.refresh_and_announce()
        except Exception as exc:  # noqa: BLE001 - a poll failure must not stop the node
            log.debug("fault poll failed: %s", exc)
        await asyncio.sleep(FAULT_POLL_S)
