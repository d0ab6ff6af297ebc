"""Storage on real PostgreSQL: exactly-once writes, escaping, queries."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import Isolated
from tracehub.protocol import Entry
from tracehub.storage import LogQuery, Store, format_rows

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def entries(seqs, message: str = "m") -> list[Entry]:  # type: ignore[no-untyped-def]
    return [Entry(s, "info", f"{message}-{s}", None, NOW, None) for s in seqs]


@pytest.fixture
async def store(isolated: Isolated):  # type: ignore[no-untyped-def]
    opened = Store(isolated.database_url)
    await opened.open()
    yield opened
    await opened.close()


async def test_fresh_write_falls_back_when_rows_exist(store: Store, isolated: Isolated) -> None:
    first, _ = await store.write_batch(format_rows("svc", entries([1, 2]), NOW), [], [], fresh=True)
    again, _ = await store.write_batch(format_rows("svc", entries([2, 3], "new"), NOW), [], [], fresh=True)
    assert first == 2
    assert again == 1
    rows = isolated.sql("SELECT seq, message FROM logs ORDER BY seq")
    assert rows == [(1, "m-1"), (2, "m-2"), (3, "new-3")]


async def test_copy_escapes_round_trip(store: Store, isolated: Isolated) -> None:
    tricky = "tab\there\nnew line\\backslash\rcarriage \\N end"
    row = Entry(1, "error", tricky, "req\t1", NOW, {"k": "v\tw\\n"})
    await store.write_batch(format_rows("svc", [row], NOW), [], [])
    stored = isolated.sql("SELECT message, request_id, attrs FROM logs")[0]
    assert stored == (tricky, "req\t1", {"k": "v\tw\\n"})


async def test_ts_text_stored_as_sent(store: Store, isolated: Isolated) -> None:
    row = Entry(1, "info", "m", None, NOW, None, "2026-01-15T12:30:00.25+02:00")
    await store.write_batch(format_rows("svc", [row], NOW), [], [])
    stored = isolated.sql("SELECT ts FROM logs")[0][0]
    assert stored == datetime(2026, 1, 15, 10, 30, 0, 250000, tzinfo=timezone.utc)


async def test_query_cursor_pages_without_overlap(store: Store) -> None:
    await store.write_batch(format_rows("svc", entries(range(1, 26)), NOW), [], [])
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        rows = await store.query_logs(LogQuery(service="svc", cursor=cursor, limit=10))
        seen += [r["seq"] for r in rows]
        if len(rows) < 10:
            break
        cursor = (rows[-1]["ts"], rows[-1]["id"])
    assert sorted(seen) == list(range(1, 26))
    assert len(seen) == len(set(seen))


async def test_slow_query_cancelled(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracehub.storage as storage_module
    from tracehub.storage import QueryTimeout

    await store.write_batch(format_rows("svc", entries(range(1, 50_001)), NOW), [], [])
    monkeypatch.setattr(storage_module, "QUERY_TIMEOUT_MS", 1)
    with pytest.raises(QueryTimeout):
        await store.query_logs(LogQuery(text="no row says this", limit=10))


async def test_slow_search_answers_504(server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import tracehub.storage as storage_module

    await server.backends.store.write_batch(format_rows("svc", entries(range(1, 50_001)), NOW), [], [])
    monkeypatch.setattr(storage_module, "QUERY_TIMEOUT_MS", 1)
    async with server.client() as client:
        response = await client.get("/logs", params={"q": "no row says this"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "query_timeout"
