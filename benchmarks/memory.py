"""Resident memory of the serve and worker processes (peak of any one process).

Two situations: the committed-throughput runs (their samples, or runs of the
first target configuration when the throughput measurement was skipped), and a
node with 200 idle and 5 slow Socket.IO clients while the live-view load runs.
Idle clients speak Engine.IO over a websocket and reply to pings. Slow clients
open the websocket with a 4 KiB receive buffer, join the namespace, and never read
again, so the server's writes to them back up.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import socket
from typing import Any

import aiohttp

from benchmarks.harness import (
    Bench,
    RssSampler,
    TraceHub,
    running_tracehub,
    start_loadgens,
    wait_until,
)
from benchmarks.results import Figure, Target
from benchmarks.throughput import Config, RunOutcome, run_once

log = logging.getLogger(__name__)

SECTION = "8 memory"
TARGET_MB = 300.0
WORKERS = 2
SLOW_RECEIVE_BUFFER = 4096
CONNECT_TIMEOUT_S = 10.0
JOIN_MESSAGES = 1000
# Clients connect in waves: a node replies to every Socket.IO connect with a metrics
# snapshot read from Redis, and about 100 connects at once exhaust its Redis pool.
CONNECT_WAVE = 25


# --- clients ------------------------------------------------------------------------


async def idle_client(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, joined: list[int]
) -> None:
    """Join the default namespace, reply to pings, and discard every event until stop."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with session.ws_connect(ws_url, timeout=CONNECT_TIMEOUT_S) as ws:
        await ws.receive()  # the Engine.IO open packet
        await ws.send_str("40")
        for _ in range(
            JOIN_MESSAGES
        ):  # the server may emit events before its "40" answer
            answer = await ws.receive(timeout=CONNECT_TIMEOUT_S)
            if answer.type != aiohttp.WSMsgType.TEXT:
                return
            if answer.data.startswith("40"):
                joined.append(1)
                break
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.receive(), timeout=0.5)
            except TimeoutError:
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            if message.data == "2":
                await ws.send_str("3")


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def slow_client(port: int) -> socket.socket:
    """Open a websocket by hand, join the namespace, and return the socket unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RECEIVE_BUFFER)
    sock.settimeout(CONNECT_TIMEOUT_S)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer and len(answer) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(f"websocket upgrade failed: {answer[:200]!r}")
    sock.sendall(masked_text_frame("40"))
    return sock


async def all_joined(joined: list[int], idle: list[asyncio.Task[None]]) -> bool:
    """Return True once every idle client joined; raise when one of them failed."""
    failed = [
        t for t in idle if t.done() and (t.cancelled() or t.exception() is not None)
    ]
    if failed:
        raise RuntimeError(
            f"{len(failed)} idle clients failed: {failed[0].exception()!r}"
        )
    return len(joined) == len(idle)


# --- runs ---------------------------------------------------------------------------


async def clients_run(
    bench: Bench, hub: TraceHub, options: dict[str, Any]
) -> dict[str, float]:
    """Return peak RSS by role with the clients connected and the live load running."""
    stop = asyncio.Event()
    port = hub.ports[0]
    slow = [
        await asyncio.to_thread(slow_client, port)
        for _ in range(options["slow_clients"])
    ]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        joined: list[int] = []
        idle: list[asyncio.Task[None]] = []
        try:
            for _ in range(0, options["idle_clients"], CONNECT_WAVE):
                wave = min(CONNECT_WAVE, options["idle_clients"] - len(idle))
                idle += [
                    asyncio.create_task(idle_client(session, hub.url, stop, joined))
                    for _ in range(wave)
                ]
                await wait_until(
                    lambda idle=idle: all_joined(joined, idle),
                    CONNECT_TIMEOUT_S,
                    f"{len(idle)} idle clients to join",
                )
            with RssSampler(hub.pids()) as sampler:
                prefix = f"mem-{secrets.token_hex(3)}-"
                spec = {
                    "mode": "open",
                    "urls": [f"{hub.url}/ingest"],
                    "batch": 100,
                    "services": [f"{prefix}{i:02d}" for i in range(10)],
                    "rate": options["live_rate"],
                    "duration_s": options["memory_s"],
                    "deadline_s": 60.0,
                }
                generators, _ = await start_loadgens(bench, [spec])
                await generators[0].result(options["memory_s"] + 90)
            await all_joined(joined, idle)
        finally:
            stop.set()
            await asyncio.gather(*idle, return_exceptions=True)
            for sock in slow:
                sock.close()
    return dict(sampler.peak_mb)


async def throughput_rss(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[dict[str, float]]:
    """Return the peak RSS by role of each run of the first target throughput configuration."""
    throughput = shared.get("throughput")
    if throughput:
        for config in throughput["configs"]:
            if config.has_target:
                outcomes: list[RunOutcome] = throughput["outcomes"][config.label]
                return [o.rss_mb for o in outcomes]
    config = Config(30, 1000, WORKERS)
    peaks = []
    async with running_tracehub(bench, workers=WORKERS) as hub:
        for _ in range(bench.runs):
            outcome = await run_once(
                bench, hub, config, options["events"], options["processes"]
            )
            peaks.append(outcome.rss_mb)
            await hub.reset()
    return peaks


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    loaded = await throughput_rss(bench, options, shared)
    with_clients = []
    async with running_tracehub(bench, workers=WORKERS) as hub:
        for _ in range(bench.runs):
            with_clients.append(await clients_run(bench, hub, options))
            await hub.reset()
    clients = (
        f"{options['idle_clients']} idle + {options['slow_clients']} slow Socket.IO clients, "
        f"{options['live_rate']:,} events/s for {options['memory_s']:.0f}s"
    )
    target = Target("<", TARGET_MB)
    return [
        Figure(
            SECTION,
            "serve RSS peak, committed-throughput run (batch 1000, 2 workers)",
            "MB",
            [p["serve"] for p in loaded],
            target,
        ),
        Figure(
            SECTION,
            "worker RSS peak, committed-throughput run",
            "MB",
            [p["worker"] for p in loaded],
            target,
        ),
        Figure(
            SECTION,
            f"serve RSS peak, {clients}",
            "MB",
            [p["serve"] for p in with_clients],
            target,
        ),
        Figure(
            SECTION,
            "worker RSS peak, same run",
            "MB",
            [p["worker"] for p in with_clients],
            target,
        ),
    ]
