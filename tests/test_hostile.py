"""Hostile input: every malformed, oversized or encoded request is rejected with a
JSON error naming the field, changes nothing, and leaves the server serving.

Rejection cases run against a node without a worker, so the stream length is an
exact count of queued batches. The property test keeps the worker down with the
crash-worker fault while it posts, then lets it store everything and checks that
each service has exactly the rows its ACKs accepted.
"""

from __future__ import annotations

import base64
import gzip
import json
import signal
import uuid
import zlib
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Isolated, RunningServer, ThreadedServer, batch, entry, free_port, poll, spawn
from conftest import start_server, stop_server, wait_http
from test_ingest_cases import wait_durable

MAX_ENTRIES = 50
MAX_BODY = 256 * 1024
MAX_MESSAGE = 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def quiet_server(isolated: Isolated) -> AsyncIterator[RunningServer]:
    """A node with small limits and no worker: queued batches stay in the stream."""
    settings = isolated.settings(max_batch_entries=MAX_ENTRIES, max_body_bytes=MAX_BODY,
                                 max_message_bytes=MAX_MESSAGE)  # fmt: skip
    running, runner = await start_server(settings, run_worker=False)
    yield running
    await stop_server(running, runner)


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


ACK_FIELDS = ("base", "ackTill", "durableTill", "missingTotal", "lost", "epoch")


async def service_state(client: httpx.AsyncClient, service: str) -> dict[str, Any] | None:
    """Return the ACK figures of service from GET /metrics (rates left out)."""
    body = (await client.get("/metrics")).json()
    state = next((s for s in body["services"] if s["service"] == service), None)
    return {name: state[name] for name in ACK_FIELDS} if state else None


async def queue_depth(client: httpx.AsyncClient) -> int:
    return (await client.get("/metrics")).json()["queue"]["depth"]


async def assert_rejected_without_effect(
    server: RunningServer, isolated: Isolated, service: str, send: Callable[[httpx.AsyncClient], Any],
    status: int, field: str,
) -> dict[str, Any]:  # fmt: skip
    """Prime service with seqs 1-3, send the hostile request, check that it was
    rejected as expected and changed nothing, then check that seq 4 is accepted."""
    async with server.client() as client:
        primed = await client.post("/ingest", json=batch(service, [1, 2, 3]))
        assert primed.status_code == 200
        state_before = await service_state(client, service)
        depth_before = await queue_depth(client)

        response = await send(client)
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        error = response.json()["error"]
        assert error["field"] == field
        assert error["message"]

        assert await service_state(client, service) == state_before
        assert await queue_depth(client) == depth_before
        assert isolated.sql("SELECT count(*) FROM logs")[0][0] == 0

        after = await client.post("/ingest", json=batch(service, [4]))
        assert after.status_code == 200
        assert after.json()["accepted"] == 1
        assert after.json()["ackTill"] == 4
        assert await queue_depth(client) == depth_before + 1
    return error


def post_bytes(content: bytes, headers: dict[str, str] | None = None) -> Callable[[httpx.AsyncClient], Any]:
    return lambda client: client.post("/ingest", content=content, headers=JSON if headers is None else headers)


def post_entry(service: str, **fields: Any) -> Callable[[httpx.AsyncClient], Any]:
    item = entry(5)
    item.update(fields)
    for name in [k for k, v in fields.items() if v is DROP]:
        del item[name]
    return post_bytes(raw({"service": service, "batch": [item]}))


DROP = object()
SVC = "hostile-svc"

