"""Access control: ingest tokens per service, read and admin tokens, Socket.IO."""

from __future__ import annotations

import socketio
import pytest

from conftest import Isolated, batch, free_port, spawn, start_server, stop_server
from tracehub.auth import ADMIN, INGEST, READ, Principal, Tokens

TOKENS = Tokens({
    "adm-1": Principal(ADMIN),
    "read-1": Principal(READ),
    "ing-pay": Principal(INGEST, frozenset({"payment-service"})),
})  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def guarded(isolated: Isolated):  # type: ignore[no-untyped-def]
    from aiohttp import web

    from tracehub.node import open_backends
    from tracehub.server.app import create_app

    port = free_port()
    settings = isolated.settings(port=port)
    backends = await open_backends(settings)
    runner = web.AppRunner(create_app(backends, tokens=TOKENS))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await backends.close()


async def test_ingest_token_limited_to_its_services(guarded: str, isolated: Isolated) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=guarded) as client:
        ok = await client.post("/ingest", json=batch("payment-service", [1]), headers=bearer("ing-pay"))
        other = await client.post("/ingest", json=batch("auth-service", [1]), headers=bearer("ing-pay"))
        none = await client.post("/ingest", json=batch("payment-service", [2]))
        wrong = await client.post("/ingest", json=batch("payment-service", [2]), headers=bearer("nope"))
        read = await client.post("/ingest", json=batch("payment-service", [2]), headers=bearer("read-1"))
    assert ok.status_code == 200
    assert other.status_code == 403
    assert other.json()["error"]["field"] == "service"
    assert none.status_code == 401
    assert none.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert read.status_code == 403


@pytest.mark.parametrize(("method", "path", "token", "status"), [
    ("GET", "/logs", "read-1", 200), ("GET", "/logs", "ing-pay", 403), ("GET", "/logs", None, 401),
    ("GET", "/metrics", "read-1", 200), ("GET", "/metrics", "adm-1", 200),
    ("POST", "/metrics/control", "read-1", 403), ("POST", "/metrics/control", "adm-1", 200),
    ("POST", "/logs/replay", "read-1", 403), ("POST", "/logs/replay", "adm-1", 404),  # allowed; no such service
    ("GET", "/health", None, 200),
])  # fmt: skip
async def test_route_permissions(guarded: str, method: str, path: str, token: str | None, status: int) -> None:
    import httpx

    bodies = {"/metrics/control": {"action": "reset"}, "/logs/replay": {"service": "s", "fromSeq": 1, "toSeq": 2}}
    async with httpx.AsyncClient(base_url=guarded) as client:
        response = await client.request(method, path, json=bodies.get(path),
                                        headers=bearer(token) if token else {})  # fmt: skip
    assert response.status_code == status


async def test_socketio_requires_read_token(guarded: str) -> None:
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(guarded, transports=["websocket"], auth={"token": "ing-pay"})
    allowed = socketio.AsyncClient(reconnection=False)
    await allowed.connect(guarded, transports=["websocket"], auth={"token": "read-1"})
    assert allowed.connected
    await allowed.disconnect()


def test_tokens_loaded_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEHUB_ADMIN_TOKEN", "a1")
    monkeypatch.setenv("TRACEHUB_READ_TOKEN", "r1,r2")
    monkeypatch.setenv("TRACEHUB_INGEST_TOKENS", "i1:svc-a,svc-b;i2:*")
    tokens = Tokens.load()
    assert tokens.principal("Bearer a1") == Principal(ADMIN)
    assert tokens.principal("Bearer r2") == Principal(READ)
    assert tokens.principal("Bearer i1").can_ingest("svc-b")  # type: ignore[union-attr]
    assert not tokens.principal("Bearer i1").can_ingest("svc-c")  # type: ignore[union-attr]
    assert tokens.principal("Bearer i2").can_ingest("anything")  # type: ignore[union-attr]
    assert tokens.principal("Bearer zz") is None
    assert tokens.principal("Basic a1") is None


def test_serve_refuses_open_non_loopback(isolated: Isolated, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = isolated.env()
    for name in ("TRACEHUB_ADMIN_TOKEN", "TRACEHUB_READ_TOKEN", "TRACEHUB_INGEST_TOKENS", "TRACEHUB_TOKENS_FILE"):
        env.pop(name, None)
    process = spawn(["serve", "--host", "0.0.0.0", "--port", str(free_port())], env, tmp_path / "serve.log")
    code = process.wait(timeout=30)
    output = (tmp_path / "serve.log").read_text()
    assert code == 1
    assert "without access tokens" in output
    assert "Traceback" not in output
