"""The embedded default: `tracehub serve` with no server URLs starts its own
PostgreSQL and Redis, keeps their data across restarts and stops them on exit."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import batch, free_port, spawn, wait_http

pytestmark = pytest.mark.slow


def embedded_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEHUB_")}
    env["TRACEHUB_HOME"] = str(home)
    return env


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_embedded_serve_keeps_data_and_stops_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = embedded_env(home)
    first = spawn(["serve", "--port", str(port)], env, tmp_path / "first.log")
    try:
        wait_http(url, timeout=90)
        ack = httpx.post(f"{url}/ingest", json=batch("emb-svc", [1, 2, 3]), timeout=10).json()
        assert ack["ackTill"] == 3
        _wait_durable(url, "emb-svc", 3)
    finally:
        assert stop(first) == 0
    log = (tmp_path / "first.log").read_text()
    assert "using embedded servers under" in log
    assert not (home / "redis" / "redis.sock").exists()
    assert not (home / "postgres" / "postmaster.pid").exists()

    second = spawn(["serve", "--port", str(port)], env, tmp_path / "second.log")
    try:
        wait_http(url, timeout=90)
        rows = httpx.get(f"{url}/logs", params={"service": "emb-svc"}, timeout=10).json()["logs"]
        assert sorted(r["seq"] for r in rows) == [1, 2, 3]
        again = httpx.post(f"{url}/ingest", json=batch("emb-svc", [4]), timeout=10).json()
        assert again["ackTill"] == 4
        assert again["missing"] == []
    finally:
        assert stop(second) == 0


def test_second_serve_shares_embedded_servers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = [free_port(), free_port()]
    env = embedded_env(home)
    first = spawn(["serve", "--port", str(ports[0])], env, tmp_path / "a.log")
    second = None
    try:
        wait_http(f"http://127.0.0.1:{ports[0]}", timeout=90)
        second = spawn(["serve", "--port", str(ports[1])], env, tmp_path / "b.log")
        wait_http(f"http://127.0.0.1:{ports[1]}", timeout=90)
        httpx.post(f"http://127.0.0.1:{ports[0]}/ingest", json=batch("shared-svc", [1]), timeout=10)
        _wait_durable(f"http://127.0.0.1:{ports[1]}", "shared-svc", 1)
        assert stop(first) == 0
        assert httpx.get(f"http://127.0.0.1:{ports[1]}/health", timeout=10).json()["status"] == "ok"
    finally:
        if first.poll() is None:
            stop(first)
        if second is not None and second.poll() is None:
            assert stop(second) == 0
    assert "already running" in (tmp_path / "b.log").read_text()
    assert not (home / "redis" / "redis.sock").exists()


def _wait_durable(url: str, service: str, seq: int) -> None:
    from conftest import poll

    def durable() -> bool:
        services = httpx.get(f"{url}/metrics", timeout=10).json()["services"]
        return any(s["service"] == service and s["durableTill"] >= seq for s in services)

    poll(durable, timeout=30, what=f"{service} durable to {seq}")


def test_hangup_stops_servers_despite_dead_users(tmp_path: Path) -> None:
    import json

    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = spawn(["serve", "--port", str(port)], embedded_env(home), tmp_path / "serve.log")
    try:
        wait_http(url, timeout=90)
        users = home / "postgres" / ".handle_pids.json"
        dead = subprocess.Popen(["true"])
        dead.wait()
        users.write_text(json.dumps(json.loads(users.read_text()) + [dead.pid]))  # a user killed without leaving
        server.send_signal(signal.SIGHUP)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    assert not (home / "redis" / "redis.sock").exists()
    assert not (home / "postgres" / "postmaster.pid").exists()
