"""Run several simulated services against one server, then drain and reconcile.

A run has three phases: generate until ``stop`` is set or the duration ends, drain
(stop generating, keep delivering until every log is durable or the drain timeout
passes), and reconcile (read each producer's final figures). Setting ``abort``
ends the drain at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracehub.queue import connect
from tracehub.sim.domain import RequestIds, ServiceLogs, service_names
from tracehub.sim.producer import (
    Producer,
    ProducerFailed,
    ProducerOptions,
    ProducerStats,
)

log = logging.getLogger(__name__)

# A response delayed by the delay-ack fault arrives late but arrives. A request
# that times out is sent again, which the server counts as a duplicate.
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 0.5

Progress = Callable[[Sequence[ProducerStats], float, str], None]


class SimError(Exception):
    """The simulation could not start or had to stop early."""


@dataclass(frozen=True)
class SimConfig:
    """One run of the simulator."""

    url: str
    redis_url: str
    redis_prefix: str = "tracehub:"
    services: int = 3
    names: tuple[
        str, ...
    ] = ()  # explicit service names; default: service_names(services)
    producer: ProducerOptions = field(default_factory=ProducerOptions)
    duration_s: float | None = None  # None: until stop is set
    drain_timeout_s: float = 30.0
    seed: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization

    def service_list(self) -> list[str]:
        return list(self.names) if self.names else service_names(self.services)


@dataclass
class SimResult:
    """The reconciliation of a run: one ProducerStats per service."""

    services: list[ProducerStats]
    elapsed_s: float

    @property
    def drained(self) -> bool:
        return all(s.drained for s in self.services)

    def by_service(self) -> dict[str, ProducerStats]:
        return {s.service: s for s in self.services}


async def run_sim(
    config: SimConfig,
    *,
    stop: asyncio.Event | None = None,
    abort: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> SimResult:
    """Run the simulation and return its reconciliation; raises SimError."""
    stop = stop or asyncio.Event()
    abort = abort or asyncio.Event()
    started = time.monotonic()
    redis = connect(config.redis_url)
    client = httpx.AsyncClient(
        base_url=config.url.rstrip("/"),
        headers=config.headers,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )
    try:
        producers = await _start_producers(config, redis, client)
        log.info("sim starting %d services against %s", len(producers), config.url)
        run = _Run(producers, stop, abort, started, progress)
        await run.execute(config.duration_s, config.drain_timeout_s)
        services = [await p.reconcile() for p in producers]
    finally:
        await client.aclose()
        await redis.aclose()
    elapsed = time.monotonic() - started
    log.info("sim finished after %.1fs", elapsed)
    return SimResult(services, elapsed)


async def _start_producers(
    config: SimConfig, redis: aioredis.Redis, client: httpx.AsyncClient
) -> list[Producer]:
    rng = random.Random(config.seed)
    requests = RequestIds(random.Random(rng.random()))
    producers = []
    for index, name in enumerate(config.service_list()):
        service_rng = random.Random(rng.random())
        logs = ServiceLogs(name, requests, service_rng, first=index == 0)
        producers.append(
            Producer(
                name,
                redis,
                config.redis_prefix,
                client,
                config.producer,
                logs,
                service_rng,
            )
        )
    try:
        for producer in producers:
            await producer.start()
    except (RedisError, OSError) as exc:
        raise SimError(
            f"cannot open the producer buffers in Redis at {config.redis_url}: {exc}"
        ) from exc
    return producers


class _Run:
    """The tasks of one run and the phases they go through."""

    def __init__(
        self,
        producers: list[Producer],
        stop: asyncio.Event,
        abort: asyncio.Event,
        started: float,
        progress: Progress | None,
    ) -> None:
        self.producers = producers
        self.stop = stop
        self.abort = abort
        self.started = started
        self.progress = progress
        self.phase = "running"
        self.finished = asyncio.Event()  # generation is over

    async def execute(self, duration_s: float | None, drain_timeout_s: float) -> None:
        generators = [
            asyncio.create_task(p.generate(self.finished), name=f"generate-{p.service}")
            for p in self.producers
        ]
        senders = [
            asyncio.create_task(
                p.deliver(self.finished, self.abort), name=f"deliver-{p.service}"
            )
            for p in self.producers
        ]
        reporter = asyncio.create_task(self._report(), name="sim-progress")
        try:
            await self._generate_phase(duration_s, senders)
            self.finished.set()
            await asyncio.gather(*generators)
            await self._drain_phase(drain_timeout_s, senders)
        finally:
            self.finished.set()
            self.abort.set()
            for task in [*generators, *senders, reporter]:
                task.cancel()
            await asyncio.gather(
                *generators, *senders, reporter, return_exceptions=True
            )
            self._show()

    async def _generate_phase(
        self, duration_s: float | None, senders: list[asyncio.Task[None]]
    ) -> None:
        """Wait for stop, the duration, or a producer that failed."""
        stopper = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait(
                [stopper, *senders],
                timeout=duration_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopper.cancel()
        _raise_failures(senders)
        log.info("sim stopping generation after %.1fs", time.monotonic() - self.started)

    async def _drain_phase(
        self, timeout_s: float, senders: list[asyncio.Task[None]]
    ) -> None:
        """Wait until every producer is drained, the timeout passes or abort is set."""
        self.phase = "draining"
        deadline = time.monotonic() + timeout_s
        aborted = asyncio.create_task(self.abort.wait())
        pending = set(senders)
        try:
            while pending and not self.abort.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "sim drain timed out after %.1fs; %d services not drained",
                        timeout_s,
                        len(pending),
                    )
                    break
                done, _ = await asyncio.wait(
                    {*pending, aborted},
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                pending -= done
                _raise_failures(list(done - {aborted}))
        finally:
            aborted.cancel()
        self.phase = "drained" if not pending else "stopped"

    async def _report(self) -> None:
        while True:
            self._show()
            await asyncio.sleep(PROGRESS_EVERY_S)

    def _show(self) -> None:
        if self.progress is not None:
            self.progress(
                [p.stats for p in self.producers],
                time.monotonic() - self.started,
                self.phase,
            )


def _raise_failures(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if isinstance(exc, ProducerFailed):
            raise SimError(str(exc)) from exc
        if exc is not None:
            raise SimError(f"{task.get_name()} failed: {exc!r}") from exc
