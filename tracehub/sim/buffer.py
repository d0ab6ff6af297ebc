"""A producer's Redis state: its seq counter, its epoch and its buffer.

The buffer is the sorted set ``<prefix>producer:<service>`` that the server's worker
reads to fill gaps: score = seq, member = the JSON of the entry exactly as it is
posted in ``batch``. Beside it, ``…:seq`` stores the last seq handed out (INCRBY, so a
restarted producer continues) and ``…:epoch`` the token created with that counter.
Only the producer of a service writes these keys.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Sequence

import orjson
import redis.asyncio as aioredis

from tracehub.protocol import to_ranges
from tracehub.queue import Keys

log = logging.getLogger(__name__)

# Seq formatting happens in Lua with %d, which takes integers up to 2^53 exactly
# (Redis scripts hold numbers as doubles).
MAX_APPEND = 1000
MAX_SCRIPT_RANGE = 2**53

# Create the counter (and a new epoch with it) unless it exists. A counter that is
# missing while its buffer still contains entries starts above them, so no seq is
# handed out twice. KEYS: counter, epoch, buffer. ARGV: a fresh epoch token.
# Returns: last seq handed out, epoch, buffer size, 1 when the counter was created.
_OPEN_LUA = """
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  local floor = 0
  if #top > 0 then floor = tonumber(top[2]) end
  redis.call('SET', KEYS[1], string.format('%d', floor))
  redis.call('SET', KEYS[2], ARGV[1])
  created = 1
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]),
        redis.call('ZCARD', KEYS[3]), created}
"""

# Hand out seqs to entries and buffer them in one step, so a crash can never leave
# a seq handed out but not buffered: a gap that neither producer nor worker fills.
# KEYS: counter, buffer. ARGV: floor, drop limit (0 = none), then the entry bodies
# without their opening '{'. The floor is the highest seq this process has seen,
# and a counter below it (it was lost) is raised to it. With a drop limit, the
# lowest seqs over it are removed. Returns: first seq, buffer size, seqs dropped.
_APPEND_LUA = """
local n = #ARGV - 2
local last = redis.call('INCRBY', KEYS[1], n)
local floor = tonumber(ARGV[1])
if last - n < floor then
  last = floor + n
  redis.call('SET', KEYS[1], string.format('%d', last))
end
local first = last - n + 1
for i = 1, n do
  local seq = first + i - 1
  redis.call('ZADD', KEYS[2], seq, string.format('{"seq":%d,', seq) .. ARGV[i + 2])
end
local size = redis.call('ZCARD', KEYS[2])
local limit = tonumber(ARGV[2])
local dropped = {}
if limit > 0 and size > limit then
  local popped = redis.call('ZPOPMIN', KEYS[2], size - limit)
  for i = 2, #popped, 2 do dropped[#dropped + 1] = popped[i] end
  size = limit
end
return {string.format('%d', first), size, dropped}
"""


def entry_body(fields: dict[str, object]) -> bytes:
    """Return the JSON of an entry without its seq and opening brace."""
    encoded = orjson.dumps(fields)
    if encoded == b"{}":
        raise ValueError("an entry needs at least one field besides seq")
    return encoded[1:]


def member(seq: int, body: bytes) -> bytes:
    """Return the buffered (and posted) JSON of the entry with this seq and body."""
    return b'{"seq":%d,' % seq + body


def seq_of(member_json: bytes) -> int:
    """Return the seq of a buffered member without decoding all of it."""
    head = member_json[: member_json.index(b",")]
    return int(head[len(b'{"seq":') :])


@dataclass
class Opened:
    """A producer's state as found in Redis at start."""

    last_seq: int
    epoch: str
    size: int
    created: bool


@dataclass
class Appended:
    """The outcome of buffering new entries."""

    first_seq: int
    members: list[bytes]
    size: int
    dropped: list[int] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.members) - 1


