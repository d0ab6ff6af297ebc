"""The dashboard: its model on its own, then the app driven by Pilot against a real server."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from rich.console import Console
from textual.widgets import DataTable, Input, Select, Static

import tracehub
from conftest import Isolated, RunningServer, batch, free_port, wait_for
from tracehub.auth import ADMIN, READ, Principal, Tokens
from tracehub.node import open_backends
from tracehub.server.app import create_app
from tracehub.tui import format as fmt
from tracehub.tui.app import TraceHubApp
from tracehub.tui.feed import LiveBuffer, backoff_s
from tracehub.tui.messages import LiveReady
from tracehub.tui.model import GapMark, Link, LogFilter, LogRing, LogRow
from tracehub.tui.screens.confirm import ConfirmScreen
from tracehub.tui.screens.help import HelpScreen
from tracehub.tui.screens.log_detail import LogDetailScreen
from tracehub.tui.screens.logs import LogsScreen
from tracehub.tui.screens.service_detail import ServiceDetailScreen
from tracehub.tui.up import Child, Children, command_exists, stop, wait_healthy
from tracehub.tui.widgets.log_table import LogTable

SIZE = (100, 32)


def row(service: str, seq: int, level: str = "info", message: str = "m") -> LogRow:
    return LogRow(service, seq, level, message, "2026-12-04T12:00:00+00:00")


def screen_text(app: TraceHubApp) -> str:
    """Return the text on the terminal, modals and the screens below them included."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      color_system=None, legacy_windows=False)  # fmt: skip
    # NOTE: Textual has no public plain-text export; this mirrors App.export_screenshot.
    console.print(
        app.screen._compositor.render_update(
            full=True, screen_stack=app._background_screens
        )
    )
    return console.export_text()


def shown_rows(app: TraceHubApp) -> list[LogRow]:
    table = app.screen.query_one("#logs-table", LogTable)
    return [item for item in table.items if isinstance(item, LogRow)]


SCREEN_CLASSES = {"1": "OverviewScreen", "2": "LogsScreen", "3": "ReplayScreen",
                  "4": "QueueScreen", "5": "ServicesScreen"}  # fmt: skip


async def show(pilot: Any, key: str) -> None:
    """Press a screen key and wait until that screen is up, since a first visit
    composes the screen after the key press returns."""
    await pilot.press(key)
    expected = SCREEN_CLASSES[key]
    await wait_for(lambda: type(pilot.app.screen).__name__ == expected
                   and pilot.app.screen.is_mounted, what=f"{expected}")  # fmt: skip


async def post(
    server: RunningServer, service: str, seqs: Any, **fields: object
) -> dict[str, Any]:
    async with server.client() as client:
        response = await client.post("/ingest", json=batch(service, seqs, **fields))
    assert response.status_code == 200, response.text
    return response.json()


async def metrics(server: RunningServer) -> dict[str, Any]:
    async with server.client() as client:
        return (await client.get("/metrics")).json()


async def connected(app: TraceHubApp) -> None:
    await wait_for(
        lambda: app.model.connection.link is Link.CONNECTED, what="connection"
    )


# --- the model, without a server --------------------------------------------------


def test_ring_marks_forward_gaps() -> None:
    ring = LogRing()
    added = ring.add([row("a", 1), row("a", 2), row("a", 6), row("b", 1), row("a", 3)])
    assert GapMark("a", 3, 5) in added
    assert [item for item in added if isinstance(item, GapMark)] == [GapMark("a", 3, 5)]
    assert ring.highest == {"a": 6, "b": 1}


def test_ring_drops_repeats_and_stays_bounded() -> None:
    ring = LogRing(size=10)
    ring.add([row("a", seq) for seq in range(1, 8)])
    ring.add([row("a", seq) for seq in range(1, 8)])
    assert len(ring.items) == 7
    ring.add([row("a", seq) for seq in range(8, 30)])
    assert len(ring.items) == 10
    assert ring.rows()[-1].seq == 29
    assert ring.since(ring.total - 2) == list(ring.items)[-2:]


def test_ring_merge_orders_by_ts() -> None:
    ring = LogRing()
    ring.add([LogRow("a", 5, "info", "late", "2026-12-04T12:00:05+00:00")])
    changed = ring.merge([LogRow("a", 4, "info", "early", "2026-12-04T12:00:04Z")])
    assert changed
    assert [r.seq for r in ring.rows()] == [4, 5]
    assert ring.generation == 1
    assert not ring.merge([LogRow("a", 4, "info", "early", "2026-12-04T12:00:04Z")])


