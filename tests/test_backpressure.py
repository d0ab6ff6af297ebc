"""Overload: a full queue returns 429 and queues nothing, and clients that hold
connections open (slow uploads, idle sockets, Socket.IO clients that never read)
are cut within the bounds of ConnectionLimits."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
from aiohttp import web

from conftest import Isolated, RunningServer, batch, free_port, start_server, stop_server, wait_for
from test_ingest_cases import control, seqs_of, wait_durable
from tracehub.node import open_backends
from tracehub.server.app import ConnectionLimits, create_app

QUEUE_MAX_DEPTH = 5
LIMITS = ConnectionLimits(body_read_timeout_s=1.0, keepalive_timeout_s=2.0, sio_ping_interval_s=1.0,
                          sio_ping_timeout_s=1.0)  # fmt: skip
SLACK_S = 3.0  # scheduling slack on top of each bound


async def services(client: httpx.AsyncClient) -> dict[str, dict]:  # type: ignore[type-arg]
    body = (await client.get("/metrics")).json()
    return {s["service"]: {k: s[k] for k in ("base", "ackTill", "durableTill", "missingTotal")}
            for s in body["services"]}  # fmt: skip


async def queue_depth(client: httpx.AsyncClient) -> int:
    return (await client.get("/metrics")).json()["queue"]["depth"]


async def worker_alive(client: httpx.AsyncClient) -> bool:
    return any(w["alive"] for w in (await client.get("/metrics")).json()["workers"])


async def worker_down(client: httpx.AsyncClient) -> bool:
    return not await worker_alive(client)


async def test_full_queue_answers_429_and_queues_nothing(isolated: Isolated) -> None:
    running, runner = await start_server(isolated.settings(queue_max_depth=QUEUE_MAX_DEPTH))
    service = "bp-svc"
    try:
        async with running.client() as client:
            # Before its first heartbeat the worker is not listed, so it would look down.
            await wait_for(lambda: worker_alive(client), what="worker up")
            await control(client, "crash-worker", 60_000)
            await wait_for(lambda: worker_down(client), what="worker down")
            seq = 1
            for _ in range(QUEUE_MAX_DEPTH * 4):
                full = await client.post("/ingest", json=batch(service, range(seq, seq + 10)))
                if full.status_code != 200:
                    break
                seq += 10
            assert full.status_code == 429, full.text
            assert int(full.headers["Retry-After"]) >= 1
            assert full.json()["error"]["code"] == "queue_full"
            assert await queue_depth(client) == QUEUE_MAX_DEPTH

            state = await services(client)
            again = await client.post("/ingest", json=batch(service, range(seq, seq + 10)))
            other = await client.post("/ingest", json=batch("bp-other", [1]))
            assert again.status_code == 429
            assert other.status_code == 429
            assert await services(client) == state
            assert await queue_depth(client) == QUEUE_MAX_DEPTH

            await control(client, "reset")
            await wait_durable(client, service, seq - 1, timeout=30)
            retried = await client.post("/ingest", json=batch(service, range(seq, seq + 10)))
            assert retried.status_code == 200
            assert retried.json()["accepted"] == 10
            await wait_durable(client, service, seq + 9, timeout=30)
    finally:
        await stop_server(running, runner)
    assert seqs_of(isolated, service) == list(range(1, seq + 10))
    assert seqs_of(isolated, "bp-other") == []


@pytest.fixture
async def limited_server(isolated: Isolated) -> AsyncIterator[tuple[RunningServer, web.AppRunner]]:
    """A node with the short LIMITS, so each bound is reached within seconds."""
    port = free_port()
    settings = isolated.settings(port=port)
    backends = await open_backends(settings)
    runner = web.AppRunner(create_app(backends, limits=LIMITS), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    running = RunningServer(f"http://127.0.0.1:{port}", backends, settings)
    yield running, runner
    await stop_server(running, runner)


def open_connections(runner: web.AppRunner, local_ports: set[int]) -> int:
    """Count the server's connections whose client end is one of local_ports."""
    assert runner.server is not None
    peers = [handler.transport.get_extra_info("peername") for handler in runner.server.connections
             if handler.transport is not None]  # fmt: skip
    return sum(1 for peer in peers if peer and peer[1] in local_ports)


