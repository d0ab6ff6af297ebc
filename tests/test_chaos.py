"""Infrastructure failures under sustained traffic. TraceHub runs as processes,
and producers in the test follow the ACK contract throughout. Each test ends with
a full account per service: every generated log stored exactly once.

The Redis and PostgreSQL restarted here are servers of the test's own (see
tests/chaos.py); the unreachable Redis is the shared one behind a proxy that the
test cuts.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest
import redis

from chaos import DedicatedPostgres, DedicatedRedis, HealthWatch, Producer, Traffic, check_accounts, healthy
from conftest import Isolated, free_port, spawn, wait_for, wait_http
from proxy import redis_proxy
from test_processes import stop_all

pytestmark = pytest.mark.slow
DRAIN_TIMEOUT_S = 45.0
OUTAGE_S = 4.0
UNREACHABLE_S = 30.0


class Cluster:
    """The TraceHub processes of one test, stopped at its end."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []

    async def serve(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        process = self.spawn(name, "serve", "--port", str(port), *args)
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_http, url)
        return process, url

    def spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        process = spawn(list(args), {**self.env, **env}, self.folder / f"{name}.log")
        self.processes.append(process)
        return process

    def stop(self) -> None:
        stop_all(self.processes)


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, str]], Cluster]]:
    clusters: list[Cluster] = []

    def make(env: dict[str, str]) -> Cluster:
        clusters.append(Cluster(env, tmp_path))
        return clusters[-1]

    yield make
    for cluster in clusters:
        cluster.stop()


def producers(prefix: str, urls: list[str], count: int = 3) -> Traffic:
    return Traffic([Producer(f"{prefix}-{i}", urls) for i in range(count)])


def pending_of(redis_url: str, stream: str, consumer_prefix: str = "") -> int:
    """Return the entries that consumers read and did not acknowledge."""
    client = redis.Redis.from_url(redis_url)
    try:
        consumers = client.xinfo_consumers(stream, "workers")
    except redis.ResponseError:
        return 0
    finally:
        client.close()
    return sum(c["pending"] for c in consumers if c["name"].decode().startswith(consumer_prefix))


async def test_worker_killed_under_traffic(isolated: Isolated, cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(isolated.env())
    server, url = await cluster.serve("serve", "--no-worker")
    first = cluster.spawn("worker1", "worker", TRACEHUB_WORKER_BATCH="2")
    traffic = producers("wk", [url])
    traffic.start()
    stream = f"{isolated.prefix}queue:logs"

    await traffic.wait_generated(500)
    await wait_for(lambda: pending_of(isolated.redis_url, stream) > 0, timeout=20, interval=0.005,
                   what="the worker holding read entries")  # fmt: skip
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    pending_at_kill = pending_of(isolated.redis_url, stream)
    cluster.spawn("worker2", "worker", TRACEHUB_CLAIM_IDLE_MS="1000")
    await traffic.wait_generated(max(p.generated for p in traffic.producers) + 1000)

    drained = await traffic.stop_and_drain(DRAIN_TIMEOUT_S)
    check_accounts(isolated.database_url, traffic, drained)
    assert pending_at_kill > 0
    assert server.poll() is None


async def test_serve_killed_with_batches_in_flight(isolated: Isolated, cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(isolated.env())
    doomed, doomed_url = await cluster.serve("serve-a", "--no-worker")
    survivor, survivor_url = await cluster.serve("serve-b", "--no-worker")
    cluster.spawn("worker", "worker")
    traffic = producers("node", [doomed_url, survivor_url])
    traffic.start()

    await traffic.wait_generated(1000)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    await traffic.wait_generated(max(p.generated for p in traffic.producers) + 1500)

    drained = await traffic.stop_and_drain(DRAIN_TIMEOUT_S)
    check_accounts(isolated.database_url, traffic, drained)
    failed_over = sum(sum(p.stats.failures.values()) for p in traffic.producers)
    assert failed_over > 0, "no producer saw the killed node fail"
    assert survivor.poll() is None


async def test_redis_restarted(isolated: Isolated, tmp_path: Path, cluster_factory: Callable[..., Cluster]) -> None:
    own_redis = DedicatedRedis(tmp_path / "redis")
    own_redis.start()
    try:
        cluster = cluster_factory({**isolated.env(), "TRACEHUB_REDIS_URL": own_redis.url})
        server, url = await cluster.serve("serve")
        await outage_under_traffic("rr", url, "redis", own_redis.stop, own_redis.start, OUTAGE_S,
                                   isolated.database_url)  # fmt: skip
        assert server.poll() is None
    finally:
        own_redis.stop()


async def test_postgres_restarted(isolated: Isolated, tmp_path: Path, cluster_factory: Callable[..., Cluster]) -> None:
    own_postgres = await asyncio.to_thread(DedicatedPostgres, tmp_path / "postgres")
    try:
        cluster = cluster_factory({**isolated.env(), "TRACEHUB_DATABASE_URL": own_postgres.url})
        server, url = await cluster.serve("serve")
        await outage_under_traffic("pr", url, "postgres", own_postgres.stop, own_postgres.start, OUTAGE_S,
                                   own_postgres.url)  # fmt: skip
        assert server.poll() is None
        cluster.stop()
    finally:
        await asyncio.to_thread(own_postgres.cleanup)


async def test_redis_unreachable_for_30s(isolated: Isolated, cluster_factory: Callable[..., Cluster]) -> None:
    proxy, proxied_url = redis_proxy(isolated.redis_url)
    await proxy.start()
    try:
        cluster = cluster_factory({**isolated.env(), "TRACEHUB_REDIS_URL": proxied_url()})
        server, url = await cluster.serve("serve")
        await outage_under_traffic("ru", url, "redis", proxy.cut, proxy.restore, UNREACHABLE_S,
                                   isolated.database_url)  # fmt: skip
        assert server.poll() is None
    finally:
        await proxy.cut()


async def outage_under_traffic(
    prefix: str, url: str, backend: str, break_it: Callable[[], object], mend_it: Callable[[], object],
    outage_s: float, database_url: str,
) -> None:  # fmt: skip
    """Run producers, break a backend for outage_s while /health is watched, mend
    it, and check that /health reported it, traffic resumed and every log was stored once."""
    traffic = producers(prefix, [url])
    watch = HealthWatch(url)
    traffic.start()
    watch.start()
    try:
        await traffic.wait_generated(500)
        await _call(break_it)
        await wait_for(lambda: watch.saw_down(backend), timeout=15, what=f"/health reporting {backend} down")
        await asyncio.sleep(outage_s)  # the outage itself: how long the backend stays away
        await _call(mend_it)
        await wait_for(lambda: healthy(url), timeout=30, what="/health ok again")
        await traffic.wait_generated(max(p.generated for p in traffic.producers) + 500, timeout_s=30)
    finally:
        await watch.stop()
    drained = await traffic.stop_and_drain(DRAIN_TIMEOUT_S)
    check_accounts(database_url, traffic, drained)


async def _call(action: Callable[[], object]) -> None:
    result = await asyncio.to_thread(action) if not asyncio.iscoroutinefunction(action) else await action()
    del result
