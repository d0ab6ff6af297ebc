"""The pipeline as a whole: convergence under any delivery order, producer restarts,
lost Redis state, a flushed queue, and PostgreSQL going away."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Isolated, RunningServer, ThreadedServer, batch, entry, poll, start_server, stop_server, wait_for
from proxy import postgres_proxy
from test_ingest_cases import control, seqs_of, wait_durable, worker_up


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_order_duplication_and_batching_converges(
    threaded_server: ThreadedServer, isolated: Isolated, data: st.DataObject
) -> None:
    service = f"prop-{uuid.uuid4().hex[:8]}"
    n = data.draw(st.integers(1, 80), label="n")
    seqs = list(range(1, n + 1))
    extra = data.draw(st.lists(st.sampled_from(seqs), max_size=40), label="duplicates")
    order = data.draw(st.permutations(seqs + extra), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=12), label="cuts"))
    with httpx.Client(base_url=threaded_server.url, timeout=30) as client:
        start = 0
        last = None
        for end in [*cuts, len(order)]:
            chunk = order[start:end]
            start = end
            if chunk:
                last = client.post("/ingest", json=batch(service, chunk))
                assert last.status_code == 200
        final = client.post("/ingest", json=batch(service, [n])).json()
    assert final["ackTill"] == n
    assert final["missing"] == []
    assert final["missingTotal"] == 0
    rows = poll(lambda: (s := seqs_of(isolated, service)) and len(s) >= n and s, timeout=30, what="rows")
    assert rows == seqs


async def test_producer_restart_with_new_epoch(server: RunningServer, isolated: Isolated) -> None:
    service = "epoch-svc"
    async with server.client() as client:
        first = {"service": service, "epoch": "boot-1", "batch": [entry(s) for s in (1, 2, 3, 5)]}
        assert (await client.post("/ingest", json=first)).json()["missing"] == [4]
        restarted = {"service": service, "epoch": "boot-2", "batch": [entry(1, message="new life")]}
        conflict = await client.post("/ingest", json=restarted)
        assert conflict.status_code == 409
        assert conflict.json()["nextSeq"] == 6
        assert conflict.json()["error"]["field"] == "epoch"

        renumbered = {"service": service, "epoch": "boot-2", "batch": [entry(6, message="new life")]}
        ack = (await client.post("/ingest", json=renumbered)).json()
        assert ack["ackTill"] == 6
        assert ack["missing"] == []  # the old epoch's gap cannot be filled any more
        await wait_durable(client, service, 6)
    assert seqs_of(isolated, service) == [1, 2, 3, 5, 6]
    lost = isolated.sql("SELECT status, reason FROM replay_requests WHERE service = %s", (service,))
    assert lost == [("lost", "epoch_changed")]


async def test_ack_state_restored_after_redis_loses_it(server: RunningServer, isolated: Isolated) -> None:
    service = "restore-svc"
    async with server.client() as client:
        await client.post("/ingest", json=batch(service, range(1, 11)))
        await wait_durable(client, service, 10)
        await wait_for(lambda: isolated.sql("SELECT durable_till FROM ack_state WHERE service = %s", (service,))
                       == [(10,)], what="ack_state saved")  # fmt: skip
        r = isolated.redis()
        r.delete(f"{isolated.prefix}ack:{service}", f"{isolated.prefix}ack:{service}:done")
        server.backends.ingestor.forget_cache()

        again = (await client.post("/ingest", json=batch(service, range(8, 13)))).json()
        assert again["ackTill"] == 12
        assert again["missing"] == []
        assert again["duplicates"] == 3
        await wait_durable(client, service, 12)
    assert seqs_of(isolated, service) == list(range(1, 13))


async def test_flushed_queue_is_requested_again(server: RunningServer, isolated: Isolated) -> None:
    service = "flush-svc"
    async with server.client() as client:
        await wait_for(lambda: worker_up(client), what="worker up")
        await control(client, "crash-worker", 60_000)
        await wait_for(lambda: _no_live_worker(client), what="worker down")
        await client.post("/ingest", json=batch(service, range(1, 51)))
        flushed = await control(client, "flush-queue")
        assert flushed["flushed"]["stream"] == 1
        await control(client, "reset")

        async def missing_reported() -> list[int]:
            return (await client.post("/ingest", json=batch(service, [50]))).json()["missing"]

        missing = await wait_for(missing_reported, timeout=30, what="flushed seqs reported missing")
        assert missing == list(range(1, 50))
        await client.post("/ingest", json=batch(service, missing))
        await wait_durable(client, service, 50)
    assert seqs_of(isolated, service) == list(range(1, 51))


async def _no_live_worker(client: httpx.AsyncClient) -> bool:
    return not any(w["alive"] for w in (await client.get("/metrics")).json()["workers"])


async def test_postgres_unreachable_then_back(isolated: Isolated) -> None:
    proxy, proxied_url = postgres_proxy(isolated.database_url)
    await proxy.start()
    running, runner = await start_server(isolated.settings(database_url=proxied_url()))
    service = "pgdown-svc"
    try:
        async with running.client() as client:
            await client.post("/ingest", json=batch(service, range(1, 51)))
            await wait_durable(client, service, 50)
            await proxy.cut()
            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["postgres"] == "down"
            for start in range(51, 201, 50):
                response = await client.post("/ingest", json=batch(service, range(start, start + 50)))
                assert response.status_code == 200
            await asyncio.sleep(0)  # the worker now retries against the cut proxy
            await proxy.restore()
            await wait_durable(client, service, 200, timeout=60)
            assert (await client.get("/health")).status_code == 200
    finally:
        await stop_server(running, runner)
        await proxy.cut()
    assert seqs_of(isolated, service) == list(range(1, 201))


async def test_gap_deadline_declares_lost(isolated: Isolated) -> None:
    running, runner = await start_server(isolated.settings(gap_deadline_s=1.0))
    service = "deadline-svc"
    try:
        async with running.client() as client:
            await client.post("/ingest", json=batch(service, [1, 2, 5]))
            await wait_durable(client, service, 5, timeout=20)
            ack = (await client.post("/ingest", json=batch(service, [6]))).json()
            assert ack["missing"] == []
            assert ack["durableTill"] >= 5
        replays = await wait_for(lambda: isolated.sql(
            "SELECT from_seq, to_seq, status, reason FROM replay_requests WHERE service = %s", (service,)),
            what="replay row")  # fmt: skip
        assert replays == [(3, 4, "lost", "deadline")]
        await wait_for(lambda: isolated.sql("SELECT lost FROM ack_state WHERE service = %s", (service,)) == [(2,)],
                       what="lost counted in ack_state")  # fmt: skip
    finally:
        await stop_server(running, runner)


async def test_rejected_entry_with_valid_seq_never_becomes_gap(server: RunningServer, isolated: Isolated) -> None:
    service = "settled-svc"
    body = {"service": service, "batch": [entry(1), entry(2, level="loud"), entry(3)]}
    async with server.client() as client:
        ack = (await client.post("/ingest", json=body)).json()
        assert ack["missing"] == []
        assert ack["rejected"] == [{"index": 1, "seq": 2, "field": "level", "reason": ack["rejected"][0]["reason"]}]
        await wait_durable(client, service, 3)
    assert seqs_of(isolated, service) == [1, 3]


async def test_missing_list_is_capped_but_ranges_complete(server: RunningServer) -> None:
    async with server.client() as client:
        await client.post("/ingest", json=batch("cap-svc", [1]))
        ack = (await client.post("/ingest", json=batch("cap-svc", [1_000_002]))).json()
    assert len(ack["missing"]) == 1000
    assert ack["missing"][:3] == [2, 3, 4]
    assert ack["missingRanges"] == [[2, 1_000_001]]
    assert ack["missingTotal"] == 1_000_000


async def test_non_json_content_type_is_415(server: RunningServer, isolated: Isolated) -> None:
    async with server.client() as client:
        response = await client.post("/ingest", content=b'{"service": "x", "batch": []}',
                                     headers={"Content-Type": "text/plain"})  # fmt: skip
    assert response.status_code == 415
    assert response.json()["error"]["field"] == "Content-Type"


async def test_flushed_seqs_found_under_steady_traffic(server: RunningServer, isolated: Isolated) -> None:
    """The lost-seq finder must not need an empty queue: traffic keeps flowing."""
    service, other = "steady-flush-svc", "steady-other-svc"
    stop = asyncio.Event()

    async def keep_sending(client: httpx.AsyncClient) -> None:
        seq = 1
        while not stop.is_set():
            await client.post("/ingest", json=batch(other, range(seq, seq + 20)))
            seq += 20
            await asyncio.sleep(0.02)

    async with server.client() as client:
        await wait_for(lambda: worker_up(client), what="worker up")
        traffic = asyncio.create_task(keep_sending(client))
        try:
            await control(client, "crash-worker", 60_000)
            await wait_for(lambda: _no_live_worker(client), what="worker down")
            await client.post("/ingest", json=batch(service, range(1, 31)))
            await control(client, "flush-queue")
            await control(client, "reset")

            async def missing_reported() -> list[int]:
                return (await client.post("/ingest", json=batch(service, [30]))).json()["missing"]

            missing = await wait_for(missing_reported, timeout=20, what="flushed seqs reported missing")
            assert missing == list(range(1, 30))
            await client.post("/ingest", json=batch(service, missing))
            await wait_durable(client, service, 30)
        finally:
            stop.set()
            await traffic
    assert seqs_of(isolated, service) == list(range(1, 31))


def test_age_ranges_keeps_first_seen_time() -> None:
    from tracehub.worker import age_ranges

    aged = age_ranges([(1, 10), (20, 25)], [((5, 12), 100), ((20, 20), 50)], now_ms=900)
    assert aged == [((1, 4), 900), ((5, 10), 100), ((20, 20), 50), ((21, 25), 900)]


async def test_manual_replay_requests_unstored_seqs(server: RunningServer, isolated: Isolated) -> None:
    service = "manual-svc"
    async with server.client() as client:
        await wait_for(lambda: worker_up(client), what="worker up")
        await client.post("/ingest", json=batch(service, range(1, 6)))
        await wait_durable(client, service, 5)
        await control(client, "crash-worker", 60_000)
        await wait_for(lambda: _no_live_worker(client), what="worker down")
        await client.post("/ingest", json=batch(service, range(6, 11)))
        await control(client, "flush-queue")
        response = await client.post("/logs/replay", json={"service": service, "fromSeq": 1, "toSeq": 10})
        assert response.status_code == 202
        ack = (await client.post("/ingest", json=batch(service, [10]))).json()
        assert ack["missing"] == [6, 7, 8, 9]  # seq 10 itself was just resent
        await control(client, "reset")
        await client.post("/ingest", json=batch(service, range(6, 11)))
        await wait_durable(client, service, 10)
        replays = await wait_for(lambda: isolated.sql(
            "SELECT status FROM replay_requests WHERE service = %s AND reason = 'manual'", (service,)) == [("completed",)],
            what="manual replay completed")  # fmt: skip
        assert replays
    assert seqs_of(isolated, service) == list(range(1, 11))


async def test_first_epoch_overlapping_old_seqs_conflicts(server: RunningServer, isolated: Isolated) -> None:
    service = "first-epoch-svc"
    async with server.client() as client:
        await client.post("/ingest", json=batch(service, range(1, 6)))
        overlap = await client.post("/ingest", json={"service": service, "epoch": "run-1",
                                                     "batch": [entry(s) for s in range(1, 8)]})  # fmt: skip
        assert overlap.status_code == 409
        assert overlap.json()["nextSeq"] == 6
        onward = await client.post("/ingest", json={"service": service, "epoch": "run-1", "batch": [entry(6)]})
        assert onward.status_code == 200
        assert onward.json()["ackTill"] == 6


async def test_manual_replay_of_unknown_or_unsent_seqs_rejected(server: RunningServer) -> None:
    async with server.client() as client:
        unknown = await client.post("/logs/replay", json={"service": "never-seen", "fromSeq": 1, "toSeq": 2})
        await client.post("/ingest", json=batch("known-svc", [1, 2]))
        beyond = await client.post("/logs/replay", json={"service": "known-svc", "fromSeq": 1, "toSeq": 99})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "service"
    assert beyond.status_code == 400
    assert beyond.json()["error"]["field"] == "toSeq"


async def test_many_gzip_members_rejected(server: RunningServer) -> None:
    import gzip

    import orjson

    body = gzip.compress(b"") * 1000 + gzip.compress(orjson.dumps(batch("gz-svc", [1])))
    async with server.client() as client:
        response = await client.post("/ingest", content=body, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})  # fmt: skip
    assert response.status_code == 400
    assert "gzip members" in response.json()["error"]["message"]


async def test_burst_of_concurrent_services_never_503(server: RunningServer) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(*[
            client.post("/ingest", json=batch(f"burst-{i}", range(1, 51))) for i in range(150)
        ])  # fmt: skip
    assert sorted({r.status_code for r in responses}) == [200]


def test_log_formatter_redacts_bearer_tokens() -> None:
    import logging

    from tracehub.cli import RedactingFormatter

    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                               "bad request b'Authorization: Bearer adm-SECRET-123 \\x7f'", None, None)  # fmt: skip
    text = RedactingFormatter("%(message)s").format(record)
    assert "adm-SECRET-123" not in text
    assert "Bearer [redacted]" in text
