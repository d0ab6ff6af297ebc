"""The Redis side of TraceHub: the log stream, retry and dead-letter queues, ACK
state records, producer buffers, statistics and the event channel.

Every key lives under the configured prefix, so several deployments (or tests) can
share one Redis.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tracehub.protocol import Range

log = logging.getLogger(__name__)

GROUP = "workers"
# A request waits up to POOL_WAIT_S for one of MAX_CONNECTIONS connections instead
# of failing at once when a burst of requests takes them all.
MAX_CONNECTIONS = 64
POOL_WAIT_S = 10
STATS_TTL_S = 180


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stream = f"{prefix}queue:logs"
        self.retry = f"{prefix}queue:retry"
        self.dead = f"{prefix}queue:dead"
        self.events = f"{prefix}events"
        self.workers = f"{prefix}workers"
        self.services = f"{prefix}services"
        self.faults = f"{prefix}faults"

    def ack(self, service: str) -> str:
        return f"{self.prefix}ack:{service}"

    def done(self, service: str) -> str:
        return f"{self.prefix}ack:{service}:done"

    def producer(self, service: str) -> str:
        return f"{self.prefix}producer:{service}"

    def stats(self, second: int) -> str:
        return f"{self.prefix}stats:{second}"


# Compare-and-set of a service's ACK record, with the stream append in the same
# atomic step, so a batch is acknowledged exactly when it is queued.
# KEYS: ack record, done record, stream, stats hash, service set.
# ARGV: expected version ('' when absent), new state, max stream length (0 = none),
#       stats field/count pairs count, then the pairs, then stream field/value pairs.
_INGEST_LUA = """
local version = redis.call('HGET', KEYS[1], 'v') or ''
if version ~= ARGV[1] then
  return {'CONFLICT', version}
end
local npairs = tonumber(ARGV[4])
local first_field = 5 + npairs * 2
local has_entry = #ARGV >= first_field
local max_len = tonumber(ARGV[3])
if has_entry and max_len > 0 and redis.call('XLEN', KEYS[3]) >= max_len then
  return {'BUSY', version}
end
local id = ''
if ARGV[2] ~= '' then
  version = tostring((tonumber(version) or 0) + 1)
  redis.call('HSET', KEYS[1], 'v', version, 's', ARGV[2])
end
if has_entry then
  id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, first_field))
end
for i = 0, npairs - 1 do
  redis.call('HINCRBY', KEYS[4], ARGV[5 + i * 2], ARGV[6 + i * 2])
end
redis.call('EXPIRE', KEYS[4], %d)
redis.call('SADD', KEYS[5], KEYS[1])
return {'OK', version, id, redis.call('HGET', KEYS[2], 's') or ''}
""" % STATS_TTL_S

# Compare-and-set of one record (a done record, or an ACK record outside ingest).
# KEYS: the record. ARGV: expected version, new state.
_CAS_LUA = """
local version = redis.call('HGET', KEYS[1], 'v') or ''
if version ~= ARGV[1] then
  return {'CONFLICT', version}
end
version = tostring((tonumber(version) or 0) + 1)
redis.call('HSET', KEYS[1], 'v', version, 's', ARGV[2])
return {'OK', version}
"""


# Compare-and-set of several records at once; each is written only if it is still
# at its expected version. KEYS: the records. ARGV: expected version and new state
# per record. Returns the new version per record, or false where it had moved.
_CAS_MANY_LUA = """
local result = {}
for i, key in ipairs(KEYS) do
  local version = redis.call('HGET', key, 'v') or ''
  if version == ARGV[i * 2 - 1] then
    version = tostring((tonumber(version) or 0) + 1)
    redis.call('HSET', key, 'v', version, 's', ARGV[i * 2])
    result[i] = version
  else
    result[i] = false
  end