def test_filter_by_service_level_and_text() -> None:
    items = [row("pay", 1, "info", "charge ok"), row("pay", 2, "error", "card declined"),
             row("mail", 1, "warn", "slow smtp"), GapMark("pay", 3, 4)]  # fmt: skip
    assert LogFilter(service="PA").accepts(items[0])
    assert not LogFilter(service="pay").accepts(items[2])
    assert [i for i in items if LogFilter(min_level="warn").accepts(i)] == items[1:]
    assert [i for i in items if LogFilter(text="DECLINED").accepts(i)] == [
        items[1],
        items[3],
    ]


def test_buffer_counts_its_own_drops() -> None:
    buffer = LiveBuffer(size=100)
    for seq in range(250):
        buffer.add_log({"service": "a", "seq": seq + 1})
    buffer.add_skipped(40)
    drained = buffer.drain()
    assert len(drained.logs) == 100
    assert drained.logs[0]["seq"] == 151
    assert drained.dropped_locally == 150
    assert drained.skipped_by_server == 40
    assert buffer.drain().dropped_locally == 0


def test_backoff_grows_to_a_ceiling() -> None:
    assert 0.4 <= backoff_s(1) <= 0.6
    assert 3.2 <= backoff_s(4) <= 4.8
    assert backoff_s(50) <= 12.0


async def test_table_bounded_under_flood() -> None:
    app = TraceHubApp("http://127.0.0.1:1", live=False)
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, "2")
        for round_number in range(5):
            for seq in range(1, 1201):
                app.buffer.add_log({"service": "flood", "seq": round_number * 1200 + seq,
                                    "level": "info", "message": "x", "ts": 1.0})  # fmt: skip
            app.post_message(LiveReady())
            await pilot.pause()
        table = app.screen.query_one(LogTable)
        assert len(table.items) == 1000
        assert app.model.dropped_locally == 5 * 200
        assert "skipped 1,000 (1,000 local)" in screen_text(app)


# --- the app against a real server ------------------------------------------------


async def test_overview_shows_live_data(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE):
        await connected(app)
        await post(server, "ov-svc", range(1, 6))
        await post(server, "ov-svc", [9], level="error", message="boom")
        await wait_for(lambda: "boom" in screen_text(app), what="tail row")
        text = await wait_for(lambda: "ov-svc" in (t := screen_text(app)) and "gaps" in t and t,
                              what="service status")  # fmt: skip
    assert "● connected" in text
    assert "none active" in text


async def test_logs_stream_with_gap_mark(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        await post(server, "gap-svc", [1, 2, 3])
        await wait_for(lambda: len(shown_rows(app)) == 3, what="3 rows")
        await post(server, "gap-svc", [7, 8])
        await wait_for(lambda: len(shown_rows(app)) == 5, what="5 rows")
        items = list(app.screen.query_one(LogTable).items)
        text = screen_text(app)
    assert GapMark("gap-svc", 4, 6) in items
    assert items.index(GapMark("gap-svc", 4, 6)) == 3
    assert "seq 4..6 not in stream (3)" in text


async def test_filters_narrow_the_table(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        await post(server, "web", range(1, 4), message="GET /")
        await post(server, "db", [1], level="error", message="disk full")
        await post(server, "db", [2], level="warn", message="slow query")
        await wait_for(lambda: len(shown_rows(app)) == 5, what="5 rows")

        await pilot.press("slash", *"db")
        await wait_for(lambda: len(shown_rows(app)) == 2, what="db rows only")
        assert {r.service for r in shown_rows(app)} == {"db"}

        app.screen.query_one("#filter-level", Select).value = "error"
        await wait_for(lambda: [r.message for r in shown_rows(app)] == ["disk full"],
                       what="error rows only")  # fmt: skip

        app.screen.query_one("#filter-level", Select).value = ""
        app.screen.query_one("#filter-service", Input).value = ""
        app.screen.query_one("#filter-text", Input).value = "slow"
        await wait_for(lambda: [r.message for r in shown_rows(app)] == ["slow query"],
                       what="text match only")  # fmt: skip


async def test_pause_holds_the_view(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        await post(server, "pause-svc", [1, 2])
        await wait_for(lambda: len(shown_rows(app)) == 2, what="2 rows")
        await pilot.press("space")
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        await post(server, "pause-svc", [3, 4, 5])
        await wait_for(lambda: screen.held_rows == 3, what="3 held rows")
        assert [r.seq for r in shown_rows(app)] == [1, 2]
        assert "3 new rows held" in screen_text(app)
        await pilot.press("space")
        await wait_for(lambda: len(shown_rows(app)) == 5, what="5 rows after resume")
        assert "following" in screen_text(app)


async def test_enter_opens_entry_with_attrs(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        await post(server, "attr-svc", [1], user="u-77", cart={"items": 3})
        await wait_for(lambda: len(shown_rows(app)) == 1, what="1 row")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, LogDetailScreen), what="detail")
        text = screen_text(app)
        assert "req-1" in text
        assert '"user": "u-77"' in text
        assert '"items": 3' in text
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, LogsScreen), what="back to logs")


