"""Fault injection: each fault's effect, its events, and `tracehub inject`."""

from __future__ import annotations

import subprocess
import sys
import time

import socketio

from conftest import Isolated, RunningServer, batch, wait_for
from test_ingest_cases import control, seqs_of, wait_durable


async def listen(server: RunningServer, events: list[tuple[str, dict]]) -> socketio.AsyncClient:  # type: ignore[type-arg]
    client = socketio.AsyncClient(reconnection=False)
    for name in ("sim:control", "worker:crashed", "worker:recovered"):
        client.on(name, lambda data, name=name: events.append((name, data)))
    await client.connect(server.url, transports=["websocket"])
    return client


async def test_timed_fault_visible_and_announced(server: RunningServer) -> None:
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    sio = await listen(server, events)
    try:
        async with server.client() as client:
            started = await control(client, "drop-network", 1500)
            faults = (await client.get("/metrics")).json()["faults"]
            assert [f["action"] for f in faults] == ["drop-network"]
            assert faults[0]["endsAt"] - faults[0]["startedAt"] == 1.5
            await wait_for(lambda: any(e[0] == "sim:control" and e[1].get("endsAt") == started["endsAt"]
                                       and not e[1].get("ended") for e in events), what="start event")  # fmt: skip
            await wait_for(lambda: any(e[1].get("ended") for e in events), timeout=10, what="end event")
            assert (await client.get("/metrics")).json()["faults"] == []
    finally:
        await sio.disconnect()


async def test_delay_ack_holds_answers(server: RunningServer, isolated: Isolated) -> None:
    async with server.client() as client:
        await control(client, "delay-ack", 1000)
        started = time.monotonic()
        response = await client.post("/ingest", json=batch("delay-svc", [1]))
        held = time.monotonic() - started
        assert response.status_code == 200
        assert held >= 0.8
        await wait_durable(client, "delay-svc", 1)
    assert seqs_of(isolated, "delay-svc") == [1]


async def test_crash_worker_events_and_recovery(server: RunningServer, isolated: Isolated) -> None:
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    sio = await listen(server, events)
    try:
        async with server.client() as client:
            await control(client, "crash-worker", 1000)
            await wait_for(lambda: any(e[0] == "worker:crashed" for e in events), what="worker:crashed")
            await client.post("/ingest", json=batch("crash2-svc", range(1, 11)))
            await wait_for(lambda: any(e[0] == "worker:recovered" for e in events), timeout=15, what="recovered")
            await wait_durable(client, "crash2-svc", 10)
    finally:
        await sio.disconnect()
    names = [e[0] for e in events if e[0].startswith("worker:")]
    assert names.index("worker:crashed") < names.index("worker:recovered")
    assert seqs_of(isolated, "crash2-svc") == list(range(1, 11))


def run_cli(*args: str, url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracehub", *args, "--url", url], capture_output=True,
                          text=True, input=stdin, timeout=60)  # fmt: skip


async def test_inject_cli(server: RunningServer, isolated: Isolated) -> None:
    import asyncio

    ok = await asyncio.to_thread(run_cli, "inject", "delay-ack", "--duration", "0.5", url=server.url)
    assert ok.returncode == 0
    assert "delay-ack active" in ok.stdout

    bad = await asyncio.to_thread(run_cli, "inject", "explode", url=server.url)
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "unknown action" in bad.stderr

    async with server.client() as client:
        await client.post("/ingest", json=batch("wipe-svc", [1, 2]))
        await wait_durable(client, "wipe-svc", 2)
    declined = await asyncio.to_thread(run_cli, "inject", "reset", "--all", url=server.url, stdin="n\n")
    assert declined.returncode == 1
    assert seqs_of(isolated, "wipe-svc") == [1, 2]
    wiped = await asyncio.to_thread(run_cli, "inject", "reset", "--all", "--yes", url=server.url)
    assert wiped.returncode == 0
    assert seqs_of(isolated, "wipe-svc") == []
    async with server.client() as client:
        fresh = (await client.post("/ingest", json=batch("wipe-svc", [1]))).json()
    assert fresh["duplicates"] == 0
    assert fresh["ackTill"] == 1


async def test_log_events_capped_and_skips_reported(isolated: Isolated) -> None:
    from conftest import start_server, stop_server

    running, runner = await start_server(isolated.settings(log_events_per_s=5))
    received: list[dict] = []  # type: ignore[type-arg]
    skipped: list[int] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("log:new", lambda data: received.append(data))
    sio.on("log:skipped", lambda data: skipped.append(data["count"]))
    try:
        await sio.connect(running.url, transports=["websocket"])
        async with running.client() as client:
            await client.post("/ingest", json=batch("cap-events", range(1, 101)))
            await wait_durable(client, "cap-events", 100)
        await wait_for(lambda: skipped, timeout=5, what="log:skipped")
    finally:
        await sio.disconnect()
        await stop_server(running, runner)
    assert len(received) == 5
    assert received[0]["service"] == "cap-events"
    assert sum(skipped) == 95
