"""Connections to PostgreSQL and Redis, shared by the server and the worker process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from tracehub.config import Settings
from tracehub.faults import Faults
from tracehub.ingest import Ingestor
from tracehub.queue import RedisQueue, connect
from tracehub.storage import Store, StorageUnavailable
from tracehub.worker import Worker

log = logging.getLogger(__name__)


class BackendUnavailable(Exception):
    """PostgreSQL or Redis could not be reached at start."""


@dataclass
class Backends:
    settings: Settings
    store: Store
    queue: RedisQueue
    ingestor: Ingestor
    faults: Faults

    def new_worker(self, name: str | None = None) -> Worker:
        return Worker(self.queue, self.store, self.ingestor, self.settings, name=name)

    async def close(self) -> None:
        await self.store.close()
        await self.queue.close()


async def open_backends(settings: Settings, *, pool_size: int = 8) -> Backends:
    """Connect to both servers and apply the schema; raises BackendUnavailable."""
    if settings.database_url is None or settings.redis_url is None:
        raise BackendUnavailable("no database or Redis URL: provision the embedded servers first")
    store = Store(settings.database_url, max_size=pool_size)
    try:
        await store.open()
    except StorageUnavailable as exc:
        raise BackendUnavailable(f"PostgreSQL at {_where(settings.database_url)}: {exc}") from exc
    queue = RedisQueue(connect(settings.redis_url), settings.redis_prefix)
    try:
        await queue.redis.ping()
        await queue.ensure_group()
    except (RedisError, OSError) as exc:
        await store.close()
        raise BackendUnavailable(f"cannot connect to Redis at {_where(settings.redis_url)}: {exc}") from exc
    ingestor = Ingestor(queue, store, settings)
    return Backends(settings, store, queue, ingestor, Faults(queue))


def _where(url: str) -> str:
    """Return url without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}" if user else f"{scheme}://{host}"
    return url
