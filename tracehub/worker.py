"""The worker: moves queued batches from the Redis stream into PostgreSQL.

A round takes four steps, in an order chosen so that a crash between any two of
them loses nothing and stores nothing twice. The worker reads entries (they become
pending in the consumer group) and commits their rows in one transaction with
``ON CONFLICT (service, seq) DO NOTHING``. It then records the stored ranges in
the done records, and only then acknowledges and deletes the entries. An entry read but never acknowledged is claimed again by a live worker
after ``claim_idle_ms``, and its second insert is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson
from redis.exceptions import RedisError

from tracehub.config import Settings
from tracehub.ingest import Ingestor
from tracehub.protocol import RequestError, count, parse_batch, subtract
from tracehub.queue import RedisQueue, StreamEntry
from tracehub.storage import Store, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
CLAIM_EVERY_S = 5.0
HEARTBEAT_EVERY_S = 2.0
REPLAY_SCAN_EVERY_S = 0.5
ACK_STATE_SAVE_EVERY_S = 1.0
RETRY_BASE_DELAY_S = 1.0
STALL_SCAN_EVERY_S = 1.0


class WorkerCrash(Exception):
    """Raised on purpose by the crash-worker fault, in the middle of a round."""


class Worker:
    """One consumer of the log stream, plus the replay scanner and retry loop."""

    def __init__(
        self,
        queue: RedisQueue,
        store: Store,
        ingestor: Ingestor,
        settings: Settings,
        name: str | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.ingestor = ingestor
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.started_at = time.time()
        self.batches = 0
        self.rows = 0
        self.last_batch_at: float | None = None
        self.state = "starting"
        self.crash_requested = False
        self._dirty_services: set[str] = set()
        self._suspects: dict[str, list[tuple[tuple[int, int], int]]] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until stop is set; side loops run beside the consumer."""
        log.info("worker %s starting", self.name)
        await self._retrying("create consumer group", self.queue.ensure_group, stop)
        side = [
            asyncio.create_task(self._loop(self.scan_replays, REPLAY_SCAN_EVERY_S, stop), name="replay-scan"),
            asyncio.create_task(self._loop(self.heartbeat, HEARTBEAT_EVERY_S, stop), name="heartbeat"),
            asyncio.create_task(self._loop(self.retry_due, 1.0, stop), name="retry"),
            asyncio.create_task(self._loop(self.save_ack_state, ACK_STATE_SAVE_EVERY_S, stop), name="ack-save"),
            asyncio.create_task(self._loop(self.find_lost_in_queue, STALL_SCAN_EVERY_S, stop), name="stall-scan"),
        ]
        self.state = "running"
        try:
            await self._consume(stop)
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            self.state = "stopped"
            try:
                await self.save_ack_state()
                await self.queue.forget_worker(self.name)
            except (RedisError, OSError, StorageError) as exc:
                log.warning("worker %s could not clean up on stop: %s", self.name, exc)
            log.info("worker %s stopped after %d batches, %d rows", self.name, self.batches, self.rows)

    async def _consume(self, stop: asyncio.Event) -> None:
        next_claim = 0.0
        backoff = BACKOFF_START_S
        own_pending = True
        while not stop.is_set():
            try:
                if own_pending:
                    entries = await self.queue.read(self.name, self.settings.worker_batch, 0, own_pending=True)
                    own_pending = bool(entries)
                    if entries:
                        log.info("worker %s resumes %d entries it held before", self.name, len(entries))
                        await self.process(entries)
                    continue
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_EVERY_S
                    stale = await self.queue.claim_stale(self.name, self.settings.claim_idle_ms, 100)
                    if stale:
                        log.warning("worker %s claimed %d stale entries", self.name, len(stale))
                        await self.process(stale)
                entries = await self.queue.read(
                    self.name, self.settings.worker_batch, self.settings.worker_block_ms
                )
                if entries:
                    await self.process(entries, fresh=True)
                backoff = BACKOFF_START_S
            except (RedisError, OSError, StorageUnavailable) as exc:
                log.warning("worker %s: %s; retrying in %.1fs", self.name, exc, backoff)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _loop(self, step: Any, every_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, StorageError) as exc:
                log.warning("worker %s: %s failed: %s", self.name, step.__name__, exc)
            except Exception:
                log.exception("worker %s: %s failed", self.name, step.__name__)
            await _wait(stop, every_s)

    async def _retrying(self, what: str, step: Any, stop: asyncio.Event) -> None:
        backoff = BACKOFF_START_S
        while not stop.is_set():
            try:
                await step()
                return
            except (RedisError, OSError) as exc:
                log.warning("worker %s: %s failed: %s; retrying in %.1fs", self.name, what, exc, backoff)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    # --- one round -------------------------------------------------------------------

    async def process(self, entries: Sequence[StreamEntry], *, fresh: bool = False) -> None:
        """Store entries, record them as done, then acknowledge them.

        With fresh, the entries are read for the first time, so their rows are most
        likely not stored yet. Raises StorageUnavailable with every entry still
        pending, so the caller can retry the same round later.
        """
        started = time.perf_counter()
        rows = b"".join(e.rows for e in entries)
        gaps = [(e.service, a, b) for e in entries for a, b in e.gaps]
        replay_services = sorted({e.service for e in entries if e.fills or e.gaps})
        try:
            inserted, completed = await self.store.write_batch(rows, gaps, replay_services, fresh=fresh)
        except StorageUnavailable:
            raise
        except StorageError as exc:
            log.error("worker %s: batch of %d entries rejected (%s); storing them one by one",
                      self.name, len(entries), exc)  # fmt: skip
            await self._process_separately(entries)
            return
        if self.crash_requested:
            self.crash_requested = False
            raise WorkerCrash(f"worker {self.name} crashed on purpose holding {len(entries)} entries")
        await self._finish(entries, completed)
        self.batches += 1
        self.rows += inserted
        self.last_batch_at = time.time()
        log.debug(
            "worker %s stored %d rows of %d entries in %.1f ms",
            self.name, inserted, len(entries), (time.perf_counter() - started) * 1000,
        )  # fmt: skip

    async def _finish(self, entries: Sequence[StreamEntry], completed: Sequence[Any]) -> None:
        ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for e in entries:
            ranges[e.service].extend(e.accepted)
        await self.ingestor.mark_done_many(ranges)
        self._dirty_services.update(ranges)
        await self.queue.acknowledge([e.id for e in entries])
        committed = sum(e.count for e in entries)
        await self.queue.add_stats({"committed": committed})
        await self._publish(entries, completed)

    async def _publish(self, entries: Sequence[StreamEntry], completed: Sequence[Any]) -> None:
        sample = [log_event for e in entries for log_event in e.sample]
        if sample:
            await self.queue.publish("log:batch", {"logs": sample, "total": sum(e.count for e in entries)})
        for replay in completed:
            await self.queue.publish(
                "replay:completed",
                {"id": replay.id, "service": replay.service, "fromSeq": replay.from_seq,
                 "toSeq": replay.to_seq, "count": replay.to_seq - replay.from_seq + 1,
                 "latencyMs": round(replay.latency_ms, 1)},
            )  # fmt: skip

    async def _process_separately(self, entries: Sequence[StreamEntry]) -> None:
        """Store each entry alone; an entry that still fails goes to the retry queue."""
        for entry in entries:
            try:
                await self.store.write_batch(entry.rows, [(entry.service, a, b) for a, b in entry.gaps], [entry.service])
            except StorageUnavailable:
                raise
            except StorageError as exc:
                await self._defer(entry, None, str(exc))
                continue
            await self._finish([entry], [])

    async def _defer(self, entry: StreamEntry, member: bytes | None, reason: str) -> None:
        if entry.attempts + 1 >= self.settings.retry_max_attempts:
            log.error("worker %s: entry %s of service %s dead after %d attempts: %s",
                      self.name, entry.id, entry.service, entry.attempts + 1, reason)  # fmt: skip
            await self.queue.bury(member, entry, reason)
            if member is None:
                await self.queue.acknowledge([entry.id])
            return
        delay = RETRY_BASE_DELAY_S * 2**entry.attempts
        log.warning("worker %s: entry %s of service %s failed (%s); retry %d in %.1fs",
                    self.name, entry.id, entry.service, reason, entry.attempts + 1, delay)  # fmt: skip
        if member is not None:
            await self.queue.drop_retry(member)
        await self.queue.push_retry(entry, delay)

    async def retry_due(self) -> None:
        """Try again the entries of the retry queue whose delay has passed."""
        for member, entry in await self.queue.due_retries(20):
            try:
                await self.store.write_batch(entry.rows, [(entry.service, a, b) for a, b in entry.gaps], [entry.service])
            except StorageUnavailable:
                return
            except StorageError as exc:
                await self._defer(entry, member, str(exc))
                continue
            await self.queue.drop_retry(member)
            await self._finish_retry(entry)

    async def _finish_retry(self, entry: StreamEntry) -> None:
        await self.ingestor.mark_done(entry.service, entry.accepted)
        self._dirty_services.add(entry.service)

    # --- side loops ------------------------------------------------------------------

    async def heartbeat(self) -> None:
        await self.queue.heartbeat(
            self.name,
            {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
             "state": self.state, "at": time.time(), "startedAt": self.started_at,
             "batches": self.batches, "rows": self.rows, "lastBatchAt": self.last_batch_at},
        )  # fmt: skip

    async def save_ack_state(self) -> None:
        """Copy the ACK figures of recently changed services into PostgreSQL."""
        services, self._dirty_services = self._dirty_services, set()
        states = []
        for service in services:
            figures = await self.ingestor.state_of(service)
            if figures is not None:
                states.append(
                    {"service": service, "base": figures["base"], "ack_till": figures["ackTill"],
                     "durable_till": figures["durableTill"], "lost": figures["lost"],
                     "epoch": figures["epoch"]}
                )  # fmt: skip
        if states:
            await self.store.save_ack_state(states)

    async def find_lost_in_queue(self) -> None:
        """Re-request seqs that were acknowledged but never reached PostgreSQL.

        An ACK and the stream entry of its batch are written in one atomic step, so
        a seq seen acknowledged but not done at time t was queued at or before t.
        Once every batch queued up to t has left the stream and the retry queue, the
        seq must be stored, lost or missing. A seq in none of these states (after a
        flushed queue or a lost Redis write) goes back into the missing set and producers
        resend it from their buffers. This works under steady traffic, when the
        queue is never empty.
        """
        # The order of the reads matters: the queue age first, then the ACK records,
        # so a batch finished in between has its seqs marked done before we look.
        scan_ms = await self.queue.server_time_ms()
        oldest_ms = await self.queue.oldest_queued_ms()
        suspects: dict[str, list[tuple[tuple[int, int], int]]] = {}
        for service in await self.queue.known_services():
            undone = await self.ingestor.undone_ranges(service)
            aged = age_ranges(undone, self._suspects.get(service, []), await self.queue.server_time_ms())
            lost = [r for r, seen_ms in aged if seen_ms < scan_ms and (oldest_ms is None or oldest_ms > seen_ms)]
            if lost:
                requested = await self.ingestor.request_again(service, lost)
                await self.store.record_gaps(service, lost, "requeued")
                log.warning("service %s: %d acknowledged seqs never reached PostgreSQL; requested again: %s",
                            service, requested, lost[:10])  # fmt: skip
            waiting = [(r, seen_ms) for r, seen_ms in aged if r not in lost]
            if waiting:
                suspects[service] = waiting
        self._suspects = suspects

    async def scan_replays(self) -> None:
        """Fill pending replays from producer buffers, complete them, expire old ones."""
        pending = await self.store.pending_replays()
        if not pending:
            return
        now = datetime.now(timezone.utc)
        expired = [r for r in pending if (now - r["created_at"]).total_seconds() > self.settings.gap_deadline_s]
        for replay in expired:
            lost = await self.ingestor.declare_lost(replay["service"], [(replay["from_seq"], replay["to_seq"])])
            log.warning("replay %d of service %s (%d..%d) expired; %d seqs declared lost",
                        replay["id"], replay["service"], replay["from_seq"], replay["to_seq"], lost)  # fmt: skip
            self._dirty_services.add(replay["service"])
        if expired:
            await self.store.mark_replays_lost([r["id"] for r in expired], "deadline")
        live = [r for r in pending if r not in expired]
        for replay in live:
            await self._fill_from_buffer(replay)
        completed = await self.store.recount_replays(sorted({r["service"] for r in live}))
        await self._publish([], completed)

    async def _fill_from_buffer(self, replay: dict[str, Any]) -> None:
        raw = await self.queue.producer_entries(
            replay["service"], replay["from_seq"], replay["to_seq"], self.settings.max_batch_entries
        )
        if not raw:
            return
        items = []
        for member in raw:
            try:
                items.append(orjson.loads(member))
            except orjson.JSONDecodeError:
                log.warning("producer buffer of %s contains an entry that is not valid JSON", replay["service"])
        if not items:
            return
        s = self.settings
        try:
            batch = parse_batch(
                {"service": replay["service"], "batch": items},
                now=datetime.now(timezone.utc), max_entries=s.max_batch_entries,
                max_message_bytes=s.max_message_bytes, max_attrs_bytes=s.max_attrs_bytes,
                max_attrs_depth=s.max_attrs_depth, dumps=orjson.dumps,
            )  # fmt: skip
        except RequestError as exc:
            log.warning("replay %d: producer buffer entries invalid: %s", replay["id"], exc)
            return
        ack = await self.ingestor.ingest(batch, datetime.now(timezone.utc))
        await self.store.bump_replay_attempts([replay["id"]])
        log.info("replay %d of service %s: %d entries taken from the producer buffer",
                 replay["id"], replay["service"], ack.accepted)  # fmt: skip


