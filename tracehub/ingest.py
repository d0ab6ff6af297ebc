"""Turning a validated batch into an ACK: the ACK state read-modify-write on Redis.

Each service has two versioned records in Redis. The ACK record (base, high-water
mark, missing ranges, epoch) changes on ingest. The done record (ranges stored in
PostgreSQL or declared lost, and the durable mark) changes when the worker commits.
Both are updated by compare-and-set, so any number of nodes can share them, and an
ingest appends its batch to the stream in the same atomic step as its ACK update.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from tracehub.config import Settings
from tracehub.protocol import AckModel, Batch, Entry, Range, count, durable_mark, expand, merge, subtract, to_ranges
from tracehub.queue import RedisQueue, StreamEntry
from tracehub.storage import Store, format_rows

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 50
SAMPLE_SIZE = 20
SAMPLE_MESSAGE_CHARS = 500


class QueueFull(Exception):
    """The stream is at its configured maximum depth; the batch was not applied."""


class EpochConflict(Exception):
    """A producer with a new epoch restarted its seqs at or below the high-water mark."""

    def __init__(self, service: str, epoch: str, next_seq: int) -> None:
        super().__init__(
            f"service {service!r} changed its epoch to {epoch!r} but sent seqs at or below"
            f" the high-water mark; number the new epoch's logs from {next_seq}"
        )
        self.next_seq = next_seq


class StateContention(Exception):
    """The ACK record kept changing under us; the client should retry."""


@dataclass
class Ack:
    """The response to one ingest request."""

    batch_id: str
    ack_till: int
    missing_ranges: list[Range]
    durable_till: int
    accepted: int
    duplicates: int
    queued_for_replay: int
    rejected: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]

    def to_json(self, missing_cap: int) -> dict[str, Any]:
        total = count(self.missing_ranges)
        return {
            "batchId": self.batch_id,
            "ackTill": self.ack_till,
            "missing": expand(self.missing_ranges, missing_cap),
            "missingRanges": [list(r) for r in self.missing_ranges],
            "missingTotal": total,
            "status": "ok" if total == 0 else "partial",
            "replay": {"queued": self.queued_for_replay},
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "durableTill": self.durable_till,
            "rejected": self.rejected,
            "conflicts": self.conflicts,
        }


def model_from_state(state: dict[str, Any]) -> AckModel:
    return AckModel(
        base=state["base"],
        hwm=state["hwm"],
        missing=[(a, b) for a, b in state["missing"]],
        below=[(a, b) for a, b in state.get("below", [])],
    )


def state_from_model(model: AckModel, epoch: str | None, lost: int) -> dict[str, Any]:
    return {
        "base": model.base,
        "hwm": model.hwm,
        "missing": model.missing,
        "below": model.below,
        "epoch": epoch,
        "lost": lost,
    }


def durable_of(done: dict[str, Any] | None, base: int | None) -> int:
    """Return the durable mark from a done record, or base - 1 when nothing is done."""
    if done is not None:
        return int(done["durable"])
    return (base or 1) - 1


def sample_entries(service: str, entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Return the newest entries of a batch in the shape of a log:new event."""
    return [
        {
            "service": service,
            "seq": e.seq,
            "level": e.level,
            "message": e.message[:SAMPLE_MESSAGE_CHARS],
            "request_id": e.request_id,
            "ts": e.ts.isoformat(),
            "attrs": e.attrs,
        }
        for e in entries[-SAMPLE_SIZE:]
    ]


