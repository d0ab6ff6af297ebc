"""A loopback TCP proxy that a test can cut and restore, to make a real server
unreachable without stopping it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class Proxy:
    """Forwards 127.0.0.1:<port> to a TCP address or a Unix socket."""

    def __init__(self, host: str | None, port: int | None, unix_path: str | None = None) -> None:
        self.target = (host, port, unix_path)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port, unix_path = self.target
        try:
            if unix_path:
                up_reader, up_writer = await asyncio.open_unix_connection(unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


def postgres_proxy(url: str) -> tuple[Proxy, Callable[[], str]]:
    """Return a proxy for the PostgreSQL at url and a function giving the proxied URL
    (the port is known once the proxy has started)."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    port = int(params.get("port") or 5432)
    if host.startswith("/"):
        proxy = Proxy(None, None, f"{host}/.s.PGSQL.{port}")
    else:
        proxy = Proxy(host, port)
    return proxy, lambda: make_conninfo(url, host="127.0.0.1", port=str(proxy.port))


def redis_proxy(url: str) -> tuple[Proxy, Callable[[], str]]:
    """Return a proxy for the Redis at url and a function giving the proxied URL."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        proxy = Proxy(None, None, parts.path)
        database = "0"
    else:
        proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
        database = parts.path.lstrip("/") or "0"
    return proxy, lambda: f"redis://127.0.0.1:{proxy.port}/{database}"