# (case id, body builder taking the service name, expected status, expected field)
BODY_CASES: list[tuple[str, Callable[[str], bytes], int, str]] = [
    ("invalid json", lambda s: b'{"service": "' + s.encode() + b'", "batch": [}', 400, "body"),
    ("truncated body", lambda s: raw(batch(s, [5, 6]))[:-7], 400, "body"),
    ("empty body", lambda s: b"", 400, "body"),
    ("invalid escape", lambda s: b'{"service": "' + s.encode() + b'", "batch": [{"seq": 5, "message": "\\x"}]}',
     400, "body"),
    ("invalid utf-8", lambda s: raw(batch(s, [5]))[:-3] + b"\xff\xfe]}", 400, "body"),
    ("array body", lambda s: raw([entry(5)]), 400, "body"),
    ("string body", lambda s: raw("hello"), 400, "body"),
    ("null body", lambda s: b"null", 400, "body"),
    ("number body", lambda s: b"42", 400, "body"),
    ("missing service", lambda s: raw({"batch": [entry(5)]}), 400, "service"),
    ("empty service", lambda s: raw({"service": "", "batch": [entry(5)]}), 400, "service"),
    ("service with space", lambda s: raw({"service": "a b", "batch": [entry(5)]}), 400, "service"),
    ("service with slash", lambda s: raw({"service": "a/../b", "batch": [entry(5)]}), 400, "service"),
    ("service not ascii", lambda s: raw({"service": "s\u00e9rvice", "batch": [entry(5)]}), 400, "service"),
    ("service with nul", lambda s: raw({"service": "svc\u0000", "batch": [entry(5)]}), 400, "service"),
    ("service too long", lambda s: raw({"service": "s" * 129, "batch": [entry(5)]}), 400, "service"),
    ("service number", lambda s: raw({"service": 7, "batch": [entry(5)]}), 400, "service"),
    ("missing batch", lambda s: raw({"service": s}), 400, "batch"),
    ("empty batch", lambda s: raw({"service": s, "batch": []}), 400, "batch"),
    ("batch object", lambda s: raw({"service": s, "batch": {"seq": 5}}), 400, "batch"),
    ("batch string", lambda s: raw({"service": s, "batch": "5"}), 400, "batch"),
    ("epoch object", lambda s: raw({"service": s, "epoch": {}, "batch": [entry(5)]}), 400, "epoch"),
    ("batch over entry limit", lambda s: raw(batch(s, range(5, 5 + MAX_ENTRIES + 1))), 413, "batch"),
    ("body over byte limit", lambda s: raw(batch(s, [5], message="x" * MAX_BODY)), 413, "body"),
    ("nesting beyond the parser", lambda s: raw(batch(s, [5]))[:-2] + b', "deep": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}]}", 400, "body"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "status", "field"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
async def test_unusable_body_rejected(
    quiet_server: RunningServer, isolated: Isolated, build: Callable[[str], bytes], status: int, field: str
) -> None:
    await assert_rejected_without_effect(quiet_server, isolated, SVC, post_bytes(build(SVC)), status, field)


DEEP = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}
ENTRY_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("seq string", {"seq": "5"}, "seq"), ("seq float", {"seq": 5.0}, "seq"), ("seq fraction", {"seq": 5.5}, "seq"),
    ("seq bool", {"seq": True}, "seq"), ("seq null", {"seq": None}, "seq"), ("seq zero", {"seq": 0}, "seq"),
    ("seq negative", {"seq": -5}, "seq"), ("seq 2^63", {"seq": 2**63}, "seq"), ("seq 2^64", {"seq": 2**64}, "seq"),
    ("seq huge", {"seq": 10**40}, "seq"), ("seq missing", {"seq": DROP}, "seq"),
    ("message missing", {"message": DROP}, "message"), ("message number", {"message": 5}, "message"),
    ("message null", {"message": None}, "message"), ("message object", {"message": {"a": 1}}, "message"),
    ("message lone surrogate", {"message": "a\ud800b"}, "message"),
    ("level unknown", {"level": "loud"}, "level"), ("level missing", {"level": DROP}, "level"),
    ("level number", {"level": 3}, "level"), ("level empty", {"level": ""}, "level"),
    ("request_id number", {"request_id": 5}, "request_id"), ("request_id long", {"request_id": "r" * 257}, "request_id"),
    ("ts unparseable", {"ts": "yesterday at noon"}, "ts"), ("ts without zone", {"ts": "2026-01-15T10:30:00"}, "ts"),
    ("ts far future", {"ts": "9999-12-31T23:59:59Z"}, "ts"), ("ts far past", {"ts": "1900-01-01T00:00:00Z"}, "ts"),
    ("ts epoch negative", {"ts": -86400}, "ts"), ("ts epoch huge", {"ts": 1e300}, "ts"), ("ts bool", {"ts": True}, "ts"),
    ("ts object", {"ts": {"at": 1}}, "ts"),
    ("attrs too deep", {"extra": DEEP}, "attrs"), ("attrs too big", {"blob": "b" * (17 * 1024)}, "attrs"),
]  # fmt: skip


