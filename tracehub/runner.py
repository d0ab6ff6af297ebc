"""Running the server and the worker as processes: provisioning, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import AsyncIterator

from aiohttp import web

from tracehub.auth import Tokens, is_loopback
from tracehub.config import Settings
from tracehub.embedded import Embedded
from tracehub.node import Backends, open_backends
from tracehub.worker import supervise

log = logging.getLogger(__name__)

# SIGHUP too: a closed terminal must stop the node cleanly, embedded servers included.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_event_loop() -> None:
    """Use uvloop when it is installed."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@contextlib.contextmanager
def provisioned(settings: Settings):  # type: ignore[no-untyped-def]
    """Yield settings with both URLs set, starting embedded servers where none is configured."""
    if not settings.embedded:
        log.info("using PostgreSQL %s and Redis %s", _safe(settings.database_url), _safe(settings.redis_url))
        yield settings
        return
    embedded = Embedded(settings.home)
    database_url, redis_url = embedded.start()
    try:
        settings = settings.with_overrides(
            database_url=settings.database_url or database_url,
            redis_url=settings.redis_url or redis_url,
        )
        log.info("using embedded servers under %s: PostgreSQL %s, Redis %s",
                 settings.home, _safe(settings.database_url), settings.redis_url)  # fmt: skip
        yield settings
    finally:
        embedded.stop()


def _safe(url: str | None) -> str:
    from tracehub.node import _where

    return _where(url or "")


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@contextlib.asynccontextmanager
async def _backends(settings: Settings, pool_size: int) -> AsyncIterator[Backends]:
    backends = await open_backends(settings, pool_size=pool_size)
    try:
        yield backends
    finally:
        await backends.close()


class UnsafeBinding(Exception):
    """The server would listen beyond loopback without access tokens."""


def load_tokens(settings: Settings) -> Tokens:
    """Read the access tokens; refuse to run open on anything but a loopback address."""
    tokens = Tokens.load()
    if tokens.enabled:
        log.info("access control on: %d tokens configured", len(tokens.grants))
        return tokens
    if not is_loopback(settings.host):
        raise UnsafeBinding(
            f"refusing to listen on {settings.host} without access tokens; set TRACEHUB_ADMIN_TOKEN,"
            " TRACEHUB_READ_TOKEN and TRACEHUB_INGEST_TOKENS (or TRACEHUB_TOKENS_FILE), or bind 127.0.0.1"
        )
    log.warning("no access tokens configured: running open, which is allowed on loopback (%s) only", settings.host)
    return tokens


async def serve(settings: Settings, *, run_worker: bool, tokens: Tokens) -> None:
    """Run a server node until SIGINT or SIGTERM."""
    from tracehub.server.app import create_app

    async with _backends(settings, pool_size=10) as backends:
        app = create_app(backends, run_worker=run_worker, tokens=tokens)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        log.info("TraceHub listening on http://%s:%d (worker %s)", settings.host, settings.port,
                 "in-process" if run_worker else "off")  # fmt: skip
        try:
            await _until_signalled()
        finally:
            log.info("TraceHub stopping")
            await runner.cleanup()


async def run_worker(settings: Settings) -> None:
    """Run a worker process until SIGINT or SIGTERM."""
    async with _backends(settings, pool_size=4) as backends:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        await supervise(backends.new_worker, backends.faults, backends.queue, stop)
