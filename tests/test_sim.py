"""The simulated producers of `tracehub sim`, against a live server with a worker,
on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import replace
from typing import Any, Sequence

import httpx
import orjson
import pytest
import redis

from conftest import Isolated, RunningServer, start_server, stop_server, wait_for
from proxy import redis_proxy
from tracehub.protocol import count, expand
from tracehub.queue import Keys
from tracehub.sim.buffer import member, seq_of
from tracehub.sim.cli import resolve_redis_url
from tracehub.sim.domain import KNOWN_NAMES, service_names
from tracehub.sim.gaps import GapInjector
from tracehub.sim.producer import ProducerOptions, ProducerStats
from tracehub.sim.run import SimConfig, SimResult, run_sim
from tracehub.sim.transport import Backoff, retry_after_s

# --- helpers -------------------------------------------------------------------------


def sim_config(url: str, isolated: Isolated, **overrides: Any) -> SimConfig:
    """Return a short, seeded run against url; producer options go in as keywords."""
    run_keys = {"services", "names", "duration_s", "drain_timeout_s", "seed"}
    run = {k: v for k, v in overrides.items() if k in run_keys}
    producer = {k: v for k, v in overrides.items() if k not in run_keys}
    producer.setdefault("rate", 30.0)
    producer.setdefault("flush_ms", 100)
    run.setdefault("seed", 7)
    run.setdefault("drain_timeout_s", 20.0)
    return SimConfig(
        url=url,
        redis_url=isolated.redis_url,
        redis_prefix=isolated.prefix,
        producer=ProducerOptions(**producer),
        **run,
    )


class Live:
    """A run of the simulator in the background, with its latest progress. As an
    async context manager it makes sure the run has ended when the block exits."""

    def __init__(self, config: SimConfig) -> None:
        self.stop = asyncio.Event()
        self.abort = asyncio.Event()
        self.latest: dict[str, ProducerStats] = {}
        self.task = asyncio.create_task(
            run_sim(config, stop=self.stop, abort=self.abort, progress=self._progress)
        )

    async def __aenter__(self) -> Live:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.task.done():
            self.stop.set()
            self.abort.set()
            await asyncio.gather(self.task, return_exceptions=True)

    def _progress(
        self, stats: Sequence[ProducerStats], elapsed_s: float, phase: str
    ) -> None:
        self.latest = {s.service: s for s in stats}

    async def wait_acked(self, at_least: int = 1, timeout: float = 15) -> None:
        """Wait until every service has at least this many logs acknowledged."""

        def acked() -> bool:
            return bool(self.latest) and all(
                s.ack_till >= at_least for s in self.latest.values()
            )

        await wait_for(
            acked, timeout=timeout, what=f"every service acknowledged to {at_least}"
        )

    async def wait_more(self, extra: int = 20, timeout: float = 15) -> None:
        """Wait until every service has acknowledged extra more logs."""
        floors = {name: s.ack_till for name, s in self.latest.items()}

        def advanced() -> bool:
            return all(self.latest[n].ack_till >= floors[n] + extra for n in floors)

        await wait_for(
            advanced, timeout=timeout, what=f"{extra} more logs acknowledged"
        )

    async def finish(self) -> SimResult:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout=45)


async def control(
    url: str, action: str, duration_ms: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action}
    if duration_ms is not None:
        body["durationMs"] = duration_ms
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/metrics/control", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stored_seqs(isolated: Isolated, service: str) -> list[int]:
    rows = isolated.sql(
        "SELECT seq FROM logs WHERE service = %s ORDER BY seq", (service,)
    )
    return [row[0] for row in rows]


def duplicate_seqs(isolated: Isolated, service: str) -> list[tuple[int, int]]:
    return [
        tuple(row)
        for row in isolated.sql(  # type: ignore[misc]
            "SELECT seq, count(*) FROM logs WHERE service = %s"
            " GROUP BY seq HAVING count(*) > 1",
            (service,),
        )
    ]


def buffer_size(isolated: Isolated, service: str) -> int:
    client = isolated.redis()
    try:
        return int(client.zcard(Keys(isolated.prefix).producer(service)))
    finally:
        client.close()


def assert_exactly_generated(
    isolated: Isolated, stats: ProducerStats, first: int = 1
) -> None:
    """Assert PostgreSQL contains the seqs first..last of the run, once each, and the
    producer ended drained with an empty buffer."""
    service = stats.service
    assert stats.last_seq is not None, f"{service} generated nothing"
    assert duplicate_seqs(isolated, service) == []
    assert stored_seqs(isolated, service) == list(range(first, stats.last_seq + 1))
    assert stats.durable_till == stats.last_seq
    assert stats.buffered == 0
    assert buffer_size(isolated, service) == 0
    assert stats.dropped == 0
    assert stats.drained


def assert_lost_only_dropped(isolated: Isolated, stats: ProducerStats) -> None:
    """Assert every generated seq is stored once, except those the policy dropped."""
    service = stats.service
    assert stats.first_seq is not None and stats.last_seq is not None
    generated = set(range(stats.first_seq, stats.last_seq + 1))
    stored = stored_seqs(isolated, service)
    dropped = set(expand(stats.dropped_ranges, stats.dropped + 1))
    assert duplicate_seqs(isolated, service) == []
    assert set(stored) <= generated
    assert generated - set(stored) <= dropped
    assert count(stats.dropped_ranges) == stats.dropped


# --- pure parts ----------------------------------------------------------------------


def test_service_names_known_then_numbered() -> None:
    assert service_names(3) == [
        "auth-service",
        "payment-service",
        "notification-service",
    ]
    assert service_names(8)[:6] == list(KNOWN_NAMES)
    assert service_names(8)[6:] == ["service-7", "service-8"]


def test_member_round_trips_seq() -> None:
    encoded = member(1097, b'"level":"info","message":"m"}')
    assert encoded == b'{"seq":1097,"level":"info","message":"m"}'
    assert seq_of(encoded) == 1097
    assert orjson.loads(encoded)["seq"] == 1097


def test_backoff_honours_retry_after() -> None:
    backoff = Backoff(random.Random(1))
    for attempt in range(8):
        assert backoff.delay(attempt, 1.0) >= 1.0
        assert backoff.delay(attempt, None) <= 5.0
    assert backoff.delay(0, None) <= 0.1
    assert backoff.delay(6, None) >= 2.5


def test_gap_injector_releases_when_due() -> None:
    gaps = GapInjector(random.Random(3), rate=1.0, flush_s=0.1, replay_grace_s=3.0)
    for seq in range(1, 41):
        assert gaps.maybe_hold(seq, b"m%d" % seq, batches_sent=0, now=100.0)
    later = {seq for seq, held in gaps.held_logs.items() if held.release_after <= 3}
    replay_only = set(gaps.held_logs) - later
    assert later
    assert replay_only
    assert gaps.take_due(batches_sent=0, now=100.0, limit=100) == []
    due = gaps.take_due(batches_sent=3, now=100.0, limit=100)
    assert {seq for seq, _ in due} == later
    assert gaps.forget_through(10) == len([s for s in replay_only if s <= 10])
    rest = gaps.take_due(batches_sent=3, now=103.0, limit=100)
    assert {seq for seq, _ in rest} == {s for s in replay_only if s > 10}
    assert len(gaps) == 0
    assert not GapInjector(random.Random(3), 0.0, 0.1, 3.0).maybe_hold(1, b"m", 0, 0.0)


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("100000") == 60.0


# --- against a server ----------------------------------------------------------------


async def test_three_services_lose_nothing(
    server: RunningServer, isolated: Isolated
) -> None:
    result = await run_sim(
        sim_config(server.url, isolated, services=3, duration_s=3.0, gap_rate=0.0)
    )
    assert [s.service for s in result.services] == service_names(3)
    assert result.drained
    for stats in result.services:
        assert stats.generated >= 30
        assert stats.first_seq == 1
        assert stats.generated == stats.last_seq
        assert stats.ack_till == stats.last_seq
        assert_exactly_generated(isolated, stats)
    shared = isolated.sql(
        "SELECT request_id FROM logs WHERE request_id IS NOT NULL"
        " GROUP BY request_id HAVING count(DISTINCT service) > 1"
    )
    assert shared, "no request id appears in more than one service"
    levels = {row[0] for row in isolated.sql("SELECT DISTINCT level FROM logs")}
    assert {"info", "warn"} <= levels


async def test_buffer_holds_entries_as_posted(
    server: RunningServer, isolated: Isolated
) -> None:
    # With the worker crashed nothing becomes durable, so the buffer keeps every log.
    await control(server.url, "crash-worker", 3000)
    config = sim_config(server.url, isolated, names=("pay-buffer",), gap_rate=0.0)
    async with Live(config) as live:
        await live.wait_acked(10)
        client = isolated.redis()
        try:
            raw = client.zrange(
                Keys(isolated.prefix).producer("pay-buffer"), 0, -1, withscores=True
            )
        finally:
            client.close()
        result = await live.finish()
    assert raw, "the buffer is empty while the worker is down"
    for encoded, score in raw:
        entry = orjson.loads(encoded)
        assert entry["seq"] == int(score)
        assert {"level", "message", "ts", "event"} <= set(entry)
        assert encoded.startswith(b'{"seq":%d,' % entry["seq"])
    assert_exactly_generated(isolated, result.services[0])


async def test_gap_injection_replays_from_buffer(
    server: RunningServer, isolated: Isolated
) -> None:
    config = sim_config(
        server.url,
        isolated,
        services=3,
        duration_s=4.0,
        rate=40.0,
        gap_rate=0.1,
        replay_grace_s=3.0,
    )
    result = await run_sim(config)
    for stats in result.services:
        assert stats.held > 0
        assert_exactly_generated(isolated, stats)
    assert sum(s.filled_by_server for s in result.services) > 0
    completed = isolated.sql(
        "SELECT count(*) FROM replay_requests WHERE status = 'completed'"
    )[0][0]
    from_buffer = isolated.sql(
        "SELECT count(*) FROM replay_requests"
        " WHERE status = 'completed' AND attempts > 0"
    )[0][0]
    assert completed > 0
    assert from_buffer > 0, (
        "no replay was filled by the worker from the producer buffer"
    )
    # The worker recounts replays every half second, so the last ones complete
    # shortly after the producers drained.
    await wait_for(
        lambda: (
            isolated.sql(
                "SELECT count(*) FROM replay_requests WHERE status <> 'completed'"
            )
            == [(0,)]
        ),
        timeout=10,
        what="every replay completed",
    )


async def full_buffer_run(
    server: RunningServer, isolated: Isolated, on_full: str
) -> ProducerStats:
    """Run one service whose buffer (50 logs) overflows while the worker is down."""
    config = sim_config(
        server.url,
        isolated,
        names=(f"full-{on_full}",),
        rate=100.0,
        buffer_max=50,
        on_full=on_full,
        gap_rate=0.0,
        flush_ms=50,
    )
    async with Live(config) as live:
        await live.wait_acked(20)
        await control(server.url, "crash-worker", 2000)
        stats = live.latest[f"full-{on_full}"]
        await wait_for(
            lambda: stats.blocked or stats.blocked_s > 0 or stats.dropped > 0,
            timeout=15,
            what="a full buffer",
        )
        await live.wait_more(50, timeout=20)
        result = await live.finish()
    return result.services[0]


async def test_drop_oldest_counts_drops(
    server: RunningServer, isolated: Isolated
) -> None:
    stats = await full_buffer_run(server, isolated, "drop-oldest")
    assert stats.dropped > 0
    assert stats.blocked_s == 0
    assert_lost_only_dropped(isolated, stats)
    assert stats.buffered == buffer_size(isolated, stats.service)


async def test_block_policy_never_drops(
    server: RunningServer, isolated: Isolated
) -> None:
    stats = await full_buffer_run(server, isolated, "block")
    assert stats.blocked_s > 0
    assert_exactly_generated(isolated, stats)


async def test_restart_continues_sequence(
    server: RunningServer, isolated: Isolated
) -> None:
    first = (
        await run_sim(
            sim_config(server.url, isolated, names=("restart-svc",), duration_s=1.5)
        )
    ).services[0]
    second = (
        await run_sim(
            sim_config(server.url, isolated, names=("restart-svc",), duration_s=1.5)
        )
    ).services[0]
    assert first.last_seq is not None
    assert second.first_seq == first.last_seq + 1
    assert second.epoch == first.epoch
    assert second.renumbered == 0
    assert_exactly_generated(isolated, second)


async def test_next_run_sends_leftover_buffer(
    server: RunningServer, isolated: Isolated
) -> None:
    # With the worker down and no drain, the first run leaves logs in its buffer.
    await control(server.url, "crash-worker", 2500)
    config = sim_config(
        server.url, isolated, names=("leftover-svc",), duration_s=1.0, gap_rate=0.0
    )
    first = (await run_sim(replace(config, drain_timeout_s=0.0))).services[0]
    second = (await run_sim(config)).services[0]
    assert first.last_seq is not None
    assert not first.drained
    assert first.buffered > 0
    assert second.inherited == first.buffered
    assert second.first_seq == first.last_seq + 1
    assert_exactly_generated(isolated, second)


async def test_lost_counter_renumbers_on_epoch_conflict(
    server: RunningServer, isolated: Isolated
) -> None:
    config = sim_config(
        server.url, isolated, names=("epoch-svc",), duration_s=1.5, gap_rate=0.0
    )
    first = (await run_sim(config)).services[0]
    keys = Keys(isolated.prefix)
    client = isolated.redis()
    try:
        client.delete(
            f"{keys.producer('epoch-svc')}:seq", f"{keys.producer('epoch-svc')}:epoch"
        )
    finally:
        client.close()
    second = (await run_sim(config)).services[0]
    assert first.last_seq is not None
    assert second.epoch != first.epoch
    assert second.renumbered > 0
    assert second.first_seq == first.last_seq + 1
    assert_exactly_generated(isolated, second)
    assert isolated.sql("SELECT epoch FROM ack_state WHERE service = 'epoch-svc'") == [
        (second.epoch,)
    ]


async def test_retries_through_dropped_network(
    server: RunningServer, isolated: Isolated
) -> None:
    async with Live(sim_config(server.url, isolated, services=3, gap_rate=0.0)) as live:
        await live.wait_acked(10)
        await control(server.url, "drop-network", 1500)
        await wait_for(
            lambda: all(s.retries > 0 for s in live.latest.values()),
            timeout=10,
            what="retries",
        )
        await live.wait_more(30, timeout=20)
        result = await live.finish()
    for stats in result.services:
        assert stats.retries > 0
        assert_exactly_generated(isolated, stats)


async def test_queue_full_429_waits_retry_after(isolated: Isolated) -> None:
    running, runner = await start_server(
        isolated.settings(queue_max_depth=1), run_worker=False
    )
    worker_stop = asyncio.Event()
    worker_task = None
    config = sim_config(running.url, isolated, names=("busy-svc",), gap_rate=0.0)
    try:
        async with Live(config) as live:
            await wait_for(
                lambda: live.latest.get("busy-svc") and live.latest["busy-svc"].retries,
                timeout=10,
                what="a 429",
            )
            # The queue stays full for 2.5 s on purpose. Retry-After: 1 allows 3
            # retries in that time, while backoff alone retries 4 times in 1.5 s.
            await asyncio.sleep(2.5)
            blocked_retries = live.latest["busy-svc"].retries
            worker_task = asyncio.create_task(
                running.backends.new_worker().run(worker_stop)
            )
            result = await live.finish()
    finally:
        worker_stop.set()
        if worker_task is not None:
            await asyncio.wait_for(worker_task, timeout=15)
        await stop_server(running, runner)
    stats = result.services[0]
    assert set(stats.retry_reasons) == {"429 queue_full"}
    assert 1 <= blocked_retries <= 3
    assert_exactly_generated(isolated, stats)


async def test_redis_down_503_waits_retry_after(isolated: Isolated) -> None:
    proxy, proxied_url = redis_proxy(isolated.redis_url)
    await proxy.start()
    running, runner = await start_server(isolated.settings(redis_url=proxied_url()))
    config = sim_config(running.url, isolated, names=("redis-down-svc",), gap_rate=0.0)
    try:
        async with Live(config) as live:
            await live.wait_acked(10)
            await proxy.cut()
            # Redis stays unreachable for 3 s on purpose. Retry-After: 2 allows 2
            # retries in that time, while backoff alone retries 4 times in 1.5 s.
            await asyncio.sleep(3.0)
            await proxy.restore()
            await live.wait_more(20, timeout=30)
            result = await live.finish()
    finally:
        await stop_server(running, runner)
        await proxy.cut()
    stats = result.services[0]
    assert "503 redis_unavailable" in stats.retry_reasons
    assert stats.retries <= 3
    assert_exactly_generated(isolated, stats)


def test_redis_url_falls_back_to_embedded_socket(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracehub.embedded import EmbeddedRedis

    monkeypatch.setenv("TRACEHUB_HOME", str(tmp_path))
    assert resolve_redis_url(None) is None
    assert resolve_redis_url("redis://127.0.0.1:6379/3") == "redis://127.0.0.1:6379/3"
    embedded = EmbeddedRedis(tmp_path / "redis")
    embedded.start()
    try:
        url = resolve_redis_url(None)
        assert url == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    finally:
        embedded.stop()


def test_cli_without_redis_exits_with_hint(tmp_path: Any) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACEHUB_HOME": str(tmp_path),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tracehub", "sim", "--duration", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "TRACEHUB_REDIS_URL" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_prints_json_reconciliation(server_process: tuple[str, Isolated]) -> None:
    url, isolated = server_process
    env = isolated.env(TRACEHUB_URL=url)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracehub",
            "sim",
            "--services",
            "2",
            "--rate",
            "20",
            "--duration",
            "1.5",
            "--json",
            "--quiet",
            "--flush-ms",
            "100",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["drained"] is True
    assert [s["service"] for s in report["services"]] == service_names(2)
    for stats in report["services"]:
        assert stats["generated"] > 0
        assert stats["durable_till"] == stats["last_seq"]
        assert stats["buffered"] == 0
        assert stored_seqs(isolated, stats["service"]) == list(
            range(1, stats["last_seq"] + 1)
        )


@pytest.fixture
def server_process(isolated: Isolated, tmp_path: Any) -> Any:
    """A `tracehub serve` child process on a free port, for CLI tests."""
    from conftest import free_port, spawn, wait_http

    port = free_port()
    process = spawn(
        ["serve", "--port", str(port)],
        isolated.env(TRACEHUB_HOME=str(tmp_path)),
        tmp_path / "serve.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", isolated
    finally:
        process.terminate()
        process.wait(timeout=20)
