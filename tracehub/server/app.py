"""The aiohttp application: routes, Socket.IO, the event hub and an in-process worker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator

import socketio
from aiohttp import web

from tracehub.auth import Tokens
from tracehub.config import Settings
from tracehub.node import Backends
from tracehub.server.events import EventHub
from tracehub.server.openapi import add_openapi_route
from tracehub.server.routes import BODY_READ_TIMEOUT, auth_middleware, error_middleware, node_snapshot, routes
from tracehub.server.state import NODE, TOKENS, Node
from tracehub.worker import supervise

log = logging.getLogger(__name__)

FAULT_POLL_S = 1.0
BODY_SLACK = 1024  # lets the route reject an oversized body itself, with a JSON 413
TASK_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on what one client connection can hold on a node.

    A Socket.IO client that sends no pong for ping_interval_s + ping_timeout_s
    is disconnected and its TCP connection aborted, so a client that stops
    reading cannot hold a queue of events or a blocked writer.
    """

    body_read_timeout_s: float = 30.0  # a request body must arrive within this (408)
    keepalive_timeout_s: float = 75.0  # idle HTTP connections are closed after this
    max_line_size: int = 8190  # bytes of the request line and of each header line
    max_headers: int = 128
    sio_ping_interval_s: float = 25.0
    sio_ping_timeout_s: float = 20.0
    sio_max_message_bytes: int = 1_000_000  # largest Socket.IO message from a client


def create_app(backends: Backends, *, run_worker: bool = True, tokens: Tokens | None = None,
               limits: ConnectionLimits | None = None) -> web.Application:  # fmt: skip
    """Build the application over open backends; background tasks start with it."""
    settings = backends.settings
    tokens = tokens or Tokens()
    limits = limits or ConnectionLimits()
    # auto_decompress is off because the ingest route inflates bodies itself, in
    # bounded steps, and rejects unknown encodings with a JSON 415.
    handler_args = {"keepalive_timeout": limits.keepalive_timeout_s, "max_line_size": limits.max_line_size,
                    "max_field_size": limits.max_line_size, "max_headers": limits.max_headers,
                    "auto_decompress": False}  # fmt: skip
    app = web.Application(middlewares=[error_middleware, auth_middleware], handler_args=handler_args,
                          client_max_size=settings.max_body_bytes + BODY_SLACK)  # fmt: skip
    node = Node(settings, backends)
    app[NODE] = node
    app[TOKENS] = tokens
    app[BODY_READ_TIMEOUT] = limits.body_read_timeout_s
    sio = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False,
        ping_interval=limits.sio_ping_interval_s, ping_timeout=limits.sio_ping_timeout_s,
        max_http_buffer_size=limits.sio_max_message_bytes,
    )  # fmt: skip
    sio.attach(app)
    connected: set[str] = set()
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
        connected.add(sid)
        await sio.emit("metrics:snapshot", await node_snapshot(node), to=sid)

    @sio.event
    async def disconnect(sid: str, reason: object = None) -> None:
        log.info("Socket.IO client %s disconnected: %s", sid, reason)
        connected.discard(sid)
        if reason == sio.reason.PING_TIMEOUT:
            _abort_transport(sio, sid)

    async def close_sockets(_: web.Application) -> None:
        # Open Socket.IO connections would otherwise hold the shutdown until
        # aiohttp's shutdown timeout runs out.
        for sid in list(connected):
            request = (sio.get_environ(sid) or {}).get("aiohttp.request")
            await sio.disconnect(sid)
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.close()

    app.on_shutdown.append(close_sockets)
    app.add_routes(routes)
    add_openapi_route(app, settings)
    app.cleanup_ctx.append(_background(run_worker))
    return app


def _abort_transport(sio: socketio.AsyncServer, sid: str) -> None:
    """Abort the TCP connection of a client that stopped sending pongs.

    The engine.io writer of a client that never reads waits on the socket
    forever, so closing politely would hold the connection and its buffers.
    """
    request = (sio.get_environ(sid) or {}).get("aiohttp.request")
    transport = getattr(request, "transport", None)
    if transport is not None:
        log.warning("Socket.IO client %s sent no pong in time; aborting its connection", sid)
        transport.abort()


def _background(run_worker: bool):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE]
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(node.hub.run(), name="event-hub"),  # type: ignore[union-attr]
            asyncio.create_task(_poll_faults(node, stop), name="fault-poll"),
        ]
        if run_worker:
            tasks.append(asyncio.create_task(
                supervise(node.backends.new_worker, node.faults, node.queue, stop), name="worker"))  # fmt: skip
        for task in tasks:
            task.add_done_callback(_report_death)
        yield
        stop.set()
        node.hub.stop()  # type: ignore[union-attr]
        for task in tasks:
            if task.get_name() != "worker":
                task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=TASK_STOP_TIMEOUT_S)
        for task in stuck:
            # NOTE: the event relay can miss its cancellation inside a blocking
            # redis-py pub/sub read; stopping the node must not wait on it forever.
            log.error("background task %s did not stop within %.0fs; leaving it", task.get_name(), TASK_STOP_TIMEOUT_S)

    return context


def _report_death(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.critical("background task %s died: %r", task.get_name(), exc, exc_info=exc)


async def _poll_faults(node: Node, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await node.faults.refresh_and_announce()
        except Exception as exc:  # noqa: BLE001 - a poll failure must not stop the node
            log.debug("fault poll failed: %s", exc)
        await asyncio.sleep(FAULT_POLL_S)
