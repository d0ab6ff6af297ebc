"""SVG snapshots of each dashboard screen at 80x24 and 160x48, on fixed data.

No server runs: fixed events go through the app's own message handlers, the clock
is fixed, and nothing that blinks has focus. Update the files under
tests/__snapshots__/ with `pytest tests/test_tui_snapshots.py --snapshot-update`
after checking the new pictures by eye.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from textual.pilot import Pilot

from tracehub.tui import messages
from tracehub.tui.app import TraceHubApp
from tracehub.tui.model import Connection, Link

NOW = 1_796_385_600.0  # 2026-12-04 12:00:00 UTC
URL = "http://127.0.0.1:3001"
SIZES = [(80, 24), (160, 48)]
SCREEN_KEYS = {
    "overview": ("1", "OverviewScreen"),
    "logs": ("2", "LogsScreen"),
    "replay": ("3", "ReplayScreen"),
    "queue": ("4", "QueueScreen"),
    "services": ("5", "ServicesScreen"),
}
SERVICES = ("payment-service", "checkout-api", "email-worker")
LEVELS = ("info", "info", "debug", "warn", "info", "error", "info", "trace")


def iso(seconds_before: float) -> str:
    from datetime import datetime, timezone

    moment = datetime.fromtimestamp(NOW - seconds_before, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def metrics_body(depth: int, eps: int) -> dict[str, Any]:
    return {
        "at": NOW,
        "eps": {"1s": eps, "1m": 812.4},
        "committedEps": {"1s": eps - 20, "1m": 800.0},
        "ackRate": {"1s": 41, "1m": 39.5},
        "errorRate": 0.012,
        "ackLatencyMs": {"p50": 2.1, "p99": 18.7},
        "queue": {"depth": depth, "pending": 3, "retry": depth // 40, "dead": 1},
        "replays": {"pending": 2, "completed": 5, "lost": 0},
        "workers": [
            {
                "name": "node-a-1",
                "pid": 4242,
                "host": "node-a",
                "state": "running",
                "at": NOW - 1,
                "startedAt": NOW - 900,
                "batches": 1204,
                "rows": 96320,
                "lastBatchAt": NOW - 0.4,
                "alive": True,
            },
        ],  # fmt: skip
        "services": [
            {
                "service": "payment-service",
                "base": 1,
                "ackTill": 48_211,
                "durableTill": 48_190,
                "missingTotal": 3,
                "lost": 0,
                "epoch": "e1",
                "eps1s": 412,
                "eps1m": 398.2,
                "errorRate": 0.021,
                "lag": 21,
            },
            {
                "service": "checkout-api",
                "base": 1,
                "ackTill": 30_077,
                "durableTill": 30_077,
                "missingTotal": 0,
                "lost": 0,
                "epoch": None,
                "eps1s": 380,
                "eps1m": 371.0,
                "errorRate": 0.004,
                "lag": 0,
            },
            {
                "service": "email-worker",
                "base": 1,
                "ackTill": 905,
                "durableTill": 905,
                "missingTotal": 0,
                "lost": 0,
                "epoch": None,
                "eps1s": 0,
                "eps1m": 0.0,
                "errorRate": 0.0,
                "lag": 0,
            },
        ],  # fmt: skip
        "faults": [
            {
                "action": "delay-ack",
                "startedAt": NOW - 1.2,
                "endsAt": NOW + 1.8,
                "remainingMs": 1800,
            },
        ],  # fmt: skip
    }


def log_events() -> list[dict[str, Any]]:
    events = []
    for index in range(60):
        service = SERVICES[index % 3]
        seq = (
            48_100
            + index // 3
            + (4 if index >= 45 and service == "payment-service" else 0)
        )
        events.append({
            "service": service, "seq": seq, "level": LEVELS[index % len(LEVELS)],
            "message": f"order {7000 + index} {'charge.created' if index % 2 else 'cart.updated'}",
            "request_id": f"r-{index}", "ts": iso(60 - index), "attrs": {"region": "eu-west-1"},
        })  # fmt: skip
    return events


REPLAYS = {
    "replays": [
        {"id": 7, "service": "payment-service", "from_seq": 48_116, "to_seq": 48_118,
         "status": "pending", "reason": "gap", "created_at": iso(4), "completed_at": None,
         "attempts": 1, "filled": 0},
        {"id": 6, "service": "checkout-api", "from_seq": 29_990, "to_seq": 29_999,
         "status": "completed", "reason": "gap", "created_at": iso(75),
         "completed_at": iso(74.2), "attempts": 1, "filled": 10},
        {"id": 5, "service": "email-worker", "from_seq": 880, "to_seq": 880,
         "status": "lost", "reason": "gap", "created_at": iso(400), "completed_at": iso(100),
         "attempts": 5, "filled": 0},
    ],
    "counts": {"pending": 1, "completed": 5, "lost": 1},
}  # fmt: skip

QUEUE = {
    "stream": {"key": "tracehub:queue:logs", "length": 120, "pending": 3},
    "retry": {"key": "tracehub:queue:retry", "length": 3},
    "dead": {"key": "tracehub:queue:dead", "length": 1},
    "consumers": [{"name": "node-a-1", "pending": 3, "idleMs": 400}],
}


async def feed(pilot: Pilot[None]) -> None:
    """Send the fixed data through the app's message handlers."""
    app = pilot.app
    post = app.post_message
    post(messages.ConnectionChanged(Connection(Link.CONNECTED, URL)))
    for step in range(40):
        post(
            messages.MetricsUpdated(
                metrics_body(depth=(step * 37) % 160, eps=600 + step * 9)
            )
        )
        await pilot.pause()
    for event in log_events():
        app.buffer.add_log(event)  # type: ignore[attr-defined]
    app.buffer.add_skipped(1240)  # type: ignore[attr-defined]
    post(messages.LiveReady())
    post(messages.ReplaysLoaded(REPLAYS))
    post(messages.QueueLoaded(QUEUE))
    post(
        messages.WorkerCrashed(
            {"worker": "node-a-1", "at": NOW - 30, "until": NOW - 25}
        )
    )
    post(messages.WorkerRecovered({"worker": "node-a-1", "at": NOW - 25}))
    post(messages.ReplayCompleted({"id": 6, "service": "checkout-api", "fromSeq": 29_990,
                                   "toSeq": 29_999, "count": 10, "latencyMs": 812.5}))  # fmt: skip
    post(messages.ControlApplied({"action": "delay-ack", "startedAt": NOW - 1.2,
                                  "endsAt": NOW + 1.8, "remainingMs": 1800, "at": NOW - 1.2,
                                  "active": metrics_body(0, 0)["faults"]}))  # fmt: skip
    await pilot.pause()