def age_ranges(
    ranges: Sequence[tuple[int, int]], seen: Sequence[tuple[tuple[int, int], int]], now_ms: int
) -> list[tuple[tuple[int, int], int]]:
    """Pair each range with the time it was first seen: parts of it seen in an
    earlier scan keep their time, the rest is new as of now_ms."""
    aged = []
    for start, end in ranges:
        rest = [(start, end)]
        for (s_start, s_end), seen_ms in seen:
            low, high = max(start, s_start), min(end, s_end)
            if low <= high:
                aged.append(((low, high), seen_ms))
                rest = subtract(rest, [(low, high)])
        aged += [(piece, now_ms) for piece in rest]
    return sorted(aged)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def supervise(worker_factory: Any, faults: Any, queue: RedisQueue, stop: asyncio.Event) -> None:
    """Run a worker until stop is set, crashing and reviving it while the
    crash-worker fault is active. The revived worker keeps its consumer name, so
    it resumes the entries it held when it crashed."""
    name = None
    while not stop.is_set():
        worker: Worker = worker_factory(name)
        name = worker.name
        task = asyncio.create_task(worker.run(stop), name=f"worker-{name}")
        crashed = await _watch_for_crash(worker, task, faults, stop)
        if not crashed:
            return
        log.warning("worker %s crashed (fault injected); down for %.1fs", name, faults.remaining_s("crash-worker"))
        await _publish_quietly(queue, "worker:crashed", {"worker": name, "at": time.time(),
                                                          "until": time.time() + faults.remaining_s("crash-worker")})
        while faults.is_active("crash-worker") and not stop.is_set():
            await _refresh_quietly(faults)
            await _wait(stop, 0.25)
        if stop.is_set():
            return
        log.info("worker %s recovered", name)
        await _publish_quietly(queue, "worker:recovered", {"worker": name, "at": time.time()})


async def _watch_for_crash(worker: Worker, task: asyncio.Task[None], faults: Any, stop: asyncio.Event) -> bool:
    """Wait for the worker task to end; return True when it ended by the crash fault."""
    crash_deadline: float | None = None
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            try:
                task.result()
            except WorkerCrash as exc:
                log.warning("%s", exc)
                return True
            return False
        await _refresh_quietly(faults)
        if faults.is_active("crash-worker") and crash_deadline is None:
            worker.crash_requested = True
            crash_deadline = time.monotonic() + 0.5
        if crash_deadline is not None and time.monotonic() > crash_deadline:
            task.cancel()  # idle: no round to crash in, so the worker dies where it waits
            await asyncio.gather(task, return_exceptions=True)
            return not stop.is_set()


async def _refresh_quietly(faults: Any) -> None:
    try:
        await faults.refresh()
    except (RedisError, OSError) as exc:
        log.debug("fault refresh failed: %s", exc)


async def _publish_quietly(queue: RedisQueue, event: str, data: Any) -> None:
    try:
        await queue.publish(event, data)
    except (RedisError, OSError) as exc:
        log.warning("could not publish %s: %s", event, exc)