class ProducerBuffer:
    """The Redis keys of one service's producer, and the operations on them."""

    def __init__(self, client: aioredis.Redis, prefix: str, service: str) -> None:
        self.redis = client
        self.service = service
        self.key = Keys(prefix).producer(service)
        self.counter_key = f"{self.key}:seq"
        self.epoch_key = f"{self.key}:epoch"
        self._open = client.register_script(_OPEN_LUA)
        self._append = client.register_script(_APPEND_LUA)

    async def open(self) -> Opened:
        """Create the counter and epoch unless they exist; return what is stored."""
        fresh_epoch = secrets.token_hex(8)
        last, epoch, size, created = await self._open(
            keys=[self.counter_key, self.epoch_key, self.key], args=[fresh_epoch]
        )
        return Opened(int(last), epoch.decode(), int(size), bool(created))

    async def append(
        self, bodies: Sequence[bytes], floor: int, drop_over: int
    ) -> Appended:
        """Number and buffer up to MAX_APPEND entries; see _APPEND_LUA."""
        if not 0 < len(bodies) <= MAX_APPEND:
            raise ValueError(
                f"append takes 1 to {MAX_APPEND} entries, got {len(bodies)}"
            )
        if floor + len(bodies) >= MAX_SCRIPT_RANGE:
            raise ValueError(
                f"seq {floor + len(bodies)} is beyond 2^53, which the buffer scripts"
                " cannot format"
            )
        first, size, dropped = await self._append(
            keys=[self.counter_key, self.key], args=[floor, drop_over, *bodies]
        )
        first_seq = int(first)
        members = [member(first_seq + i, body) for i, body in enumerate(bodies)]
        return Appended(first_seq, members, int(size), [int(float(s)) for s in dropped])

    async def trim(self, durable_till: int) -> tuple[int, int]:
        """Drop every seq <= durable_till; return how many went and how many stay."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.key, "-inf", durable_till)
            pipe.zcard(self.key)
            removed, size = await pipe.execute()
        return int(removed), int(size)

    async def remove(self, seqs: Sequence[int]) -> int:
        """Drop the given seqs; return the buffer size after."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for start, end in to_ranges(sorted(set(seqs))):
                pipe.zremrangebyscore(self.key, start, end)
            pipe.zcard(self.key)
            *_, size = await pipe.execute()
        return int(size)

    async def read(self, start: int, end: int, limit: int) -> list[bytes]:
        """Return up to limit buffered members with start <= seq <= end, by seq."""
        return await self.redis.zrangebyscore(self.key, start, end, start=0, num=limit)

    async def read_newest(self, start: int, end: int, limit: int) -> list[bytes]:
        """Return up to limit members with start <= seq <= end, newest first."""
        return await self.redis.zrevrangebyscore(
            self.key, end, start, start=0, num=limit
        )

    async def size(self) -> int:
        return int(await self.redis.zcard(self.key))

    async def renumber(self, next_seq: int) -> list[tuple[int, int, bytes]]:
        """Give every buffered entry a new seq from next_seq on, in seq order, and
        raise the counter past them. Returns (old seq, new seq, new member) triples.

        Used after a 409 epoch_conflict: the server has seqs up to next_seq - 1 from
        an earlier counter, so none of the buffered ones can keep its number.
        """
        raw = await self.redis.zrange(self.key, 0, -1)
        moved = []
        for offset, old in enumerate(raw):
            new_seq = next_seq + offset
            moved.append(
                (seq_of(old), new_seq, member(new_seq, old[old.index(b",") + 1 :]))
            )
        counter = int(await self.redis.get(self.counter_key) or 0)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            for start in range(0, len(moved), MAX_APPEND):
                chunk = moved[start : start + MAX_APPEND]
                pipe.zadd(self.key, {m: new for _, new, m in chunk})
            pipe.set(self.counter_key, max(counter, next_seq + len(moved) - 1))
            await pipe.execute()
        log.warning(
            "producer %s renumbered %d buffered entries from seq %d",
            self.service,
            len(moved),
            next_seq,
        )
        return moved
