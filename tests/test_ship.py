"""End-to-end tests of `tracehub ship` against a live server, PostgreSQL and Redis.

The shipper runs in-process (``ship_paths``) or as a `tracehub ship` child process
with its own TRACEHUB_HOME under tmp_path. Every ``ship_paths`` call returns only
once the server reports every entry durable, so rows are checked right after it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import (
    Isolated,
    RunningServer,
    free_port,
    spawn,
    start_server,
    stop_server,
    wait_for,
)

from tracehub.auth import INGEST, Principal, Tokens
from tracehub.node import open_backends
from tracehub.server.app import create_app
from tracehub.ship.buffer import ShipBuffer, buffer_path
from tracehub.ship.run import ParseOptions, ship_paths
from tracehub.ship.sender import IngestRejected
from tracehub.ship.shipper import ShipOptions, ShipStats, ShipTimeout
from tracehub.ship.timestamps import TimeRules

DATA = Path(__file__).resolve().parent / "data" / "loghub"
SAMPLES = ("Apache_2k.log", "HDFS_2k.log", "OpenSSH_2k.log", "Zookeeper_2k.log")
LINE_BREAK = re.compile(rb"\r\n|\r|\n")
# The OpenSSH sample has no years; pin one so expected times do not depend on the clock.
YEAR = 2017

# (sample, line number, level, ts, start of message) read by hand from the samples.
SPOT_CHECKS = [
    ("Apache_2k.log", 1, "info", "2005-12-04T04:47:44+00:00", "workerEnv.init() ok"),
    (
        "Apache_2k.log",
        2,
        "error",
        "2005-12-04T04:47:44+00:00",
        "mod_jk child workerEnv in error state 6",
    ),
    (
        "Apache_2k.log",
        132,
        "error",
        "2005-12-04T05:15:09+00:00",
        "Directory index forbidden by rule",
    ),
    (
        "HDFS_2k.log",
        1,
        "info",
        "2008-11-09T20:36:15+00:00",
        "PacketResponder 1 for block",
    ),
    (
        "HDFS_2k.log",
        78,
        "warn",
        "2008-11-09T21:40:43+00:00",
        "10.251.30.85:50010:Got exception",
    ),
    (
        "OpenSSH_2k.log",
        1,
        "info",
        f"{YEAR}-12-10T06:55:46+00:00",
        "reverse mapping checking",
    ),
    (
        "OpenSSH_2k.log",
        158,
        "error",
        f"{YEAR}-12-10T07:51:15+00:00",
        "error: Received disconnect",
    ),
    (
        "OpenSSH_2k.log",
        1869,
        "fatal",
        f"{YEAR}-12-10T11:03:53+00:00",
        "fatal: Write failed",
    ),
    (
        "Zookeeper_2k.log",
        1,
        "info",
        "2015-07-29T17:41:44.747000+00:00",
        "Notification time out: 3200",
    ),
    (
        "Zookeeper_2k.log",
        3,
        "warn",
        "2015-07-29T19:04:29.071000+00:00",
        "Send worker leaving thread",
    ),
    (
        "Zookeeper_2k.log",
        506,
        "error",
        "2015-07-29T23:44:28.903000+00:00",
        "Unexpected Exception:",
    ),
]


def count_lines(data: bytes) -> int:
    """Count the non-blank lines of data, each one entry in the single-line samples."""
    return sum(1 for line in LINE_BREAK.split(data) if line.strip())


def rows_of(isolated: Isolated, service: str) -> list[dict[str, Any]]:
    rows = isolated.sql(
        "SELECT seq, level, message, ts, attrs FROM logs"
        " WHERE service = %s ORDER BY seq",
        (service,),
    )
    return [
        {"seq": r[0], "level": r[1], "message": r[2], "ts": r[3], "attrs": r[4]}
        for r in rows
    ]


def row_count(isolated: Isolated, service: str) -> int:
    return isolated.sql("SELECT count(*) FROM logs WHERE service = %s", (service,))[0][
        0
    ]


async def ship(
    server_url: str,
    home: Path,
    paths: list[str],
    service: str,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> ShipStats:
    parse = ParseOptions(
        rules=TimeRules(year=YEAR), max_line_bytes=options.pop("max_line_bytes", 65536)
    )
    settings = ShipOptions(
        service=service, drain_timeout=options.pop("drain_timeout", 30.0), **options
    )
    return await ship_paths(paths, settings, parse, server_url, home, headers=headers)


def ship_env(isolated: Isolated, server: RunningServer, home: Path) -> dict[str, str]:
    return isolated.env(TRACEHUB_URL=server.url, TRACEHUB_HOME=str(home))


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    await wait_for(
        lambda: process.poll() is not None, timeout=timeout, what="ship to exit"
    )
    return process.returncode


def concatenated_samples(path: Path) -> bytes:
    """Write the four samples into one file, a CRLF between them; return its bytes."""
    parts = []
    for name in SAMPLES:
        data = (DATA / name).read_bytes()
        parts.append(data if data.endswith(b"\n") else data + b"\r\n")
    path.write_bytes(b"".join(parts))
    return path.read_bytes()


# --- the loghub samples --------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES)
async def test_ship_sample_rows(
    sample: str, server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    path = DATA / sample
    expected = count_lines(path.read_bytes())
    service = sample.split("_")[0].lower()

    stats = await ship(server.url, tmp_path / "home", [str(path)], service)

    assert stats.recorded == expected
    rows = rows_of(isolated, service)
    assert len(rows) == expected
    assert [row["seq"] for row in rows] == list(range(1, expected + 1))
    assert [row["attrs"]["line_number"] for row in rows] == list(range(1, expected + 1))
    assert {row["attrs"]["file"] for row in rows} == {str(path)}
    for name, line_number, level, ts, message in SPOT_CHECKS:
        if name != sample:
            continue
        row = rows[line_number - 1]
        assert row["level"] == level, f"line {line_number}"
        assert row["ts"] == datetime.fromisoformat(ts), f"line {line_number}"
        assert row["message"].startswith(message), f"line {line_number}"


async def test_ship_again_sends_nothing_new(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    path = str(DATA / "Apache_2k.log")
    await ship(server.url, tmp_path / "home", [path], "apache")

    again = await ship(server.url, tmp_path / "home", [path], "apache")

    assert again.recorded == 0
    assert row_count(isolated, "apache") == 2000


async def test_ship_levels_per_sample(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    paths = [str(DATA / name) for name in SAMPLES]
    await ship(server.url, tmp_path / "home", paths, "all")
    counts = dict(
        isolated.sql(
            "SELECT level, count(*) FROM logs WHERE service = 'all' GROUP BY level"
        )
    )
    # Counted with grep on the samples: Apache [error] 595, HDFS WARN 80, ZooKeeper
    # WARN 1318 and ERROR 13, OpenSSH "error: " 47 and "fatal: " 1.
    assert counts["error"] == 595 + 13 + 47
    assert counts["warn"] == 80 + 1318
    assert counts["fatal"] == 1
    assert sum(counts.values()) == 8000


# --- awkward input through standard input --------------------------------------------


async def test_ship_stdin_awkward_input(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    long_line = b"2024-01-15 10:30:01,000 INFO [main] Big - " + b"x" * 3000
    data = b"".join(
        [
            b'{"level":"warn","msg":"json entry","time":"2024-01-15T10:30:00Z","user":"ann"}\r\n',
            b"2024-01-15 10:30:02,000 ERROR [main] com.example.Pay - charge failed\r\n",
            b"java.lang.IllegalStateException: card expired\n",
            b"\tat com.example.Pay.charge(Pay.java:42)\n",
            b"\tat com.example.Main.main(Main.java:7)\r",
            b"plain line with bad bytes \xff\xfe here\r",
            long_line + b"\n",
            b"last line without a break",
        ]
    )
    env = ship_env(isolated, server, tmp_path / "home")
    log_path = tmp_path / "ship.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tracehub",
                "ship",
                "-",
                "--service",
                "stdin",
                "--max-line-bytes",
                "1000",
                "--no-progress",
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.close()
        code = await wait_exit(process, 60)
    assert code == 0, log_path.read_text()

    rows = rows_of(isolated, "stdin")
    assert len(rows) == 5
    json_row, trace_row, bad_row, long_row, last_row = rows
    assert json_row["level"] == "warn"
    assert json_row["message"] == "json entry"
    assert json_row["attrs"]["user"] == "ann"
    assert trace_row["level"] == "error"
    assert trace_row["message"].splitlines() == [
        "charge failed",
        "java.lang.IllegalStateException: card expired",
        "\tat com.example.Pay.charge(Pay.java:42)",
        "\tat com.example.Main.main(Main.java:7)",
    ]
    assert trace_row["attrs"]["line_number"] == 2
    assert bad_row["message"] == "plain line with bad bytes \ufffd\ufffd here"
    assert bad_row["attrs"]["invalid_utf8"] is True
    assert long_row["attrs"]["truncated"] is True
    assert long_row["attrs"]["truncated_bytes"] == len(long_line) - 1000
    assert len(long_row["message"]) == 1000 - len(
        "2024-01-15 10:30:01,000 INFO [main] Big - "
    )
    assert last_row["message"] == "last line without a break"
    assert "file" not in last_row["attrs"]


# --- durability: kill, outage, lost buffer -------------------------------------------


async def test_ship_killed_and_restarted_exact(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    big = tmp_path / "big.log"
    expected = count_lines(concatenated_samples(big))
    await ship(server.url, tmp_path / "reference-home", [str(big)], "reference")
    env = ship_env(isolated, server, tmp_path / "home")
    args = [
        "ship",
        str(big),
        "--service",
        "killed",
        "--year",
        str(YEAR),
        "--no-progress",
    ]

    first = spawn(
        [*args, "--batch-size", "50", "--rate-limit", "1500"],
        env,
        tmp_path / "first.log",
    )
    try:
        await wait_for(
            lambda: row_count(isolated, "killed") >= 1500, timeout=40, what="1500 rows"
        )
    finally:
        first.kill()
    assert await wait_exit(first, 10) == -signal.SIGKILL
    buffer = ShipBuffer(buffer_path(tmp_path / "home", "killed"))
    saved = buffer.position(str(big))
    buffer.close()
    assert saved is not None
    assert saved.offset < big.stat().st_size, (
        "the first run read the whole file before the kill"
    )

    second = spawn(args, env, tmp_path / "second.log")
    assert await wait_exit(second, 60) == 0, (tmp_path / "second.log").read_text()

    rows = rows_of(isolated, "killed")
    assert len(rows) == expected
    assert [row["seq"] for row in rows] == list(range(1, expected + 1))
    reference = rows_of(isolated, "reference")
    assert rows == reference


async def test_ship_server_down_then_resumes(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    path = str(DATA / "HDFS_2k.log")
    home = tmp_path / "home"
    down_url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(ShipTimeout, match="not durable yet"):
        await ship(down_url, home, [path], "outage", drain_timeout=1.5)
    buffer = ShipBuffer(buffer_path(home, "outage"))
    assert buffer.pending()[0] == 2000
    buffer.close()

    stats = await ship(server.url, home, [path], "outage")
    assert stats.recorded == 0
    assert [row["seq"] for row in rows_of(isolated, "outage")] == list(range(1, 2001))


async def test_ship_cli_timeout_one_line(isolated: Isolated, tmp_path: Path) -> None:
    env = isolated.env(TRACEHUB_HOME=str(tmp_path / "home"))
    down_url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracehub",
            "ship",
            str(DATA / "Apache_2k.log"),
            "--service",
            "down",
            "--url",
            down_url,
            "--drain-timeout",
            "1",
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    errors = [
        line
        for line in result.stderr.decode().splitlines()
        if line.startswith("error:")
    ]
    assert len(errors) == 1
    assert "2000 entries (seqs 1..2000) are not durable yet" in errors[0]


async def test_ship_through_dropped_network(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    async with server.client() as client:
        response = await client.post(
            "/metrics/control", json={"action": "drop-network", "durationMs": 1500}
        )
        assert response.status_code == 200

    await ship(
        server.url, tmp_path / "home", [str(DATA / "Zookeeper_2k.log")], "dropped"
    )

    assert [row["seq"] for row in rows_of(isolated, "dropped")] == list(range(1, 2001))


async def test_ship_backs_off_on_queue_full(
    isolated: Isolated, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running, runner = await start_server(isolated.settings(queue_max_depth=2))
    try:
        async with running.client() as client:
            # With the worker stopped, the third queued batch gets 429 Retry-After.
            crash = {"action": "crash-worker", "durationMs": 1500}
            assert (
                await client.post("/metrics/control", json=crash)
            ).status_code == 200
        with caplog.at_level(logging.WARNING, logger="tracehub.ship.sender"):
            path = str(DATA / "Apache_2k.log")
            await ship(running.url, tmp_path / "home", [path], "full", batch_size=400)
    finally:
        await stop_server(running, runner)

    assert any("HTTP 429" in record.getMessage() for record in caplog.records)
    assert [row["seq"] for row in rows_of(isolated, "full")] == list(range(1, 2001))


async def test_ship_bearer_token(isolated: Isolated, tmp_path: Path) -> None:
    backends = await open_backends(isolated.settings())
    grants = {"ingest-secret": Principal(INGEST, frozenset({"secure"}))}
    runner = web.AppRunner(create_app(backends, tokens=Tokens(grants)), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    path = str(DATA / "Apache_2k.log")
    try:
        with pytest.raises(IngestRejected, match="401"):
            await ship(url, tmp_path / "home", [path], "secure")
        bearer = {"Authorization": "Bearer ingest-secret"}
        with pytest.raises(IngestRejected, match="403"):
            await ship(url, tmp_path / "other-home", [path], "other", headers=bearer)
        stats = await ship(url, tmp_path / "home", [path], "secure", headers=bearer)
    finally:
        await runner.cleanup()
        await backends.close()

    assert stats.recorded == 0  # recorded by the rejected run, sent from the buffer
    assert row_count(isolated, "secure") == 2000


async def test_ship_resends_flushed_queue(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    path = str(DATA / "Zookeeper_2k.log")
    shipping = asyncio.create_task(
        ship(
            server.url,
            tmp_path / "home",
            [path],
            "flushed",
            batch_size=100,
            rate_limit=1000,
        )
    )
    await wait_for(
        lambda: row_count(isolated, "flushed") >= 200, timeout=20, what="200 rows"
    )
    async with server.client() as client:
        # With the worker stopped, acknowledged batches wait in the queue to be flushed.
        crash = {"action": "crash-worker", "durationMs": 1000}
        assert (await client.post("/metrics/control", json=crash)).status_code == 200
        await asyncio.sleep(0.5)
        flush = {"action": "flush-queue"}
        assert (await client.post("/metrics/control", json=flush)).status_code == 200

    stats = await asyncio.wait_for(shipping, timeout=50)

    assert stats.resent > 0
    assert [row["seq"] for row in rows_of(isolated, "flushed")] == list(range(1, 2001))


async def test_ship_lost_buffer_renumbers(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    path = str(DATA / "OpenSSH_2k.log")
    await ship(server.url, tmp_path / "home-1", [path], "renumber")

    # A new buffer means a new epoch whose seqs start at 1 again. The server
    # responds with 409, so the shipper numbers its entries from 2001.
    stats = await ship(server.url, tmp_path / "home-2", [path], "renumber")

    assert stats.first_seq == 2001
    rows = rows_of(isolated, "renumber")
    assert [row["seq"] for row in rows] == list(range(1, 4001))
    assert rows[2000]["message"] == rows[0]["message"]


# --- following -----------------------------------------------------------------------


def append(path: Path, *lines: str) -> None:
    with open(path, "ab") as handle:
        handle.write("".join(f"{line}\n" for line in lines).encode())


async def test_ship_follow_rotation_truncation(
    server: RunningServer, isolated: Isolated, tmp_path: Path
) -> None:
    log_path = tmp_path / "app.log"
    append(log_path, "first-1", "first-2", "first-3")
    env = ship_env(isolated, server, tmp_path / "home")
    process = spawn(
        ["ship", str(log_path), "--service", "follow", "--follow"],
        env,
        tmp_path / "ship.log",
    )
    try:
        await _follow_steps(log_path, isolated)
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 30) == 0, (tmp_path / "ship.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()

    rows = rows_of(isolated, "follow")
    assert [row["message"] for row in rows] == [
        "first-1",
        "first-2",
        "first-3",
        "grown-1",
        "grown-2",
        "late-1",
        "late-2",
        "rotated-1",
        "rotated-2",
        "truncated-1",
        "boom\n\tat a.B(B.java:1)",
    ]
    assert rows[-1]["level"] == "error"
    assert [row["attrs"]["line_number"] for row in rows[-4:]] == [1, 2, 1, 2]
    assert "every entry is durable" in (tmp_path / "ship.log").read_text()


async def _follow_steps(log_path: Path, isolated: Isolated) -> None:
    def rows() -> int:
        return row_count(isolated, "follow")

    await wait_for(lambda: rows() == 3, timeout=30, what="the first 3 rows")
    append(log_path, "grown-1", "grown-2")
    await wait_for(lambda: rows() == 5, timeout=15, what="2 appended rows")

    # Rotation by rename: the writer still appends to the old file, then a new
    # one starts.
    rotated = log_path.with_name("app.log.1")
    os.rename(log_path, rotated)
    append(rotated, "late-1", "late-2")
    append(log_path, "rotated-1", "rotated-2")
    await wait_for(lambda: rows() == 9, timeout=15, what="rows from both files")

    # Truncation in place, as copytruncate does.
    with open(log_path, "r+b") as handle:
        handle.truncate(0)
    append(log_path, "truncated-1")
    await wait_for(lambda: rows() == 10, timeout=15, what="the row after truncation")

    # A multi-line entry is complete once no line came for a second.
    append(
        log_path, "2024-01-15 10:30:00,000 ERROR [main] X - boom", "\tat a.B(B.java:1)"
    )
    await wait_for(lambda: rows() == 11, timeout=15, what="the joined stack trace")
