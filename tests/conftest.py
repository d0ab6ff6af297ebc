"""Fixtures: real PostgreSQL and Redis, with a schema and key prefix of each test's own.

Set TRACEHUB_TEST_DATABASE_URL and TRACEHUB_TEST_REDIS_URL to use running servers;
without them the session starts the embedded ones in a temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
import redis
from aiohttp import web
from psycopg.conninfo import make_conninfo

from tracehub.config import Settings
from tracehub.node import Backends, open_backends
from tracehub.server.app import create_app

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BackendUrls:
    database: str
    redis: str


@pytest.fixture(scope="session")
def backend_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendUrls]:
    database = os.environ.get("TRACEHUB_TEST_DATABASE_URL")
    redis_url = os.environ.get("TRACEHUB_TEST_REDIS_URL")
    embedded = None
    if not database or not redis_url:
        from tracehub.embedded import Embedded

        embedded = Embedded(tmp_path_factory.mktemp("embedded"))
        emb_database, emb_redis = embedded.start()
        database = database or emb_database
        redis_url = redis_url or emb_redis
    yield BackendUrls(database, redis_url)
    if embedded is not None:
        embedded.stop()


@dataclass(frozen=True)
class Isolated:
    """One test's own schema and Redis key prefix on the shared servers."""

    schema: str
    database_url: str
    redis_url: str
    prefix: str

    def settings(self, **overrides: object) -> Settings:
        base = Settings(database_url=self.database_url, redis_url=self.redis_url, redis_prefix=self.prefix)
        return base.with_overrides(**overrides)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:  # type: ignore[type-arg]
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TRACEHUB_DATABASE_URL=self.database_url,
            TRACEHUB_REDIS_URL=self.redis_url,
            TRACEHUB_REDIS_PREFIX=self.prefix,
            **extra,
        )
        return env


@pytest.fixture
def isolated(backend_urls: BackendUrls) -> Iterator[Isolated]:
    tag = uuid.uuid4().hex[:10]
    schema = f"t_{tag}"
    with psycopg.connect(backend_urls.database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = make_conninfo(backend_urls.database, options=f"-c search_path={schema}", application_name=schema)
    prefix = f"test:{tag}:"
    yield Isolated(schema, url, backend_urls.redis, prefix)
    with psycopg.connect(backend_urls.database, autocommit=True) as conn:
        # A connection the test left behind (a killed process, an unclosed pool) may
        # hold locks in the schema; end it rather than wait on it.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (schema,),
        )
        conn.execute("SET lock_timeout = '30s'")
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    client = redis.Redis.from_url(backend_urls.redis)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    backends: Backends
    settings: Settings

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)


async def start_server(settings: Settings, *, run_worker: bool = True) -> tuple[RunningServer, web.AppRunner]:
    port = free_port()
    settings = settings.with_overrides(port=port)
    backends = await open_backends(settings)
    runner = web.AppRunner(create_app(backends, run_worker=run_worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningServer(f"http://127.0.0.1:{port}", backends, settings), runner


async def stop_server(server: RunningServer, runner: web.AppRunner) -> None:
    await runner.cleanup()
    await server.backends.close()


@pytest.fixture
async def server(isolated: Isolated) -> AsyncIterator[RunningServer]:
    """A server node with an in-process worker, on a free loopback port."""
    running, runner = await start_server(isolated.settings())
    yield running
    await stop_server(running, runner)


async def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll an async or plain predicate until it returns a truthy value or timeout passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a tracehub command as a child process, its output going to log_path."""
    handle = open(log_path, "wb")
    return subprocess.Popen([sys.executable, "-m", "tracehub", *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server at {url} did not become healthy in {timeout}s")


def entry(seq: int, **fields: object) -> dict[str, object]:
    """Return a valid batch entry for seq, as the acceptance cases write R(n)."""
    base: dict[str, object] = {"seq": seq, "level": "info", "message": f"m-{seq}", "request_id": f"req-{seq}",
                               "ts": "2026-12-04T12:00:00Z"}  # fmt: skip
    base.update(fields)
    return base


def batch(service: str, seqs, **fields: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"service": service, "batch": [entry(s, **fields) for s in seqs]}


class ThreadedServer:
    """A server node on its own event loop in a thread, for synchronous tests
    (hypothesis) that cannot share the test's loop."""

    def __init__(self, settings: Settings) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.running, self._runner = self._call(start_server(settings))
        self.url = self.running.url

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def stop(self) -> None:
        self._call(stop_server(self.running, self._runner))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture
def threaded_server(isolated: Isolated) -> Iterator[ThreadedServer]:
    running = ThreadedServer(isolated.settings())
    yield running
    running.stop()


def poll(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """The synchronous twin of wait_for."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")