end
return result
"""


@dataclass
class Record:
    """A versioned JSON record: an ACK state or a done state."""

    version: str
    state: dict[str, Any] | None


@dataclass
class IngestOutcome:
    status: str  # OK, CONFLICT or BUSY
    version: str
    stream_id: str = ""
    done: dict[str, Any] | None = None


@dataclass
class StreamEntry:
    """One queued batch as the worker reads it."""

    id: str
    service: str
    rows: bytes
    accepted: list[Range]  # the seqs of rows, as ranges
    gaps: list[Range]
    fills: int
    sample: list[dict[str, Any]]
    batch_id: str
    received_ms: int
    count: int
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_fields(self) -> list[bytes | str]:
        fields: list[bytes | str] = [
            "s", self.service,
            "r", self.rows,
            "a", orjson.dumps(self.accepted).decode(),
            "g", orjson.dumps(self.gaps).decode(),
            "f", str(self.fills),
            "x", orjson.dumps(self.sample),
            "i", self.batch_id,
            "t", str(self.received_ms),
            "n", str(self.count),
        ]  # fmt: skip
        return fields

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict[bytes, bytes]) -> StreamEntry:
        return cls(
            id=entry_id,
            service=fields[b"s"].decode(),
            rows=fields[b"r"],
            accepted=[tuple(r) for r in orjson.loads(fields.get(b"a", b"[]"))],
            gaps=[tuple(r) for r in orjson.loads(fields.get(b"g", b"[]"))],
            fills=int(fields.get(b"f", b"0")),
            sample=orjson.loads(fields.get(b"x", b"[]")),
            batch_id=fields.get(b"i", b"").decode(),
            received_ms=int(fields.get(b"t", b"0")),
            count=int(fields.get(b"n", b"0")),
            attempts=int(fields.get(b"k", b"0")),
        )


def _entry_ms(entry_id: str) -> int:
    """Return the millisecond part of a stream entry id such as 1700000000000-0."""
    return int(entry_id.split("-", 1)[0])


def connect(url: str) -> aioredis.Redis:
    """Return a Redis client for url with a bounded pool, timeouts and health checks."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return aioredis.Redis(connection_pool=pool)