class Ingestor:
    """Applies batches to ACK state and queues their rows; shared by routes and replays."""

    def __init__(self, queue: RedisQueue, store: Store, settings: Settings) -> None:
        self.queue = queue
        self.store = store
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache: dict[str, tuple[str, dict[str, Any]]] = {}

    def forget_cache(self) -> None:
        """Drop cached ACK records, after they were deleted from Redis."""
        self._cache.clear()

    def _lock(self, service: str) -> asyncio.Lock:
        lock = self._locks.get(service)
        if lock is None:
            lock = self._locks[service] = asyncio.Lock()
        return lock

    async def ingest(self, batch: Batch, received_at: datetime) -> Ack:
        """Apply batch to its service's ACK state, queue its new rows, return the ACK.

        Raises QueueFull, EpochConflict or StateContention; none of them changes state.
        """
        async with self._lock(batch.service):
            for _ in range(MAX_CAS_ATTEMPTS):
                ack = await self._try_ingest(batch, received_at)
                if ack is not None:
                    return ack
                self._cache.pop(batch.service, None)
        raise StateContention(
            f"the ACK state of service {batch.service!r} changed {MAX_CAS_ATTEMPTS} times"
            " during one request; retry the batch"
        )

    async def _try_ingest(self, batch: Batch, received_at: datetime) -> Ack | None:
        service = batch.service
        version, state = await self._load(service, batch)
        epoch, lost_ranges = self._check_epoch(service, batch, state)
        model = model_from_state(state) if state else AckModel()
        if lost_ranges:
            model.missing = []

        seqs = sorted({e.seq for e in batch.entries} | set(batch.settled_seqs))
        result = model.receive(seqs)
        accepted_entries = _entries_in(batch.entries, result.accepted)
        settled = [s for s in batch.settled_seqs if _in(result.accepted, s)]
        lost_total = (state or {}).get("lost", 0) + count(lost_ranges)
        changed = bool(result.accepted) or epoch != (state or {}).get("epoch")
        new_state = state_from_model(model, epoch, lost_total) if changed else None

        batch_id = "ack_" + secrets.token_hex(8)
        entry = None
        if accepted_entries:
            entry = self._stream_entry(service, batch_id, accepted_entries, result, received_at)
        stats = self._stats(service, accepted_entries)
        outcome = await self.queue.commit_ingest(
            service, version, new_state, entry, stats, self.settings.queue_max_depth
        )
        if outcome.status == "CONFLICT":
            return None
        if outcome.status == "BUSY":
            raise QueueFull(f"the queue contains {self.settings.queue_max_depth} batches or more")
        if new_state is not None:
            self._cache[service] = (outcome.version, new_state)
        elif state is not None:
            self._cache[service] = (outcome.version, state)

        durable = durable_of(outcome.done, model.base)
        if settled or lost_ranges:
            durable = await self.mark_done(service, to_ranges(settled) + lost_ranges, lost=count(lost_ranges))
        if lost_ranges:
            await self.store.mark_ranges_lost(service, lost_ranges, "epoch_changed")
            log.warning(
                "service %s changed epoch to %s; %d missing seqs declared lost",
                service, epoch, count(lost_ranges),
            )  # fmt: skip
        return Ack(
            batch_id=batch_id,
            ack_till=model.hwm,
            missing_ranges=model.missing,
            durable_till=durable,
            accepted=len(accepted_entries),
            duplicates=result.duplicates + batch.in_batch_duplicates,
            queued_for_replay=count(result.new_gaps),
            rejected=[r.to_json() for r in batch.rejected],
            conflicts=batch.conflicts,
        )

    def _check_epoch(
        self, service: str, batch: Batch, state: dict[str, Any] | None
    ) -> tuple[str | None, list[Range]]:
        """Return the epoch to store and the missing ranges an epoch change gives up."""
        stored = (state or {}).get("epoch")
        if batch.epoch is None or state is None:
            return batch.epoch or stored, []
        if batch.epoch == stored:
            return stored, []
        # A new epoch, or the first one of a service written without epochs so far:
        # seqs at or below the high-water mark would be taken for duplicates.
        seqs = [e.seq for e in batch.entries] + batch.settled_seqs
        if min(seqs) <= state["hwm"]:
            raise EpochConflict(service, batch.epoch, state["hwm"] + 1)
        if stored is None:
            return batch.epoch, []
        return batch.epoch, [(a, b) for a, b in state["missing"]]

    def _stream_entry(
        self,
        service: str,
        batch_id: str,
        entries: list[Entry],
        result: Any,
        received_at: datetime,
    ) -> StreamEntry:
        return StreamEntry(
            id="",
            service=service,
            rows=format_rows(service, entries, received_at),
            accepted=to_ranges(e.seq for e in entries),
            gaps=result.new_gaps,
            fills=result.filled,
            sample=sample_entries(service, entries),
            batch_id=batch_id,
            received_ms=int(received_at.timestamp() * 1000),
            count=len(entries),
        )

    @staticmethod
    def _stats(service: str, entries: Sequence[Entry]) -> dict[str, int]:
        errors = sum(1 for e in entries if e.level in ("error", "fatal"))
        stats = {"acks": 1, "in": len(entries), f"in:{service}": len(entries)}
        if errors:
            stats[f"err:{service}"] = errors
            stats["err"] = errors
        return stats

    async def _load(self, service: str, batch: Batch) -> tuple[str, dict[str, Any] | None]:
        cached = self._cache.get(service)
        if cached is not None:
            return cached
        record = await self.queue.read_record(self.queue.keys.ack(service))
        if record.state is not None:
            return record.version, record.state
        return record.version, await self._restore(service)

    async def _restore(self, service: str) -> dict[str, Any] | None:
        """Rebuild a service's ACK state from PostgreSQL after Redis lost it.

        Seqs above the durable mark that are not stored come back as missing, so
        producers resend them from their buffers.
        """
        row = await self.store.load_ack_state(service)
        if row is None:
            return None
        base, durable = row["base"], row["durable_till"]
        islands = await self.store.stored_ranges(service, durable)
        done = merge(([(base, durable)] if durable >= base else []) + islands)
        model = AckModel(base=base, hwm=max([durable] + [end for _, end in islands]))
        model.missing = _complement(done, base, model.hwm)
        done_state = {"base": base, "ranges": done, "durable": durable, "lost": row["lost"]}
        await self.queue.cas_record(self.queue.keys.done(service), "", done_state)
        if model.missing:
            await self.store.record_gaps(service, model.missing, "restored")
        log.warning(
            "restored ACK state of service %s from PostgreSQL: base %d, durable %d, %d missing",
            service, base, durable, count(model.missing),
        )  # fmt: skip
        return state_from_model(model, row["epoch"], row["lost"])

    # --- called by the worker --------------------------------------------------------

    async def mark_done(self, service: str, ranges: Sequence[Range], lost: int = 0) -> int:
        """Record ranges as stored (or lost) and return the new durable mark."""
        marks = await self.mark_done_many({service: list(ranges)}, lost={service: lost})
        return marks[service]

    async def mark_done_many(
        self, ranges: dict[str, list[Range]], lost: dict[str, int] | None = None
    ) -> dict[str, int]:
        """Record stored (or lost) ranges of several services and return the new
        durable mark of each. Without concurrent writers this takes two round trips."""
        lost = lost or {}
        pending = dict(ranges)
        marks: dict[str, int] = {}
        for _ in range(MAX_CAS_ATTEMPTS):
            services = sorted(pending)
            records = await self.queue.read_records([self.queue.keys.done(s) for s in services])
            writes = []
            for service, record in zip(services, records):
                done = record.state or await self._new_done(service, pending[service])
                new_done = _add_done(done, pending[service], lost.get(service, 0))
                marks[service] = new_done["durable"]
                writes.append((self.queue.keys.done(service), record.version, new_done))
            written = await self.queue.cas_records(writes)
            pending = {s: pending[s] for s, ok in zip(services, written) if not ok}
            if not pending:
                return marks
        raise StateContention(f"the done records of services {sorted(pending)} kept changing")

    async def _new_done(self, service: str, ranges: Sequence[Range]) -> dict[str, Any]:
        ack = await self.queue.read_record(self.queue.keys.ack(service))
        base = (ack.state or {}).get("base") or min(a for a, _ in ranges)
        return {"base": base, "ranges": [], "durable": base - 1, "lost": 0}

    async def declare_lost(self, service: str, ranges: Sequence[Range]) -> int:
        """Give up on missing ranges: they stop being requested and stop holding back
        the durable mark. Returns the number of seqs declared lost."""
        key = self.queue.keys.ack(service)
        async with self._lock(service):
            for _ in range(MAX_CAS_ATTEMPTS):
                record = await self.queue.read_record(key)
                if record.state is None:
                    return 0
                model = model_from_state(record.state)
                before = count(model.missing)
                for start, end in ranges:
                    model._take_missing(start, end)
                lost = before - count(model.missing)
                state = state_from_model(model, record.state.get("epoch"), record.state.get("lost", 0) + lost)
                if await self.queue.cas_record(key, record.version, state) is not None:
                    self._cache.pop(service, None)
                    break
            else:
                raise StateContention(f"the ACK record of service {service!r} kept changing")
        await self.mark_done(service, ranges, lost=lost)
        return lost

    async def undone_ranges(self, service: str) -> list[Range]:
        """Return the seqs acknowledged as received that are neither stored, lost,
        nor missing: with an empty queue, these were lost on the way to PostgreSQL."""
        ack = await self.queue.read_record(self.queue.keys.ack(service))
        if ack.state is None:
            return []
        done = await self.queue.read_record(self.queue.keys.done(service))
        covered = [(a, b) for a, b in (done.state or {}).get("ranges", [])]
        covered += [(a, b) for a, b in ack.state["missing"]]
        return _complement(merge(covered), ack.state["base"], ack.state["hwm"])

    async def request_again(self, service: str, ranges: Sequence[Range]) -> int:
        """Put ranges back into the missing set, so producers resend them; also drop
        from the missing set whatever is already done. Returns the seqs re-requested."""
        ack_key, done_key = self.queue.keys.ack(service), self.queue.keys.done(service)
        async with self._lock(service):
            for _ in range(MAX_CAS_ATTEMPTS):
                record = await self.queue.read_record(ack_key)
                if record.state is None:
                    return 0
                done = await self.queue.read_record(done_key)
                done_ranges = [(a, b) for a, b in (done.state or {}).get("ranges", [])]
                model = model_from_state(record.state)
                for start, end in done_ranges:
                    model._take_missing(start, end)
                wanted = subtract([(a, min(b, model.hwm)) for a, b in ranges if a <= model.hwm], done_ranges)
                model.missing = merge(model.missing + wanted)
                state = state_from_model(model, record.state.get("epoch"), record.state.get("lost", 0))
                if await self.queue.cas_record(ack_key, record.version, state) is not None:
                    self._cache.pop(service, None)
                    return count(wanted)
        raise StateContention(f"the ACK record of service {service!r} kept changing")

    async def state_of(self, service: str) -> dict[str, Any] | None:
        """Return the public ACK figures of a service, or None when it is unknown."""
        ack = await self.queue.read_record(self.queue.keys.ack(service))
        if ack.state is None:
            return None
        done = await self.queue.read_record(self.queue.keys.done(service))
        state = ack.state
        return {
            "service": service,
            "base": state["base"],
            "ackTill": state["hwm"],
            "durableTill": durable_of(done.state, state["base"]),
            "missingTotal": count(state["missing"]),
            "missingRanges": state["missing"][:100],
            "lost": (done.state or {}).get("lost", 0),
            "epoch": state.get("epoch"),
        }


