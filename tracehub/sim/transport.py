"""POST /ingest for a producer, retried as the ingest protocol requires.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and
jitter, waiting at least the delay of a Retry-After header. A 409 epoch_conflict
and every other 4xx go back to the caller, which decides what to do with the batch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import orjson

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0
RETRY_AFTER_CAP_S = 60.0
JSON_HEADERS = {"Content-Type": "application/json"}

T = TypeVar("T")


class EpochConflict(Exception):
    """The server has seqs of an earlier counter, so renumber from next_seq."""

    def __init__(self, next_seq: int, message: str) -> None:
        super().__init__(message)
        self.next_seq = next_seq


class BatchRejected(Exception):
    """The server rejected the whole batch with a 4xx that a retry cannot fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"POST /ingest failed with {status} {code}: {message}")
        self.status = status
        self.code = code


class DeliveryAborted(Exception):
    """The producer stopped while a batch was still in flight or being retried."""


@dataclass
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of
    min(cap, base * 2^n), and never less than a Retry-After the server sent."""

    rng: random.Random
    base_s: float = BACKOFF_BASE_S
    cap_s: float = BACKOFF_CAP_S

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        delay = ceiling * self.rng.uniform(0.5, 1.0)
        if retry_after_s is not None:
            delay = max(
                delay, retry_after_s + self.rng.uniform(0, 0.1 * retry_after_s + 0.05)
            )
        return delay


def retry_after_s(value: str | None) -> float | None:
    """Return the delay of a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error.get("code")), str(error.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "http_error", response.text[:200]


async def _unless_aborted(work: Awaitable[T], abort: asyncio.Event) -> T:
    """Await work; cancel it and raise DeliveryAborted if abort is set first."""
    task = asyncio.ensure_future(work)
    aborted = asyncio.ensure_future(abort.wait())
    done, _ = await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
    aborted.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise DeliveryAborted(
        "gave up on a request in flight because the producer is stopping"
    )


async def _wait_or_abort(abort: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(abort.wait(), timeout=seconds)
    except TimeoutError:
        return
    raise DeliveryAborted("gave up retrying because the producer is stopping")


async def post_batch(
    client: httpx.AsyncClient,
    service: str,
    body: bytes,
    *,
    backoff: Backoff,
    abort: asyncio.Event,
    on_retry: Callable[[str, str], None],
) -> dict[str, Any]:
    """Post one batch until the server returns 200, and return the ACK. on_retry
    gets the kind of each failure (e.g. "429 queue_full", "ConnectError") and its
    message.

    Raises EpochConflict, BatchRejected, or DeliveryAborted once abort is set.
    """
    attempt = 0
    while True:
        if abort.is_set():
            raise DeliveryAborted("the producer stopped before the batch was delivered")
        try:
            ack = await _unless_aborted(_post_once(client, body), abort)
        except _Retryable as exc:
            delay = backoff.delay(attempt, exc.retry_after_s)
            log.warning(
                "producer %s: POST /ingest failed (%s); retry %d in %.2fs",
                service,
                exc,
                attempt + 1,
                delay,
            )
            on_retry(exc.kind, str(exc))
            attempt += 1
            await _wait_or_abort(abort, delay)
            continue
        if attempt:
            log.info("producer %s delivered a batch after %d retries", service, attempt)
        return ack


class _Retryable(Exception):
    def __init__(
        self, kind: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after


async def _post_once(client: httpx.AsyncClient, body: bytes) -> dict[str, Any]:
    """Post once and return the ACK.

    Raises _Retryable, EpochConflict or BatchRejected.
    """
    try:
        response = await client.post("/ingest", content=body, headers=JSON_HEADERS)
    except httpx.TransportError as exc:
        kind = type(exc).__name__
        raise _Retryable(kind, f"{kind}: {exc}" if str(exc) else kind) from exc
    status = response.status_code
    if status == 200:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise _Retryable(
                "invalid_ack", "200 with a body that is not JSON"
            ) from None
    code, message = _error_of(response)
    if status == 429 or status >= 500:
        kind = f"{status} {code}"
        raise _Retryable(
            kind,
            f"{kind}: {message}",
            retry_after_s(response.headers.get("Retry-After")),
        )
    if status == 409 and code == "epoch_conflict":
        try:
            next_seq = int(response.json()["nextSeq"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BatchRejected(status, code, f"{message} (no usable nextSeq)") from exc
        raise EpochConflict(next_seq, message)
    raise BatchRejected(status, code, message)
