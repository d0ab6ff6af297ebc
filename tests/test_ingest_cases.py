"""Delivery failures seen in real log pipelines, replayed against a live server."""

from __future__ import annotations

from conftest import Isolated, RunningServer, batch, entry, wait_for


async def stored_seqs(isolated: Isolated, service: str) -> list[int]:
    rows = isolated.sql("SELECT seq FROM logs WHERE service = %s ORDER BY seq", (service,))
    return [row[0] for row in rows]


async def test_out_of_order_and_late_batches(server: RunningServer, isolated: Isolated) -> None:
    service = "late-svc"
    async with server.client() as client:
        acks = []
        for seqs in ([1, 2, 3], [7, 8, 9], [4, 5, 6], [2], [12, 10, 11]):
            response = await client.post("/ingest", json=batch(service, seqs))
            assert response.status_code == 200
            acks.append(response.json())
    assert [a["ackTill"] for a in acks] == [3, 9, 9, 9, 12]
    assert acks[0]["status"] == "ok"
    assert acks[1]["missing"] == [4, 5, 6]
    assert acks[1]["status"] == "partial"
    assert acks[1]["replay"]["queued"] == 3
    assert acks[2]["missing"] == []
    assert acks[2]["status"] == "ok"
    assert acks[3]["duplicates"] == 1
    assert acks[4]["status"] == "ok"
    await wait_for(lambda: stored_seqs(isolated, service), what="rows") 
    seqs = await wait_for(_all_stored(isolated, service, 12), what="12 rows")
    assert seqs == list(range(1, 13))
    replays = isolated.sql("SELECT from_seq, to_seq, status FROM replay_requests WHERE service = %s", (service,))
    await wait_for(lambda: isolated.sql("SELECT 1 FROM replay_requests WHERE status = 'completed'"), what="replay completed")


def _all_stored(isolated: Isolated, service: str, n: int):  # type: ignore[no-untyped-def]
    async def check() -> list[int] | None:
        seqs = await stored_seqs(isolated, service)
        return seqs if len(seqs) >= n else None

    return check
