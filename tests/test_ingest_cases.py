"""Delivery failures that real log pipelines have shipped, replayed against a live
server with a worker, on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import Isolated, RunningServer, batch, entry, wait_for


def stored(isolated: Isolated, service: str) -> list[tuple[int, str]]:
    return [tuple(r) for r in isolated.sql(
        "SELECT seq, message FROM logs WHERE service = %s ORDER BY seq", (service,))]  # fmt: skip


def seqs_of(isolated: Isolated, service: str) -> list[int]:
    return [seq for seq, _ in stored(isolated, service)]


async def wait_rows(isolated: Isolated, service: str, n: int, timeout: float = 20) -> list[int]:
    def enough() -> list[int] | None:
        seqs = seqs_of(isolated, service)
        return seqs if len(seqs) >= n else None

    return await wait_for(enough, timeout=timeout, what=f"{n} rows of {service}")


async def wait_durable(client: httpx.AsyncClient, service: str, seq: int, timeout: float = 20) -> None:
    async def durable() -> bool:
        body = (await client.get("/metrics")).json()
        return any(s["service"] == service and s["durableTill"] >= seq for s in body["services"])

    await wait_for(durable, timeout=timeout, what=f"{service} durable to {seq}")


async def control(client: httpx.AsyncClient, action: str, duration_ms: int | None = None) -> dict:  # type: ignore[type-arg]
    body: dict[str, object] = {"action": action}
    if duration_ms is not None:
        body["durationMs"] = duration_ms
    response = await client.post("/metrics/control", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_worker_crash_holding_batches(server: RunningServer, isolated: Isolated) -> None:
    service = "crash-svc"
    async with server.client() as client:
        await wait_for(lambda: worker_up(client), what="worker up")
        for start in range(1, 201, 50):
            assert (await client.post("/ingest", json=batch(service, range(start, start + 50)))).status_code == 200
        await control(client, "crash-worker", 60_000)
        for start in range(201, 301, 50):
            assert (await client.post("/ingest", json=batch(service, range(start, start + 50)))).status_code == 200
        await wait_for(lambda: _worker_down(client), what="worker down")
        await control(client, "reset")
        await wait_durable(client, service, 300, timeout=30)
    seqs = seqs_of(isolated, service)
    assert seqs == list(range(1, 301))


async def _worker_down(client: httpx.AsyncClient) -> bool:
    workers = (await client.get("/metrics")).json()["workers"]
    return not any(w["alive"] for w in workers)


async def worker_up(client: httpx.AsyncClient) -> bool:
    """True once a worker has sent a heartbeat; before that none is listed at all."""
    workers = (await client.get("/metrics")).json()["workers"]
    return any(w["alive"] for w in workers)


async def test_retries_and_repeats(server: RunningServer, isolated: Isolated) -> None:
    service = "repeat-svc"
    async with server.client() as client:
        await client.post("/ingest", json=batch(service, range(1, 6)))
        second = (await client.post("/ingest", json=batch(service, range(1, 6)))).json()
        assert (second["ackTill"], second["missing"], second["duplicates"]) == (5, [], 5)

        overlap = (await client.post("/ingest", json=batch(service, range(4, 9), message="changed"))).json()
        assert overlap["ackTill"] == 8

        repeat = await client.post("/ingest", json={"service": service, "batch": [entry(9), entry(9), entry(10)]})
        assert repeat.json()["duplicates"] == 1

        conflict = await client.post("/ingest", json={"service": service, "batch": [
            entry(11, message="x"), entry(11, message="y")]})  # fmt: skip
        assert conflict.status_code == 200
        assert [c["seq"] for c in conflict.json()["conflicts"]] == [11]

        await control(client, "drop-network", 60_000)
        with pytest.raises(httpx.TransportError):
            await client.post("/ingest", json=batch(service, [12]))
        await control(client, "reset")
        again = await client.post("/ingest", json=batch(service, [12]))
        assert again.status_code == 200
        await wait_durable(client, service, 12)
    rows = dict(stored(isolated, service))
    assert sorted(rows) == list(range(1, 13))
    assert rows[4] == "m-4"
    assert rows[5] == "m-5"
    assert rows[11] == "x"
    counts = isolated.sql("SELECT seq, count(*) FROM logs GROUP BY seq HAVING count(*) > 1")
    assert counts == []


async def test_out_of_order_and_late(server: RunningServer, isolated: Isolated) -> None:
    service = "late-svc"
    async with server.client() as client:
        acks = []
        for seqs in ([1, 2, 3], [7, 8, 9], [4, 5, 6], [2], [12, 10, 11]):
            response = await client.post("/ingest", json=batch(service, seqs))
            assert response.status_code == 200
            acks.append(response.json())
        await wait_durable(client, service, 12)
    assert [a["ackTill"] for a in acks] == [3, 9, 9, 9, 12]
    assert [a["status"] for a in acks] == ["ok", "partial", "ok", "ok", "ok"]
    assert acks[1]["missing"] == [4, 5, 6]
    assert acks[1]["replay"]["queued"] == 3
    assert acks[3]["duplicates"] == 1
    assert seqs_of(isolated, service) == list(range(1, 13))
    replays = await wait_for(lambda: isolated.sql(
        "SELECT from_seq, to_seq, status FROM replay_requests WHERE service = %s AND status = 'completed'",
        (service,)), what="replay completed")  # fmt: skip
    assert replays == [(4, 6, "completed")]


async def test_giant_line_and_giant_body(server: RunningServer, isolated: Isolated) -> None:
    service = "giant-svc"
    async with server.client() as client:
        big = "x" * (2 * 1024 * 1024)
        first = await client.post("/ingest", json={"service": service, "batch": [
            entry(1), entry(2, message=big), entry(3)]})  # fmt: skip
        assert first.status_code == 200
        await client.post("/ingest", json=batch(service, [4]))

        payload = "p" * 2000
        huge = batch(service, range(5, 10005), message=payload)
        too_big = await client.post("/ingest", json=huge)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["field"] == "body"
        state = (await client.get("/metrics")).json()["services"][0]
        assert state["ackTill"] == 4
        for start in range(5, 10005, 1000):
            part = batch(service, range(start, start + 1000), message=payload)
            assert (await client.post("/ingest", json=part)).status_code == 200
        await wait_durable(client, service, 10004, timeout=60)
    row = isolated.sql("SELECT length(message), attrs FROM logs WHERE service = %s AND seq = 2", (service,))[0]
    assert row[0] == server.settings.max_message_bytes
    assert row[1] == {"_truncated_bytes": 2 * 1024 * 1024}
    assert isolated.sql("SELECT count(*) FROM logs WHERE service = %s", (service,))[0][0] == 10004


async def test_invalid_utf8_body(server: RunningServer, isolated: Isolated) -> None:
    service = "bytes-svc"
    raw = b'{"service": "bytes-svc", "batch": [{"seq": 1, "level": "info", "message": "bad \xff\xfe"}]}'
    async with server.client() as client:
        response = await client.post("/ingest", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_encoding"
        ok = await client.post("/ingest", json=batch(service, [1]))
        assert ok.status_code == 200
        await wait_durable(client, service, 1)
        listing = await client.get("/logs", params={"service": service})
        assert listing.json()["logs"][0]["seq"] == 1


WRONG_TYPES = [
    ("seq", {"seq": "1"}), ("seq", {"seq": -1}), ("seq", {"seq": 0}), ("seq", {"seq": 1.5}),
    ("seq", {"seq": True}), ("seq", {"seq": None}), ("seq", {"seq": 9223372036854775808}),
    ("level", {"level": 5}), ("message", {"message": 123}), ("message", {"message": []}),
]  # fmt: skip


@pytest.mark.parametrize(("field", "change"), WRONG_TYPES)
async def test_wrong_entry_types(server: RunningServer, isolated: Isolated, field: str, change: dict) -> None:  # type: ignore[type-arg]
    item = entry(1)
    item.update(change)
    async with server.client() as client:
        response = await client.post("/ingest", json={"service": "types-svc", "batch": [item]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == f"batch[0].{field}"
    assert isolated.sql("SELECT count(*) FROM logs")[0][0] == 0


async def test_missing_seq_rejected(server: RunningServer, isolated: Isolated) -> None:
    item = entry(1)
    del item["seq"]
    async with server.client() as client:
        response = await client.post("/ingest", json={"service": "types-svc", "batch": [item]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "batch[0].seq"


@pytest.mark.parametrize(("body", "field"), [
    ({"service": "", "batch": [entry(1)]}, "service"),
    ({"batch": [entry(1)]}, "service"),
    ({"service": "s" * 300, "batch": [entry(1)]}, "service"),
    ({"service": "svc", "batch": {}}, "batch"),
    ({"service": "svc", "batch": []}, "batch"),
    ([entry(1)], "body"),
])  # fmt: skip
async def test_wrong_request_shapes(server: RunningServer, isolated: Isolated, body: object, field: str) -> None:
    async with server.client() as client:
        response = await client.post("/ingest", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert isolated.sql("SELECT count(*) FROM logs")[0][0] == 0


SEARCH_ROWS = ["disk 100% full", "disk 1000 full", "user_id=7", "userXid=7", "O'Brien said \"hi\"", "C:\\tmp\\x"]


@pytest.mark.parametrize(("term", "expected"), [
    ("100%", ["disk 100% full"]), ("user_id", ["user_id=7"]), ("_", ["user_id=7"]), ("%", ["disk 100% full"]),
    ("O'Brien", ["O'Brien said \"hi\""]), ("\\", ["C:\\tmp\\x"]), ("' OR 1=1 --", []),
    ("DISK", ["disk 1000 full", "disk 100% full"]),
])  # fmt: skip
async def test_search_text_is_literal(server: RunningServer, isolated: Isolated, term: str, expected: list[str]) -> None:
    service = "search-svc"
    async with server.client() as client:
        body = {"service": service, "batch": [entry(i + 1, message=m) for i, m in enumerate(SEARCH_ROWS)]}
        assert (await client.post("/ingest", json=body)).status_code == 200
        await wait_durable(client, service, len(SEARCH_ROWS))
        response = await client.get("/logs", params={"service": service, "q": term})
    assert response.status_code == 200
    assert sorted(r["message"] for r in response.json()["logs"]) == sorted(expected)
