"""Gap repair: from sending the batch that fills a gap to the ``replay:completed``
Socket.IO event for it, on an otherwise idle node with one worker.

Each sample uses a service of its own: seqs 1-100 and 201-300 open the gap
101-200; once the worker has recorded it as a pending replay (GET /logs/replay),
the clock starts and 101-200 is sent.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import aiohttp
import socketio

from benchmarks.harness import Bench, get_json, running_tracehub, wait_until
from benchmarks.loadgen import Corpus, make_body
from benchmarks.results import Figure, Target, percentile

log = logging.getLogger(__name__)

SECTION = "5 gap repair"
TARGET_P99_MS = 1000.0
GAP_RECORDED_TIMEOUT_S = 15.0
COMPLETED_TIMEOUT_S = 15.0
JSON_HEADERS = {"Content-Type": "application/json"}


class CompletedEvents:
    """Socket.IO client that notes when replay:completed arrives for each service."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.client.on("replay:completed", self._on_completed)

    async def _on_completed(self, data: dict[str, Any]) -> None:
        future = self.waiting.get(data.get("service", ""))
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    def expect(self, service: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[service] = future
        return future


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(
        f"{url}/ingest", data=body, headers=JSON_HEADERS
    ) as response:
        answer = await response.read()
        if response.status != 200:
            raise RuntimeError(
                f"POST /ingest returned HTTP {response.status}: {answer[:300]!r}"
            )


async def one_sample(
    url: str,
    session: aiohttp.ClientSession,
    events: CompletedEvents,
    corpus: Corpus,
    index: int,
) -> float:
    """Return milliseconds from sending the fill to receiving replay:completed."""
    service = f"gap-{secrets.token_hex(3)}-{index}"
    await post(session, url, make_body(corpus, service, index, 1, 100, 0))
    await post(session, url, make_body(corpus, service, index, 201, 100, 0))

    async def gap_recorded() -> bool:
        body = await get_json(f"{url}/logs/replay", service=service, status="pending")
        return bool(body["replays"])

    await wait_until(
        gap_recorded,
        GAP_RECORDED_TIMEOUT_S,
        f"the gap of {service} to be recorded",
        interval=0.02,
    )
    completed = events.expect(service)
    started = time.perf_counter()
    await post(session, url, make_body(corpus, service, index, 101, 100, 0))
    finished = await asyncio.wait_for(completed, COMPLETED_TIMEOUT_S)
    return (finished - started) * 1000


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    corpus = Corpus.load(bench.loghub)
    runs: list[list[float]] = []
    async with running_tracehub(bench, workers=1) as hub:
        events = CompletedEvents()
        await events.client.connect(hub.url, transports=["websocket"])
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(bench.runs):
                    samples = [
                        await one_sample(hub.url, session, events, corpus, i)
                        for i in range(options["gap_samples"])
                    ]
                    runs.append(samples)
        finally:
            await events.client.disconnect()
    label = f"{options['gap_samples']} gaps of 100 seqs per run, idle node, 1 worker"
    return [
        Figure(
            SECTION,
            f"fill to replay:completed p50 ({label})",
            "ms",
            [percentile(s, 50) for s in runs],
        ),
        Figure(
            SECTION,
            "fill to replay:completed p99",
            "ms",
            [percentile(s, 99) for s in runs],
            Target("<=", TARGET_P99_MS),
        ),
    ]