async def test_slow_upload_gets_408(limited_server: tuple[RunningServer, web.AppRunner]) -> None:
    running, _ = limited_server
    body = batch("slow-svc", [1])
    payload = httpx.Request("POST", "/", json=body).content
    reader, writer = await asyncio.open_connection("127.0.0.1", running.settings.port)
    writer.write(b"POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(payload))  # fmt: skip
    started = time.monotonic()

    async def trickle() -> None:
        for byte in payload[:40]:  # 40 bytes at 5 a second: 8 s, far past the 1 s bound
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    try:
        status_line = await asyncio.wait_for(reader.readline(), LIMITS.body_read_timeout_s + SLACK_S)
        elapsed = time.monotonic() - started
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        sender.cancel()
        writer.transport.abort()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert elapsed < LIMITS.body_read_timeout_s + SLACK_S
    assert b"application/json" in head
    async with running.client() as client:
        assert (await client.post("/ingest", json=batch("slow-svc", [1]))).status_code == 200


async def test_idle_connections_closed_and_service_goes_on(limited_server: tuple[RunningServer, web.AppRunner]) -> None:
    running, runner = limited_server
    idle = []
    for index in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.settings.port)
        if index % 2:
            writer.write(b"GET /health HTTP/1.1\r\nHost: ")  # half a request, never finished
        idle.append((reader, writer))
    ports = {w.get_extra_info("sockname")[1] for _, w in idle}
    await wait_for(lambda: open_connections(runner, ports) == 200, what="200 idle connections open")

    async with running.client() as client:
        started = time.monotonic()
        assert (await client.post("/ingest", json=batch("idle-svc", [1]))).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert time.monotonic() - started < 2.0

    await wait_for(lambda: open_connections(runner, ports) == 0, timeout=LIMITS.keepalive_timeout_s + SLACK_S,
                   what="idle connections closed by the server")  # fmt: skip
    for _, writer in idle:
        writer.transport.abort()


def websocket_frame(text: str) -> bytes:
    """Return one masked WebSocket text frame, as a client must send it."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def connect_deaf_socketio_client(port: int) -> socket.socket:
    """Open a Socket.IO connection over WebSocket, join the default namespace, and
    return the socket without ever reading from it again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(websocket_frame("40"))
    return sock


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_socketio_client_that_never_reads_is_cut(
    limited_server: tuple[RunningServer, web.AppRunner], isolated: Isolated
) -> None:
    running, runner = limited_server
    sock = await asyncio.to_thread(connect_deaf_socketio_client, running.settings.port)
    port = sock.getsockname()[1]
    rss_before = rss_kib()
    bound = LIMITS.sio_ping_interval_s + LIMITS.sio_ping_timeout_s + SLACK_S
    try:
        await wait_for(lambda: open_connections(runner, {port}) == 1, what="Socket.IO connection open")
        started = time.monotonic()
        async with running.client() as client:
            seq = 1
            while open_connections(runner, {port}) and time.monotonic() - started < bound:
                flood = batch("deaf-svc", range(seq, seq + 200), message="x" * 400)  # log:new events
                assert (await client.post("/ingest", json=flood)).status_code == 200
                seq += 200
        elapsed = time.monotonic() - started
        assert open_connections(runner, {port}) == 0, f"still connected after {elapsed:.1f}s"
        grown_kib = rss_kib() - rss_before
        assert grown_kib < 64 * 1024, f"RSS grew by {grown_kib} KiB"
        async with running.client() as client:
            assert (await client.get("/health")).status_code == 200
    finally:
        sock.close()
