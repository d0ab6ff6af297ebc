"""The ship loop: read entries into the durable buffer, send them, follow the ACKs.

Two tasks share the buffer. Reading records entries from every reader, a batch
at a time, until the input ends, and goes on while the server is slow or down
(up to ``max_buffered`` entries). Sending posts one batch at a time: seqs the
server listed as missing first, then entries not yet sent in this run. Every
ACK deletes the buffered entries at or below durableTill. With nothing left to
send but entries not yet durable, sending resends the lowest buffered entry every
``poll_interval`` to learn the durable mark, because the worker makes entries
durable some time after they were acknowledged.

A restarted shipper sends its whole buffer again: entries the server already has
count as duplicates, which the server ignores."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

from tracehub.protocol import Range
from tracehub.ship.buffer import PendingEntry, Recorded, ShipBuffer
from tracehub.ship.entries import entry_body
from tracehub.ship.reader import ReadBatch, Reader
from tracehub.ship.sender import (
    Ack,
    BatchTooLarge,
    DeliveryTimeout,
    EpochConflict,
    IngestRejected,
    Sender,
)

log = logging.getLogger(__name__)

MAX_RENUMBERS = 5
MAX_REJECTIONS_LOGGED = 20


class ShipTimeout(Exception):
    """Entries did not become durable within the drain timeout."""


class ShipReadError(Exception):
    """A file could not be read."""


@dataclass(frozen=True, slots=True)
class ShipOptions:
    """Reading and sending settings of a ``tracehub ship`` run, times in seconds."""

    service: str
    follow: bool = False
    batch_size: int = 500
    drain_timeout: float = 60.0
    rate_limit: float = 0.0  # entries read per second; 0 means no limit
    max_buffered: int = 100_000  # reading pauses while the buffer contains this many
    poll_interval: float = 0.25


@dataclass(slots=True)
class ShipStats:
    """Counters of one run, shown by the progress display and the final message."""

    recorded: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    posted: int = 0
    resent: int = 0
    durable_till: int = 0
    buffered: int = 0


class ProgressView:
    """Receives the state of the run after every round; this base shows nothing."""

    def update(self, readers: Sequence[Reader], stats: ShipStats) -> None:
        """Show the bytes read of each reader and the counters."""

    def close(self) -> None:
        """Remove the display."""


class Shipper:
    """Moves entries from readers through the buffer to the server until durable."""

    def __init__(
        self,
        options: ShipOptions,
        readers: Sequence[Reader],
        buffer: ShipBuffer,
        sender: Sender,
        progress: ProgressView | None = None,
    ) -> None:
        self.options = options
        self.readers = list(readers)
        self.buffer = buffer
        self.sender = sender
        self.progress = progress or ProgressView()
        self.stats = ShipStats()
        self.stopped = False
        self._batch_size = options.batch_size
        self._sent_till = 0  # highest seq posted in this run
        self._missing: list[Range] = []
        self._unheld_warned: Range | None = None
        self._dropped_till = 0
        self._renumbers = 0
        self._last_success = time.monotonic()
        self._last_post = 0.0
        self._drain_started: float | None = None
        self._read_allowed_at = 0.0
        self._stopping = asyncio.Event()  # set by stop() to end a read pause
        self._new_entries = asyncio.Event()  # set when reading recorded entries

    def stop(self) -> None:
        """Stop reading; the run ends once the buffered entries are durable."""
        self.stopped = True
        self._stopping.set()
        self._new_entries.set()

    @property
    def all_read(self) -> bool:
        """True when every reader reached the end of its input (never with --follow)."""
        return all(reader.done for reader in self.readers)

    @property
    def input_ended(self) -> bool:
        return self.stopped or self.all_read

    async def run(self) -> ShipStats:
        """Ship until the input ended and every entry is durable.

        Raises ShipTimeout when the drain timeout passes first, IngestRejected when
        the server rejects a request for good, and ShipReadError when a file fails.
        """
        self._count_buffered()
        log.info(
            "shipping service %s (epoch %s) from %d sources;"
            " %d entries buffered from before",
            self.options.service,
            self.sender.epoch,
            len(self.readers),
            self.stats.buffered,
        )
        try:
            await self._loop()
        except DeliveryTimeout as exc:
            raise ShipTimeout(f"{exc}; {self._left_behind()}") from exc
        finally:
            self.progress.update(self.readers, self.stats)
        log.info(
            "shipped %d entries of service %s; durable through seq %d",
            self.stats.recorded,
            self.options.service,
            self.stats.durable_till,
        )
        return self.stats

    async def _loop(self) -> None:
        reading = asyncio.create_task(
            self._read_loop(), name=f"ship-read-{self.options.service}"
        )
        try:
            await self._send_loop(reading)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _read_loop(self) -> None:
        """Record entries into the buffer until the input ends; it runs beside sending,
        so files are read on while the server is slow or down."""
        while not self.input_ended:
            if self._read_round():
                self._new_entries.set()
                self.progress.update(self.readers, self.stats)
                await asyncio.sleep(0)
            else:
                await self._pause(self._read_pause())

    async def _send_loop(self, reading: asyncio.Task[None]) -> None:
        while True:
            failure = reading.exception() if reading.done() else None
            if failure is not None:
                raise failure
            self._new_entries.clear()
            sent = await self._send_round()
            self.progress.update(self.readers, self.stats)
            if self.input_ended and self._drain_started is None:
                self._drain_started = time.monotonic()
            if self.input_ended and self.stats.buffered == 0:
                return
            self._check_deadline()
            if not sent:
                await self._wait(self._new_entries, self.options.poll_interval)

    # --- reading ---------------------------------------------------------------------

    def _read_round(self) -> bool:
        """Record up to a batch of entries from each reader; return whether any came."""
        now = time.monotonic()
        room = self.options.max_buffered - self.stats.buffered
        if self.stopped or now < self._read_allowed_at or room <= 0:
            return False
        count = 0
        for reader in self.readers:
            if reader.done:
                continue
            batch = self._poll(reader, min(self._batch_size, room))
            if batch.entries:
                self._record(reader, batch)
                count += len(batch.entries)
        if self.options.rate_limit > 0:
            self._read_allowed_at = (
                max(now, self._read_allowed_at) + count / self.options.rate_limit
            )
        return count > 0

    def _poll(self, reader: Reader, max_entries: int) -> ReadBatch:
        try:
            return reader.poll(max_entries)
        except OSError as exc:
            if not self.options.follow:
                raise ShipReadError(f"reading {reader.label} failed: {exc}") from exc
            log.error("reading %s failed: %s; trying again", reader.label, exc)
            return ReadBatch([], None)

    def _record(self, reader: Reader, batch: ReadBatch) -> None:
        now = datetime.now(timezone.utc)
        recorded = [
            Recorded(
                orjson.dumps(entry_body(entry, reader.label, now)).decode(), entry.end
            )
            for entry in batch.entries
        ]
        first = self.buffer.record(reader.key, recorded, batch.position)
        last = first + len(recorded) - 1
        stats = self.stats
        stats.recorded += len(recorded)
        stats.buffered += len(recorded)
        stats.first_seq = first if stats.first_seq is None else stats.first_seq
        stats.last_seq = last
        log.debug(
            "recorded seqs %d..%d from %s",
            first,
            last,
            reader.label or "standard input",
        )

    # --- sending ---------------------------------------------------------------------

    async def _send_round(self) -> bool:
        """Post one batch, or a probe when all is sent; return whether a batch went."""
        entries = self._next_batch()
        if entries:
            await self._post(entries)
            return True
        probe_due = time.monotonic() - self._last_post >= self.options.poll_interval
        if self.stats.buffered and probe_due:
            await self._post(self.buffer.entries_after(0, 1))
        return False

    def _next_batch(self) -> list[PendingEntry]:
        if self._missing:
            ranges, self._missing = self._missing, []
            entries = self.buffer.entries_in(ranges, self._batch_size)
            if not entries:
                self._warn_unheld(ranges)
            else:
                self.stats.resent += len(entries)
                log.info(
                    "resending %d entries of service %s that the server reported"
                    " missing",
                    len(entries),
                    self.options.service,
                )
                return entries
        return self.buffer.entries_after(self._sent_till, self._batch_size)

    def _warn_unheld(self, ranges: list[Range]) -> None:
        """Log once that the server waits for seqs this buffer no longer holds."""
        if ranges[0] == self._unheld_warned:
            return
        self._unheld_warned = ranges[0]
        log.warning(
            "the server reports seqs %d..%d of service %s missing, but the buffer"
            " does not contain them; the server declares them lost after its gap"
            " deadline",
            ranges[0][0],
            ranges[-1][1],
            self.options.service,
        )

    async def _post(self, entries: list[PendingEntry]) -> None:
        self._last_post = time.monotonic()
        try:
            ack = await self.sender.send(entries, self._deadline)
        except EpochConflict as exc:
            self._renumber(exc)
            return
        except BatchTooLarge as exc:
            self._split_batches(len(entries), exc)
            return
        self._last_success = time.monotonic()
        self.stats.posted += len(entries)
        self._sent_till = max(self._sent_till, entries[-1][0])
        self._apply(ack, entries)

    def _apply(self, ack: Ack, entries: Sequence[PendingEntry]) -> None:
        """Follow an ACK: drop what is durable, remember what to resend."""
        if ack.durable_till > self._dropped_till:
            self.buffer.drop_through(ack.durable_till)
            self._dropped_till = ack.durable_till
            self._count_buffered()
        self.stats.durable_till = max(self.stats.durable_till, ack.durable_till)
        self._missing = [
            (a, min(b, self._sent_till))
            for a, b in ack.missing_ranges
            if a <= self._sent_till
        ]
        self._log_rejections(ack)
        log.debug(
            "posted seqs %d..%d of service %s: accepted %d, duplicates %d, ackTill %d,"
            " durableTill %d, %d missing ranges",
            entries[0][0],
            entries[-1][0],
            self.options.service,
            ack.accepted,
            ack.duplicates,
            ack.ack_till,
            ack.durable_till,
            len(ack.missing_ranges),
        )

    def _log_rejections(self, ack: Ack) -> None:
        for rejection in ack.rejected[:MAX_REJECTIONS_LOGGED]:
            log.warning(
                "the server rejected seq %s of service %s (field %s): %s",
                rejection.get("seq"),
                self.options.service,
                rejection.get("field"),
                rejection.get("reason"),
            )
        if len(ack.rejected) > MAX_REJECTIONS_LOGGED:
            log.warning(
                "... and %d more rejected entries",
                len(ack.rejected) - MAX_REJECTIONS_LOGGED,
            )

    def _renumber(self, conflict: EpochConflict) -> None:
        """Move the buffered seqs above those the server stores under another epoch."""
        self._renumbers += 1
        if self._renumbers > MAX_RENUMBERS:
            raise IngestRejected(
                f"the server rejected epoch {self.sender.epoch} of service"
                f" {self.options.service} {MAX_RENUMBERS} times: {conflict}; is another"
                " producer shipping to this service?"
            )
        shift = self.buffer.renumber(conflict.next_seq)
        log.warning(
            "service %s already stores seqs up to %d under another epoch;"
            " renumbered the buffered entries by %d to start at seq %d",
            self.options.service,
            conflict.next_seq - 1,
            shift,
            conflict.next_seq,
        )
        self._sent_till = 0
        self._missing = []
        self._dropped_till = 0
        if self.stats.first_seq is not None and self.stats.last_seq is not None:
            self.stats.first_seq += shift
            self.stats.last_seq += shift

    def _split_batches(self, size: int, error: BatchTooLarge) -> None:
        if size <= 1:
            raise IngestRejected(
                f"the server rejects even a single entry as too large: {error}"
            )
        self._batch_size = max(1, size // 2)
        log.warning(
            "the server rejected a batch of %d entries as too large;"
            " sending %d at a time",
            size,
            self._batch_size,
        )

    # --- waiting and limits ----------------------------------------------------------

    def _deadline(self) -> float | None:
        """Return when to give up: drain_timeout after the input ended or, without
        --follow, after the last successful request."""
        limits = []
        if self._drain_started is not None:
            limits.append(self._drain_started + self.options.drain_timeout)
        if not self.options.follow:
            limits.append(self._last_success + self.options.drain_timeout)
        return min(limits, default=None)

    def _check_deadline(self) -> None:
        deadline = self._deadline()
        if deadline is None or time.monotonic() < deadline:
            return
        if self._drain_started is not None:
            reason = (
                f"timed out after {self.options.drain_timeout:g} s"
                " waiting for entries to become durable"
            )
        else:
            reason = f"no ingest request succeeded for {self.options.drain_timeout:g} s"
        raise ShipTimeout(f"{reason}; {self._left_behind()}")

    def _left_behind(self) -> str:
        count, low, high = self.buffer.pending()
        if count == 0:
            return "no entries are waiting in the buffer"
        return (
            f"{count} entries (seqs {low}..{high}) are not durable yet (the server's"
            f" durable mark is seq {self.stats.durable_till}); they stay in"
            f" {self.buffer.path} and the next run sends them again"
        )

    def _count_buffered(self) -> None:
        self.stats.buffered = self.buffer.pending()[0]

    def _read_pause(self) -> float:
        """Return how long reading waits for the rate limit, at most a poll interval."""
        waiting_for_rate = self._read_allowed_at - time.monotonic()
        return min(self.options.poll_interval, max(0.001, waiting_for_rate))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stop() is called."""
        await self._wait(self._stopping, seconds)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