OVERFLOWING_TS = pytest.param({"ts": "0001-01-01T00:00:00+14:00"}, "ts", id="ts before year 1 in utc")


@pytest.mark.parametrize(("change", "field"), [pytest.param(*c[1:], id=c[0]) for c in ENTRY_CASES] + [OVERFLOWING_TS])
async def test_invalid_entry_rejected(
    quiet_server: RunningServer, isolated: Isolated, change: dict[str, Any], field: str
) -> None:
    error = await assert_rejected_without_effect(quiet_server, isolated, SVC, post_entry(SVC, **change), 422,
                                                 f"batch[0].{field}")  # fmt: skip
    assert error["code"] == "invalid_entries"


HEADER_CASES: list[tuple[str, dict[str, str], int, str]] = [
    ("content type text", {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("content type form", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ("content type missing", {}, 415, "Content-Type"),
    ("content encoding br", {**JSON, "Content-Encoding": "br"}, 415, "Content-Encoding"),
    ("content encoding unknown", {**JSON, "Content-Encoding": "x-rot13"}, 415, "Content-Encoding"),
    ("gzip header on plain body", {**JSON, "Content-Encoding": "gzip"}, 400, "Content-Encoding"),
    ("deflate header on plain body", {**JSON, "Content-Encoding": "deflate"}, 400, "Content-Encoding"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "status", "field"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
async def test_wrong_headers_rejected(
    quiet_server: RunningServer, isolated: Isolated, headers: dict[str, str], status: int, field: str
) -> None:
    send = post_bytes(raw(batch(SVC, [5])), headers)
    await assert_rejected_without_effect(quiet_server, isolated, SVC, send, status, field)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_body_accepted(quiet_server: RunningServer, encoding: str) -> None:
    body = raw(batch(SVC, range(1, 11)))
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    async with quiet_server.client() as client:
        response = await client.post("/ingest", content=packed, headers={**JSON, "Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 10


async def test_compressed_body_over_limit_rejected(quiet_server: RunningServer, isolated: Isolated) -> None:
    body = raw(batch(SVC, range(5, 5 + MAX_ENTRIES), message="z" * 8000))
    assert len(body) > MAX_BODY
    packed = gzip.compress(body)
    assert len(packed) < MAX_BODY
    send = post_bytes(packed, {**JSON, "Content-Encoding": "gzip"})
    error = await assert_rejected_without_effect(quiet_server, isolated, SVC, send, 413, "body")
    assert str(MAX_BODY) in error["message"]


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def zip_bomb(inflated_bytes: int) -> bytes:
    """Return gzip data of about inflated_bytes / 1000 that inflates to a JSON
    object of inflated_bytes (a message of zeros)."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = b'{"service": "bomb-svc", "batch": [{"seq": 1, "level": "info", "message": "'
    parts = [stream.compress(head)]
    chunk = b"0" * (1 << 20)
    for _ in range(inflated_bytes // len(chunk)):
        parts.append(stream.compress(chunk))
    parts.append(stream.compress(b'"}]}'))
    parts.append(stream.flush())
    return b"".join(parts)


@pytest.fixture
def serve_process(isolated: Isolated, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A `tracehub serve --no-worker` process with default limits, and its pid."""
    port = free_port()
    process = spawn(["serve", "--no-worker", "--port", str(port)], isolated.env(), tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except Exception:  # noqa: BLE001 - escalate whatever the wait raised
            process.kill()


def test_zip_bomb_rejected_without_inflating(serve_process: tuple[str, int], isolated: Isolated) -> None:
    url, pid = serve_process
    bomb = zip_bomb(100 * 1024 * 1024)
    assert len(bomb) < 200 * 1024
    before = peak_rss_kib(pid)
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/ingest", content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
        assert response.status_code == 413
        error = response.json()["error"]
        assert error["field"] == "body"
        assert "8388608" in error["message"]
        assert "decompression" in error["message"]
        grown_kib = peak_rss_kib(pid) - before
        assert grown_kib < 48 * 1024, f"the server's peak RSS grew by {grown_kib} KiB"
        after = client.post("/ingest", json=batch("bomb-svc", [1]))
        assert after.status_code == 200
        assert after.json()["accepted"] == 1


async def test_long_message_cut_on_character_boundary(isolated: Isolated) -> None:
    running, runner = await start_server(isolated.settings(max_message_bytes=MAX_MESSAGE))
    service = "long-svc"
    message = "\u00e9" * MAX_MESSAGE  # two bytes each in UTF-8
    try:
        async with running.client() as client:
            body = {"service": service, "batch": [entry(1, message=message), entry(2, message="a\u0000b")]}
            response = await client.post("/ingest", json=body)
            assert response.status_code == 200
            assert response.json()["accepted"] == 2
            await wait_durable(client, service, 2)
    finally:
        await stop_server(running, runner)
    rows = {seq: (message, attrs) for seq, message, attrs in isolated.sql(
        "SELECT seq, message, attrs FROM logs WHERE service = %s", (service,))}  # fmt: skip
    cut, cut_attrs = rows[1]
    assert cut == "\u00e9" * (MAX_MESSAGE // 2)
    assert cut_attrs == {"_truncated_bytes": 2 * MAX_MESSAGE}
    replaced, replaced_attrs = rows[2]
    assert replaced == "a\ufffdb"
    assert replaced_attrs == {"_replaced_nul": True}


@pytest.mark.parametrize("attrs", [{"note": "a\u0000b"}, {"a\u0000b": 1}, {"deep": ["\u0000"]}])
async def test_nul_in_attrs_is_stored_or_rejected(server: RunningServer, isolated: Isolated,
                                                  attrs: dict[str, Any]) -> None:  # fmt: skip
    service = "nul-attrs-svc"
    async with server.client() as client:
        response = await client.post("/ingest", json={"service": service, "batch": [entry(1, **attrs)]})
        assert response.status_code in (200, 422)
        if response.status_code == 200:
            await wait_durable(client, service, 1, timeout=10)
    stored = isolated.sql("SELECT count(*) FROM logs WHERE service = %s", (service,))[0][0]
    assert stored == (1 if response.status_code == 200 else 0)


async def test_attrs_beyond_64_bits_listed(server: RunningServer) -> None:
    """jsonb reads 1e20 back as an integer that orjson cannot write."""
    service = "bigint-svc"
    async with server.client() as client:
        response = await client.post("/ingest", json={"service": service, "batch": [entry(1, big=1e20)]})
        assert response.status_code == 200
        await wait_durable(client, service, 1)
        listing = await client.get("/logs", params={"service": service})
    assert listing.status_code == 200
    assert listing.json()["logs"][0]["attrs"] == {"big": 10**20}


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


QUERY_CASES: list[tuple[str, dict[str, str], str]] = [
    ("from text", {"from": "yesterday"}, "from"), ("from no zone", {"from": "2026-01-01T00:00:00"}, "from"),
    ("from superscript digit", {"from": "\u00b2"}, "from"), ("to huge number", {"to": "9" * 5000}, "to"),
    ("to year 10000", {"to": "10000-01-01T00:00:00Z"}, "to"),
    ("level unknown", {"level": "info,loud"}, "level"), ("level number", {"level": "3"}, "level"),
    ("limit zero", {"limit": "0"}, "limit"), ("limit over max", {"limit": "1001"}, "limit"),
    ("limit negative", {"limit": "-1"}, "limit"), ("limit text", {"limit": "ten"}, "limit"),
    ("limit superscript digit", {"limit": "\u00b2"}, "limit"), ("limit huge", {"limit": "9" * 5000}, "limit"),
    ("limit float", {"limit": "1.5"}, "limit"), ("cursor garbage", {"cursor": "not-a-cursor"}, "cursor"),
    ("cursor year out of range", {"cursor": cursor_of("9e15:1")}, "cursor"),
    ("cursor time_t overflow", {"cursor": cursor_of("1e20:1")}, "cursor"),
    ("cursor os range", {"cursor": cursor_of("1e18:1")}, "cursor"),
    ("from year 1 east of utc", {"from": "0001-01-01T00:00:00+14:00"}, "from"),
    ("service invalid", {"service": "a b"}, "service"), ("q with nul", {"q": "a\u0000b"}, "q"),
    ("q too long", {"q": "q" * 1001}, "q"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "field"), [c[1:] for c in QUERY_CASES], ids=[c[0] for c in QUERY_CASES])
async def test_bad_log_query_rejected(quiet_server: RunningServer, params: dict[str, str], field: str) -> None:
    async with quiet_server.client() as client:
        response = await client.get("/logs", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
        assert (await client.get("/logs")).status_code == 200


async def test_replay_limit_rejected(quiet_server: RunningServer) -> None:
    async with quiet_server.client() as client:
        for limit in ("0", "1001", "\u00b2", "9" * 5000):
            response = await client.get("/logs/replay", params={"limit": limit})
            assert response.status_code == 400, limit
            assert response.json()["error"]["field"] == "limit"


# --- property test -------------------------------------------------------------------

# NOTE: text without NUL, since a NUL in attrs is accepted but never stored
# (see test_nul_in_attrs_is_stored_or_rejected).
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=30)
JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | TEXT
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)  # fmt: skip
# Each field is valid in most examples, so that batches mixing valid and invalid
# entries (partly accepted) are generated as well as wholly invalid ones.
VALID_FIELDS = {
    "seq": st.integers(1, 40), "level": st.sampled_from(["info", "WARN", "warning", "critical", "trace"]),
    "message": st.text(max_size=50), "request_id": st.text(max_size=20),
    "ts": st.sampled_from(["2026-12-04T12:00:00Z", "2026-12-04T12:00:00.123456+05:30", "1764849600", "1764849600123"]),
}  # fmt: skip
HOSTILE_FIELDS = {
    "seq": st.integers(-(2**64), 2**64) | JSON_VALUES,
    "level": st.sampled_from(["loud", "", "INFO ", "warn\u0000"]) | JSON_VALUES,
    "message": st.binary(max_size=30).map(lambda b: b.decode("latin-1") + "\ud800") | JSON_VALUES,
    "request_id": st.text(min_size=257, max_size=300) | JSON_VALUES,
    # NOTE: "0001-01-01T00:00:00+14:00" is left out: it fails with 500 (see OVERFLOWING_TS).
    "ts": st.sampled_from(["9999-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "x", "2026-12-04"]) | JSON_VALUES,
}  # fmt: skip


@st.composite
def hostile_entries(draw: st.DrawFn) -> Any:
    if not draw(st.integers(0, 9)):
        return draw(JSON_VALUES)
    item = {}
    for name, valid in VALID_FIELDS.items():
        mode = draw(st.integers(0, 9))
        if mode >= 3:
            item[name] = draw(valid)
        elif mode >= 1:
            item[name] = draw(HOSTILE_FIELDS[name])
    item.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3)))
    return item


@st.composite
def hostile_requests(draw: st.DrawFn, service: str) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["batch", "batch", "batch", "json", "bytes", "gzip"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), JSON
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode(), JSON
    body: dict[str, Any] = {"service": service if draw(st.integers(0, 5)) else draw(JSON_VALUES),
                            "batch": draw(st.lists(hostile_entries(), max_size=8) if draw(st.integers(0, 5)) else JSON_VALUES)}  # fmt: skip
    if draw(st.booleans()):
        body["epoch"] = draw(st.text(max_size=5) | JSON_VALUES)
    encoded = json.dumps(body).encode()
    if kind == "gzip":
        cut = draw(st.integers(0, 3))
        packed = gzip.compress(encoded)
        return (packed[: -cut] if cut else packed), {**JSON, "Content-Encoding": "gzip"}
    return encoded, JSON


class Ledger:
    """The rows each service must end with: the sum of its accepted counts."""

    def __init__(self) -> None:
        self.accepted: dict[str, int] = {}
        self.statuses: dict[int, int] = {}


def stream_length(isolated: Isolated) -> int:
    client = isolated.redis()
    try:
        return int(client.xlen(f"{isolated.prefix}queue:logs"))
    finally:
        client.close()


def ack_record(isolated: Isolated, service: str) -> dict[bytes, bytes]:
    client = isolated.redis()
    try:
        return client.hgetall(f"{isolated.prefix}ack:{service}")
    finally:
        client.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def post_hostile_request(client: httpx.Client, isolated: Isolated, ledger: Ledger, data: st.DataObject) -> None:
    """Post one generated request for a fresh service; check it did all or nothing."""
    service = f"hyp-{uuid.uuid4().hex[:10]}"
    content, headers = data.draw(hostile_requests(service), label="request")
    depth_before = stream_length(isolated)

    response = client.post("/ingest", content=content, headers=headers)
    ledger.statuses[response.status_code] = ledger.statuses.get(response.status_code, 0) + 1
    assert response.status_code < 500, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    if response.status_code != 200:
        assert "error" in response.json()
        assert stream_length(isolated) == depth_before
        assert ack_record(isolated, service) == {}
        return
    accepted = response.json()["accepted"]
    assert stream_length(isolated) == depth_before + (1 if accepted else 0)
    ledger.accepted[service] = accepted


def worker_alive(client: httpx.Client) -> bool:
    return any(w["alive"] for w in client.get("/metrics").json()["workers"])


def test_hostile_batches_never_5xx_or_partial(threaded_server: ThreadedServer, isolated: Isolated) -> None:
    """Generated requests with the worker held down, then every accepted entry
    stored exactly once and nothing of a rejected one."""
    ledger = Ledger()
    with httpx.Client(base_url=threaded_server.url, timeout=30) as client:
        # Before its first heartbeat the worker is not listed, so it would look down.
        poll(lambda: worker_alive(client), what="worker up")
        crash = client.post("/metrics/control", json={"action": "crash-worker", "durationMs": 600_000})
        assert crash.status_code == 200
        poll(lambda: not worker_alive(client), what="worker down")

        post_hostile_request(client, isolated, ledger)

        assert client.post("/metrics/control", json={"action": "reset"}).status_code == 200
        poll(lambda: stream_length(isolated) == 0, timeout=60, what="stream drained")
    rows = dict(isolated.sql("SELECT service, count(*) FROM logs GROUP BY service"))
    expected = {service: n for service, n in ledger.accepted.items() if n}
    assert rows == expected
    assert ledger.statuses.get(200, 0) > 0
    assert sum(n for status, n in ledger.statuses.items() if status >= 400) > 0