def steady_app() -> TraceHubApp:
    return TraceHubApp(URL, live=False, clock=lambda: NOW)


def then_press(*steps: tuple[str, str]) -> Callable[[Pilot[None]], Any]:
    """Feed the data, then press each key and wait for the screen it opens."""

    async def run(pilot: Pilot[None]) -> None:
        await feed(pilot)
        for key, screen_name in steps:
            await pilot.press(key)
            await settle(pilot, screen_name)

    return run


async def settle(pilot: Pilot[None], screen_name: str) -> None:
    """Wait, 5 s at most, until the named screen is current and mounted, since the
    first visit to a screen composes it after the key press returns."""
    for _ in range(100):
        screen = pilot.app.screen
        if type(screen).__name__ == screen_name and screen.is_mounted:
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError(f"{screen_name} did not open within 5 s")


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("screen", list(SCREEN_KEYS))
def test_screen_snapshot(snap_compare: Any, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(
        steady_app(), terminal_size=size, run_before=then_press(SCREEN_KEYS[screen])
    )


LOGS = SCREEN_KEYS["logs"]


def test_confirm_snapshot(snap_compare: Any) -> None:
    assert snap_compare(
        steady_app(), run_before=then_press(LOGS, ("f", "ConfirmScreen"))
    )


def test_log_detail_snapshot(snap_compare: Any) -> None:
    assert snap_compare(
        steady_app(), run_before=then_press(LOGS, ("enter", "LogDetailScreen"))
    )


def test_logs_without_color(snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(steady_app(), run_before=then_press(LOGS))
