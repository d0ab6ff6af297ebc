"""TraceHub as separate processes: two server nodes and two workers sharing one Redis
and one PostgreSQL, and a worker killed with SIGKILL while it has batches in progress."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import httpx
import socketio

from conftest import Isolated, batch, free_port, spawn, wait_for, wait_http
from test_ingest_cases import seqs_of


def start_node(isolated: Isolated, tmp_path: Path, name: str, *args: str, **env: str):  # type: ignore[no-untyped-def]
    return spawn(list(args), isolated.env(**env), tmp_path / f"{name}.log")


def stop_all(processes) -> None:  # type: ignore[no-untyped-def]
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except Exception:  # noqa: BLE001 - escalate whatever the wait raised
            process.kill()


async def durable_on(url: str, service: str, seq: int) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        body = (await client.get("/metrics")).json()
    return any(s["service"] == service and s["durableTill"] >= seq for s in body["services"])


async def test_two_nodes_and_two_workers_agree(isolated: Isolated, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    processes = [
        start_node(isolated, tmp_path, f"serve{i}", "serve", "--no-worker", "--port", str(port))
        for i, port in enumerate(ports)
    ] + [start_node(isolated, tmp_path, f"worker{i}", "worker") for i in range(2)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    service = "two-node-svc"
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    sio = socketio.AsyncClient()
    try:
        for url in urls:
            await asyncio.to_thread(wait_http, url)
        sio.on("ack:sent", lambda data: events.append(("ack:sent", data)))
        sio.on("log:new", lambda data: events.append(("log:new", data)))
        await sio.connect(urls[1], transports=["websocket"])

        seqs = list(range(1, 1001))
        chunks = [seqs[i : i + 25] for i in range(0, len(seqs), 25)]
        random.Random(7).shuffle(chunks)
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        responses = await asyncio.gather(*[
            clients[i % 2].post("/ingest", json=batch(service, chunk)) for i, chunk in enumerate(chunks)
        ])  # fmt: skip
        assert {r.status_code for r in responses} == {200}
        finals = [(await c.post("/ingest", json=batch(service, [1000]))).json() for c in clients]
        for client in clients:
            await client.aclose()
        assert [f["ackTill"] for f in finals] == [1000, 1000]
        assert [f["missing"] for f in finals] == [[], []]
        await wait_for(lambda: durable_on(urls[0], service, 1000), timeout=60, what="durable 1000")
        await wait_for(lambda: any(e[0] == "log:new" for e in events), what="log:new on the other node")
        await wait_for(lambda: any(e[0] == "ack:sent" and e[1]["service"] == service for e in events),
                       what="ack:sent on the other node")  # fmt: skip
    finally:
        if sio.connected:
            await sio.disconnect()
        stop_all(processes)
    assert seqs_of(isolated, service) == list(range(1, 1001))


async def test_worker_killed_mid_batch(isolated: Isolated, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = "killed-svc"
    total = 20_000
    server = start_node(isolated, tmp_path, "serve", "serve", "--no-worker", "--port", str(port))
    processes = [server]
    try:
        await asyncio.to_thread(wait_http, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for start in range(1, total + 1, 500):
                response = await client.post("/ingest", json=batch(service, range(start, start + 500)))
                assert response.status_code == 200
        first = start_node(isolated, tmp_path, "worker1", "worker", TRACEHUB_WORKER_BATCH="2")
        processes.append(first)
        await wait_for(lambda: len(seqs_of(isolated, service)) > 0, timeout=30, interval=0.01, what="first rows")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        stored_at_kill = len(seqs_of(isolated, service))
        assert stored_at_kill < total

        second = start_node(isolated, tmp_path, "worker2", "worker", TRACEHUB_CLAIM_IDLE_MS="1000")
        processes.append(second)
        await wait_for(lambda: durable_on(url, service, total), timeout=90, what=f"durable {total}")
    finally:
        stop_all(processes)
    assert seqs_of(isolated, service) == list(range(1, total + 1))


async def test_serve_stops_promptly_with_live_clients(isolated: Isolated, tmp_path: Path) -> None:
    import time

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_node(isolated, tmp_path, "serve", "serve", "--port", str(port))
    client = socketio.AsyncClient(reconnection=False)
    try:
        await asyncio.to_thread(wait_http, url)
        await client.connect(url, transports=["websocket"])
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait, 30)
        took = time.monotonic() - started
    finally:
        stop_all([server])
        if client.connected:
            await client.disconnect()
    assert code == 0
    assert took < 8