def _add_done(done: dict[str, Any], ranges: Sequence[Range], lost: int) -> dict[str, Any]:
    merged = merge([(a, b) for a, b in done["ranges"]] + list(ranges))
    return {
        "base": done["base"],
        "ranges": merged,
        "durable": durable_mark(merged, done["base"]),
        "lost": done.get("lost", 0) + lost,
    }


def _entries_in(entries: list[Entry], ranges: Sequence[Range]) -> list[Entry]:
    """Return the entries (sorted by seq) whose seq lies in ranges."""
    if not entries or not ranges:
        return []
    if len(ranges) == 1 and ranges[0][0] <= entries[0].seq and entries[-1].seq <= ranges[0][1]:
        return entries  # the usual case: the whole batch is new
    return [e for e in entries if _in(ranges, e.seq)]


def _in(ranges: Sequence[Range], seq: int) -> bool:
    return any(start <= seq <= end for start, end in ranges)


def _complement(done: Sequence[Range], base: int, hwm: int) -> list[Range]:
    """Return the ranges of [base, hwm] not covered by done."""
    gaps = []
    cursor = base
    for start, end in done:
        if start > cursor:
            gaps.append((cursor, min(start - 1, hwm)))
        cursor = max(cursor, end + 1)
    if cursor <= hwm:
        gaps.append((cursor, hwm))
    return [g for g in gaps if g[0] <= g[1]]
