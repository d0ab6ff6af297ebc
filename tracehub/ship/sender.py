"""Posting batches to POST /ingest, retrying what a retry can fix.

Connection errors, 429 and 5xx are retried with exponential backoff and jitter,
waiting at least as long as a Retry-After header requests. A 409 epoch conflict and a
413 come back as their own exceptions for the shipper to act on. Any other error
means the shipper built a request the server rejects, so it raises IngestRejected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import orjson

from tracehub.ship.buffer import PendingEntry

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
REQUEST_TIMEOUT_S = 30.0

Deadline = Callable[[], float | None]  # the time.monotonic() to give up at, or None


class IngestRejected(Exception):
    """The server rejected a request in a way that resending cannot fix."""


class DeliveryTimeout(Exception):
    """The server could not be reached, or kept failing, until the deadline passed."""


class BatchTooLarge(Exception):
    """The server responded with 413, so the batch must be split."""


class EpochConflict(Exception):
    """The server responded with 409, so this epoch's seqs must start at next_seq."""

    def __init__(self, message: str, next_seq: int) -> None:
        super().__init__(message)
        self.next_seq = next_seq


@dataclass(frozen=True, slots=True)
class Ack:
    """The fields of an ingest response that the shipper acts on."""

    ack_till: int
    durable_till: int
    missing_ranges: list[tuple[int, int]]
    rejected: list[dict[str, Any]]
    accepted: int
    duplicates: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Ack:
        return cls(
            ack_till=int(body["ackTill"]),
            durable_till=int(body["durableTill"]),
            missing_ranges=[(int(a), int(b)) for a, b in body.get("missingRanges", [])],
            rejected=list(body.get("rejected", [])),
            accepted=int(body.get("accepted", 0)),
            duplicates=int(body.get("duplicates", 0)),
        )


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed attempt that a retry may fix, and the Retry-After the server sent."""

    reason: str
    retry_after: float = 0.0


def backoff_delay(attempt: int, retry_after: float = 0.0) -> float:
    """Return the wait before retry number attempt (from 1), with equal jitter."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
    return max(retry_after, ceiling / 2 + random.uniform(0, ceiling / 2))


def request_body(service: str, epoch: str, entries: Sequence[PendingEntry]) -> bytes:
    """Return the JSON body of an ingest request for buffered entries."""
    # Each stored body is a JSON object without "seq", so the seq is spliced in front
    # of its first key instead of decoding and encoding every entry again.
    items = b",".join(
        b'{"seq":%d,%s' % (seq, body[1:].encode()) for seq, body in entries
    )
    head = orjson.dumps({"service": service, "epoch": epoch})[:-1]
    return head + b',"batch":[' + items + b"]}"


class Sender:
    """Posts batches of one service and epoch to a TraceHub server."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, service: str, epoch: str
    ) -> None:
        self.client = client
        self.url = f"{url}/ingest"
        self.service = service
        self.epoch = epoch
        self.failures = 0  # consecutive failed attempts, for logging the recovery

    async def send(self, entries: Sequence[PendingEntry], deadline: Deadline) -> Ack:
        """Post entries until the server takes them; raises at the deadline."""
        body = request_body(self.service, self.epoch, entries)
        seqs = f"{entries[0][0]}..{entries[-1][0]}"
        attempt = 0
        while True:
            outcome = await self._attempt(body, seqs)
            if isinstance(outcome, Ack):
                return outcome
            attempt += 1
            self.failures += 1
            delay = backoff_delay(attempt, outcome.retry_after)
            limit = deadline()
            if limit is not None and time.monotonic() + delay > limit:
                raise DeliveryTimeout(
                    f"POST {self.url} kept failing, last with {outcome.reason}"
                )
            log.warning(
                "POST /ingest of service %s seqs %s failed with %s; retry %d in %.2f s",
                self.service,
                seqs,
                outcome.reason,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(self, body: bytes, seqs: str) -> Ack | _Failure:
        """Post once and return the ACK, or the failure that a retry may fix."""
        try:
            response = await self.client.post(
                self.url,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=REQUEST_TIMEOUT_S,
            )
        except httpx.TransportError as exc:
            return _Failure(f"a connection error ({type(exc).__name__}: {exc})")
        status = response.status_code
        if status == 200:
            if self.failures:
                log.info(
                    "POST /ingest of service %s works again after %d failures",
                    self.service,
                    self.failures,
                )
                self.failures = 0
            return _parse_ack(response)
        message = _error_message(response)
        if status == 429 or status >= 500:
            return _Failure(f"HTTP {status} ({message})", _retry_after(response))
        if status == 409:
            raise EpochConflict(message, int(response.json().get("nextSeq", 0)))
        if status == 413:
            raise BatchTooLarge(message)
        raise IngestRejected(
            f"POST /ingest of seqs {seqs} failed with HTTP {status}: {message}"
        )


def _parse_ack(response: httpx.Response) -> Ack:
    try:
        return Ack.from_json(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        raise IngestRejected(
            f"the 200 response to POST /ingest is not an ACK ({exc!r}): "
            f"{response.text[:200]}; is --url a TraceHub server?"
        ) from exc


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0