async def test_replay_screen_lists_and_requests(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await post(server, "rp-svc", [1, 2, 5])
        await show(pilot, "3")
        table = app.screen.query_one("#replay-table", DataTable)
        await wait_for(lambda: table.row_count == 1, what="the automatic replay")
        assert "pending" in screen_text(app)

        app.screen.query_one("#replay-service", Input).value = "rp-svc"
        app.screen.query_one("#replay-from", Input).value = "1"
        app.screen.query_one("#replay-to", Input).value = "2"
        await pilot.click("#replay-request")
        await wait_for(lambda: table.row_count == 2, what="the requested replay")
        assert "1..2" in screen_text(app)

        await post(server, "rp-svc", [3, 4])
        await wait_for(lambda: app.model.live_replays, what="replay:completed")
        text = await wait_for(
            lambda: "replay 1 of rp-svc 3..4" in (t := screen_text(app)) and t,
            what="the gap's replay:completed line",
        )
    assert "replay 1 of rp-svc 3..4: 2 seqs" in text


async def test_queue_screen_shows_workers(
    server: RunningServer, isolated: Isolated
) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await post(server, "q-svc", [1, 2])
        await show(pilot, "4")
        text = await wait_for(
            lambda: "running" in (t := screen_text(app)) and t, what="worker"
        )
    assert f"{isolated.prefix}queue:logs" in text
    assert "yes" in text


async def test_services_screen_and_drill_down(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await post(server, "svc-one", [1, 2, 3, 8])
        await show(pilot, "5")
        table = app.screen.query_one("#services-table", DataTable)
        await wait_for(lambda: table.row_count == 1, timeout=10, what="service row")
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[0] == "svc-one"
        assert cells[1] == "gaps"
        assert cells[4] == "8"
        assert cells[6] == "4"
        await pilot.press("enter")
        await wait_for(
            lambda: isinstance(app.screen, ServiceDetailScreen), what="detail"
        )
        text = await wait_for(
            lambda: "4..7" in (t := screen_text(app)) and t, what="replays"
        )
    assert "missing" in text


TIMED_FAULTS = [("c", "crash-worker"), ("n", "drop-network"), ("d", "delay-ack")]


@pytest.mark.parametrize(("key", "action"), TIMED_FAULTS)
async def test_timed_fault_keys(server: RunningServer, key: str, action: str) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        await pilot.press(key)
        if action != "delay-ack":
            await wait_for(
                lambda: isinstance(app.screen, ConfirmScreen), what="confirmation"
            )
            await pilot.press("y")
        body = await wait_for(
            lambda: _has_fault(server, action), what=f"{action} in /metrics"
        )
        assert body["faults"][0]["remainingMs"] > 0
        text = await wait_for(
            lambda: f"⚠ {action}" in (t := screen_text(app)) and t, what="badge"
        )
        assert isinstance(app.screen, LogsScreen)
        await show(pilot, "4")
        await wait_for(
            lambda: f"{action} on for" in screen_text(app), what="event log line"
        )
    assert "no faults" not in text
    async with server.client() as client:  # end the fault before the server stops
        await client.post("/metrics/control", json={"action": "reset"})


async def _has_fault(server: RunningServer, action: str) -> dict[str, Any] | None:
    body = await metrics(server)
    return body if any(f["action"] == action for f in body["faults"]) else None


async def test_declined_fault_sends_nothing(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("n")
        await wait_for(
            lambda: isinstance(app.screen, ConfirmScreen), what="confirmation"
        )
        await pilot.press("n")
        await wait_for(lambda: not isinstance(app.screen, ConfirmScreen), what="closed")
        await pilot.pause(0.3)
    assert (await metrics(server))["faults"] == []


async def test_flush_key_empties_queue(server: RunningServer) -> None:
    async with server.client() as client:
        crash = {"action": "crash-worker", "durationMs": 30_000}
        assert (await client.post("/metrics/control", json=crash)).status_code == 200
    await wait_for(_queue_while_crashed(server), what="a batch left in the queue")
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("f")
        await wait_for(
            lambda: isinstance(app.screen, ConfirmScreen), what="confirmation"
        )
        await pilot.press("y")
        await wait_for(lambda: _events(app, "queue flushed"), what="flush event")
        assert await _queue_depth(server) == 0
        await show(pilot, "4")
        text = await wait_for(
            lambda: "queue flushed" in (t := screen_text(app)) and t, what="line"
        )
    assert "queue flushed: 1 batch, 0 retries" in text
    async with server.client() as client:  # end the crash before the server stops
        await client.post("/metrics/control", json={"action": "reset"})


def _queue_while_crashed(server: RunningServer):  # type: ignore[no-untyped-def]
    """Post a batch per call until one stays queued, since the worker stops a moment
    after the crash-worker fault starts."""
    seqs = iter(range(1, 1000))

    async def attempt() -> bool:
        await post(server, "flush-svc", [next(seqs)])
        await asyncio.sleep(0.3)
        return await _queue_depth(server) > 0

    return attempt


async def _queue_depth(server: RunningServer) -> int:
    return int((await metrics(server))["queue"]["depth"])


def _events(app: TraceHubApp, word: str) -> bool:
    return any(word in event.text for event in app.model.events)


async def test_reset_key_ends_faults(server: RunningServer) -> None:
    async with server.client() as client:
        response = await client.post(
            "/metrics/control", json={"action": "delay-ack", "durationMs": 60_000}
        )
    assert response.status_code == 200
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await wait_for(lambda: "⚠ delay-ack" in screen_text(app), what="fault badge")
        await pilot.press("r")
        await wait_for(
            lambda: isinstance(app.screen, ConfirmScreen), what="confirmation"
        )
        await pilot.press("y")
        await wait_for(lambda: _no_faults(server), what="faults ended in /metrics")
        await wait_for(lambda: "no faults" in screen_text(app), what="badge cleared")
        assert "none active" in screen_text(app)


async def _no_faults(server: RunningServer) -> bool:
    return (await metrics(server))["faults"] == []


async def test_help_and_palette_list_every_action(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await show(pilot, "2")
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen), what="help")
        help_text = await wait_for(
            lambda: "Reset" in (t := screen_text(app)) and t, what="keys"
        )
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, LogsScreen), what="logs again")
        titles = {command.title for command in app.get_system_commands(app.screen)}
    for description in ("Crash worker", "Drop network", "Delay ACK", "Flush queue",
                        "Reset faults", "Pause", "Overview", "Services", "Help"):  # fmt: skip
        assert description in help_text
        assert description in titles