class RedisQueue:
    """TraceHub's operations on Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._ingest = client.register_script(_INGEST_LUA)
        self._cas = client.register_script(_CAS_LUA)
        self._cas_many = client.register_script(_CAS_MANY_LUA)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (aioredis.RedisError, OSError) as exc:
            log.warning("Redis health check failed: %s", exc)
            return False

    # --- ACK records ---------------------------------------------------------------

    async def read_record(self, key: str) -> Record:
        version, state = await self.redis.hmget(key, "v", "s")
        return Record(
            version=version.decode() if version else "",
            state=orjson.loads(state) if state else None,
        )

    async def read_records(self, keys: Sequence[str]) -> list[Record]:
        """Read several records in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "v", "s")
            raw = await pipe.execute()
        return [
            Record(version.decode() if version else "", orjson.loads(state) if state else None)
            for version, state in raw
        ]

    async def cas_records(self, writes: Sequence[tuple[str, str, dict[str, Any]]]) -> list[bool]:
        """Write (key, expected version, state) triples; returns which were written."""
        args: list[Any] = []
        for _, expected, state in writes:
            args += [expected, orjson.dumps(state)]
        result = await self._cas_many(keys=[key for key, _, _ in writes], args=args)
        return [bool(version) for version in result]

    async def cas_record(self, key: str, expected: str, state: dict[str, Any]) -> str | None:
        """Write state if the record is still at version expected; returns the new version."""
        status, version = await self._cas(keys=[key], args=[expected, orjson.dumps(state)])
        return version.decode() if status == b"OK" else None

    async def commit_ingest(
        self,
        service: str,
        expected: str,
        state: dict[str, Any] | None,
        entry: StreamEntry | None,
        stats: dict[str, int],
        max_depth: int,
    ) -> IngestOutcome:
        """Store a new ACK state and queue its batch atomically, unless another writer
        changed the record since it was read."""
        second = int(time.time())
        pairs: list[Any] = []
        for name, value in stats.items():
            pairs += [name, value]
        args: list[Any] = [
            expected,
            orjson.dumps(state) if state is not None else "",
            max_depth,
            len(stats),
            *pairs,
        ]
        if entry is not None:
            args += entry.to_fields()
        keys = [
            self.keys.ack(service),
            self.keys.done(service),
            self.keys.stream,
            self.keys.stats(second),
            self.keys.services,
        ]
        result = await self._ingest(keys=keys, args=args)
        status = result[0].decode()
        if status != "OK":
            return IngestOutcome(status, result[1].decode())
        done_raw = result[3]
        return IngestOutcome(
            status,
            result[1].decode(),
            stream_id=result[2].decode() if result[2] else "",
            done=orjson.loads(done_raw) if done_raw else None,
        )

    async def known_services(self) -> list[str]:
        """Return the services that have an ACK record."""
        members = await self.redis.smembers(self.keys.services)
        prefix = self.keys.ack("")
        return sorted(m.decode()[len(prefix) :] for m in members)

    # --- the stream ----------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, consumer: str, count: int, block_ms: int, *, own_pending: bool = False
    ) -> list[StreamEntry]:
        """Read new entries for consumer, blocking up to block_ms when there are none.

        With own_pending, read instead the entries this consumer read before and never
        acknowledged, as a restarted worker of the same name must.
        """
        start = "0" if own_pending else ">"
        try:
            reply = await self.redis.xreadgroup(
                GROUP, consumer, {self.keys.stream: start}, count=count,
                block=None if own_pending else block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return await self._entries(reply[0][1] if reply else [])

    async def claim_stale(self, consumer: str, idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries another consumer read but did not acknowledge in idle_ms."""
        try:
            reply = await self.redis.xautoclaim(
                self.keys.stream, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return await self._entries(reply[1])

    async def _entries(self, raw: Sequence[Any]) -> list[StreamEntry]:
        entries = []
        deleted = []
        for entry_id, fields in raw:
            if fields:
                entries.append(StreamEntry.from_fields(entry_id.decode(), fields))
            else:  # deleted while pending (a flushed queue): only its PEL record is left
                deleted.append(entry_id.decode())
        if deleted:
            await self.redis.xack(self.keys.stream, GROUP, *deleted)
        return entries

    async def acknowledge(self, ids: Sequence[str]) -> None:
        """Acknowledge and delete entries once their rows are committed."""
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, GROUP, *ids)
            pipe.xdel(self.keys.stream, *ids)
            await pipe.execute()

    async def push_retry(self, entry: StreamEntry, delay_s: float) -> None:
        """Move an entry whose insert failed to the retry queue, due after delay_s."""
        payload = orjson.dumps(
            {
                "id": entry.id,
                "fields": {k: v if isinstance(v, str) else v.decode("utf-8", "surrogateescape")
                           for k, v in zip(entry.to_fields()[::2], entry.to_fields()[1::2])},
                "attempts": entry.attempts + 1,
            }
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.retry, {payload: time.time() + delay_s})
            pipe.xack(self.keys.stream, GROUP, entry.id)
            pipe.xdel(self.keys.stream, entry.id)
            await pipe.execute()

    async def due_retries(self, limit: int) -> list[tuple[bytes, StreamEntry]]:
        raw = await self.redis.zrangebyscore(self.keys.retry, "-inf", time.time(), start=0, num=limit)
        due = []
        for member in raw:
            data = orjson.loads(member)
            fields = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in data["fields"].items()}
            entry = StreamEntry.from_fields(data["id"], fields)
            entry.attempts = data["attempts"]
            due.append((member, entry))
        return due

    async def drop_retry(self, member: bytes) -> None:
        await self.redis.zrem(self.keys.retry, member)

    async def bury(self, member: bytes | None, entry: StreamEntry, reason: str) -> None:
        """Move an entry to the dead-letter list after its last failed attempt."""
        record = orjson.dumps(
            {"id": entry.id, "service": entry.service, "batchId": entry.batch_id,
             "attempts": entry.attempts, "reason": reason, "at": time.time(),
             "rows": entry.rows.decode("utf-8", "replace")}
        )  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.keys.dead, record)
            if member is not None:
                pipe.zrem(self.keys.retry, member)
            await pipe.execute()

    async def depth(self) -> dict[str, int]:
        """Return the stream length, its pending count, and the retry and dead sizes."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.stream)
            pipe.zcard(self.keys.retry)
            pipe.llen(self.keys.dead)
            stream, retry, dead = await pipe.execute()
        pending = 0
        try:
            info = await self.redis.xpending(self.keys.stream, GROUP)
            pending = int(info["pending"])
        except ResponseError:
            pass
        return {"stream": stream, "pending": pending, "retry": retry, "dead": dead}

    async def consumers(self) -> list[dict[str, Any]]:
        try:
            raw = await self.redis.xinfo_consumers(self.keys.stream, GROUP)
        except ResponseError:
            return []
        return [
            {"name": c["name"].decode() if isinstance(c["name"], bytes) else c["name"],
             "pending": c["pending"], "idleMs": c["idle"]}
            for c in raw
        ]  # fmt: skip

    # --- producer buffers ----------------------------------------------------------

    async def producer_entries(self, service: str, start: int, end: int, limit: int) -> list[bytes]:
        """Return buffered entries of a producer with start <= seq <= end."""
        return await self.redis.zrangebyscore(
            self.keys.producer(service), start, end, start=0, num=limit
        )

    # --- statistics and events -----------------------------------------------------

    async def stats_window(self, seconds: int) -> list[dict[str, int]]:
        """Return the per-second counters of the last seconds, oldest first."""
        now = int(time.time())
        async with self.redis.pipeline(transaction=False) as pipe:
            for second in range(now - seconds, now):
                pipe.hgetall(self.keys.stats(second))
            raw = await pipe.execute()
        return [{k.decode(): int(v) for k, v in bucket.items()} for bucket in raw]

    async def add_stats(self, counts: dict[str, int]) -> None:
        key = self.keys.stats(int(time.time()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, value in counts.items():
                pipe.hincrby(key, name, value)
            pipe.expire(key, STATS_TTL_S)
            await pipe.execute()

    async def publish(self, event: str, data: Any) -> None:
        await self.redis.publish(self.keys.events, orjson.dumps({"event": event, "data": data}))

    async def heartbeat(self, consumer: str, info: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.workers, consumer, orjson.dumps(info))

    async def workers(self) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.workers)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def forget_worker(self, consumer: str) -> None:
        await self.redis.hdel(self.keys.workers, consumer)

    # --- queue age, for the lost-seq finder ------------------------------------------

    async def server_time_ms(self) -> int:
        """Return Redis's clock in milliseconds, the clock of stream entry ids."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def oldest_queued_ms(self) -> int | None:
        """Return the time (ms) of the oldest batch not yet written: the first entry
        of the stream or of the retry queue, or None when both are empty."""
        times = []
        first = await self.redis.xrange(self.keys.stream, count=1)
        if first:
            times.append(_entry_ms(first[0][0].decode()))
        for member in await self.redis.zrange(self.keys.retry, 0, 9999):
            times.append(_entry_ms(orjson.loads(member)["id"]))
        return min(times) if times else None

    # --- operator actions ----------------------------------------------------------

    async def flush(self) -> dict[str, int]:
        """Delete every queued batch not yet written, and the retry queue."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.keys.stream)
            pipe.zcard(self.keys.retry)
            pipe.xtrim(self.keys.stream, maxlen=0, approximate=False)
            pipe.delete(self.keys.retry)
            stream, retry, *_ = await pipe.execute()
        return {"stream": stream, "retry": retry}

    async def wipe(self) -> int:
        """Delete every key under the prefix (ACK state, buffers, queues), then
        recreate the consumer group. Returns the number of keys deleted."""
        deleted = 0
        async for key in self.redis.scan_iter(match=f"{self.keys.prefix}*", count=1000):
            deleted += await self.redis.delete(key)
        await self.ensure_group()
        return deleted