async def test_flood_stays_responsive(server: RunningServer) -> None:
    app = TraceHubApp(server.url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await show(pilot, "2")
        async with server.client() as client:
            for start in range(1, 10_001, 1000):
                response = await client.post(
                    "/ingest", json=batch("flood", range(start, start + 1000))
                )
                assert response.status_code == 200
            # log:skipped reports a one-second window when the next logs arrive, so
            # a trickle after the flood makes the server send it.
            await wait_for(
                lambda: _trickle(client, app), timeout=20, what="log:skipped"
            )
        started = time.monotonic()
        await show(pilot, "1")
        assert time.monotonic() - started < 2.0
        assert len(app.model.logs.items) <= 1000
        stat = app.screen.query_one("#stat-skipped", Static)
        shown = await wait_for(
            lambda: str(stat.content) != "0" and str(stat.content), what="figure"
        )
    assert shown == fmt.count(app.model.skipped_by_server + app.model.dropped_locally)


async def _trickle(client: httpx.AsyncClient, app: TraceHubApp) -> bool:
    if app.model.skipped_by_server > 0:
        return True
    seq = 10_001 + int(time.monotonic() * 10) % 1_000_000
    await client.post("/ingest", json=batch("trickle", [seq]))
    await asyncio.sleep(0.2)
    return app.model.skipped_by_server > 0


async def test_reconnects_and_catches_up(isolated: Isolated) -> None:
    port = free_port()
    settings = isolated.settings(port=port)
    url = f"http://127.0.0.1:{port}"

    async def start() -> tuple[web.AppRunner, Any]:
        backends = await open_backends(settings)
        # A short shutdown timeout: the server does not close Socket.IO connections
        # when it stops, and aiohttp would wait up to 60 s for the dashboard's.
        runner = web.AppRunner(
            create_app(backends), access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, backends

    runner, backends = await start()
    app = TraceHubApp(url)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await runner.cleanup()
        await backends.close()
        await wait_for(lambda: app.model.connection.link in (Link.DISCONNECTED, Link.RECONNECTING),
                       what="lost connection")  # fmt: skip
        assert "connection lost" in " ".join(event.text for event in app.model.events)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/health")
        runner, backends = await start()
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post("/ingest", json=batch("back-svc", [1, 2]))
                assert response.status_code == 200
            await wait_for(lambda: app.model.connection.link is Link.CONNECTED, timeout=20,
                           what="reconnected")  # fmt: skip
            await show(pilot, "2")
            await wait_for(lambda: {r.service for r in shown_rows(app)} == {"back-svc"},
                           what="rows caught up")  # fmt: skip
        finally:
            await runner.cleanup()
            await backends.close()


async def test_tokens_reach_socket_and_api(isolated: Isolated) -> None:
    port = free_port()
    backends = await open_backends(isolated.settings(port=port))
    tokens = Tokens({"read-secret": Principal(READ), "admin-secret": Principal(ADMIN)})
    runner = web.AppRunner(create_app(backends, tokens=tokens), access_log=None,
                           shutdown_timeout=1.0)  # fmt: skip
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        anonymous = TraceHubApp(url)
        async with anonymous.run_test(size=SIZE):
            await wait_for(lambda: anonymous.model.connection.link is Link.DISCONNECTED,
                           what="rejected connection")  # fmt: skip
            assert "read token" in anonymous.model.connection.error

        reader = TraceHubApp(url, token="read-secret")
        async with reader.run_test(size=SIZE, notifications=True) as pilot:
            await connected(reader)
            await pilot.press("d")
            await wait_for(
                lambda: "403" in screen_text(reader), what="forbidden notice"
            )

        admin = TraceHubApp(url, token="admin-secret")
        async with admin.run_test(size=SIZE) as pilot:
            await connected(admin)
            await pilot.press("d")
            await wait_for(
                lambda: "⚠ delay-ack" in screen_text(admin), what="fault badge"
            )
    finally:
        await runner.cleanup()
        await backends.close()


# --- tracehub up ------------------------------------------------------------------


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    log_path = tmp_path / "stubborn.log"
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    output = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-c", stubborn], stdout=output)
    deadline = time.monotonic() + 10
    while b"ready" not in log_path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)

    started = time.monotonic()
    stop(Child("stubborn", process, log_path, output), timeout_s=0.5)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_children_start_and_stop_a_server(tmp_path: Path, isolated: Isolated) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = isolated.env(TRACEHUB_PORT=str(port))
    group = Children(tmp_path, stop_timeout_s=20)
    server = group.start("server", ["serve", "--port", str(port)], env)
    try:
        wait_healthy(url, server, timeout_s=60)
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        group.stop_all()
    assert server.process.returncode == 0
    assert "TraceHub stopping" in (tmp_path / "server.log").read_text()


def test_textual_imported_only_in_tui() -> None:
    package = Path(tracehub.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "tui" not in path.relative_to(package).parts
        and re.search(r"^\s*(from|import) textual", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_help_does_not_load_textual() -> None:
    script = (
        "import sys\n"
        "from tracehub.cli import register_commands\n"
        "register_commands()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_command_lookup() -> None:
    assert command_exists("inject")
    assert command_exists("tui")
    assert not command_exists("no-such-command")
