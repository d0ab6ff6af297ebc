"""Live view: how far the Socket.IO ``log:new`` stream trails the newest committed log.

An open-loop load sends batches of 100 round-robin over 10 services, so the
schedule gives every seq its send time. Request j carries service j % S and seqs
(j // S) * 100 + 1 onwards, and it leaves at t0 + j * interval. Every 0.25 s the
harness reads durableTill per service (GET /metrics) and compares the send time
of the newest committed seq with that of the newest seq seen on ``log:new``:
the difference is how far behind the live stream is. The end-to-end lag (send
to ``log:new``) of each event is reported too.

When a ``tracehub tui`` command exists, it runs in a pseudo-terminal meanwhile and
its CPU share is measured; otherwise that figure is reported as not measured.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pty
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import socketio

from benchmarks.harness import (
    Bench,
    Child,
    TraceHub,
    durable_marks,
    running_tracehub,
    start_loadgens,
)
from benchmarks.results import Figure, Target, percentile

log = logging.getLogger(__name__)

SECTION = "7 live view"
SERVICES = 10
BATCH = 100
WORKERS = 2
SAMPLE_EVERY_S = 0.25
WARM_UP_S = 1.0
TARGET_BEHIND_S = 1.0
TUI_HELP_TIMEOUT_S = 20.0


@dataclass
class Schedule:
    """Maps (service index, seq) of the open-loop load to its scheduled send time."""

    t0: float
    interval: float

    def sent_at(self, service_index: int, seq: int) -> float:
        request = ((seq - 1) // BATCH) * SERVICES + service_index
        return self.t0 + request * self.interval


@dataclass
class LiveRun:
    behind_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    events: int = 0
    skipped: int = 0
    tui_cpu: float | None = None


def service_index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


class LiveClient:
    """Socket.IO client recording log:new events against the schedule."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.client = socketio.AsyncClient(reconnection=False)
        self.schedule: Schedule | None = None
        self.newest_seen = 0.0
        self.run = LiveRun()
        self.client.on("log:new", self._on_log)
        self.client.on("log:skipped", self._on_skipped)

    async def _on_log(self, data: dict[str, Any]) -> None:
        if self.schedule is None or not data.get("service", "").startswith(self.prefix):
            return
        sent = self.schedule.sent_at(service_index(data["service"]), data["seq"])
        self.newest_seen = max(self.newest_seen, sent)
        self.run.lag_s.append(time.time() - sent)
        self.run.events += 1

    async def _on_skipped(self, data: dict[str, Any]) -> None:
        self.run.skipped += int(data.get("count", 0))


async def sample_behind(hub: TraceHub, live: LiveClient, until: float) -> None:
    """Append (newest committed send time - newest seen send time) every SAMPLE_EVERY_S."""
    assert live.schedule is not None
    while time.time() < until:
        marks = await durable_marks(hub.url)
        committed = [
            live.schedule.sent_at(service_index(s), seq)
            for s, seq in marks.items()
            if s.startswith(live.prefix) and seq >= 1
        ]
        if (
            committed
            and live.newest_seen
            and time.time() > live.schedule.t0 + WARM_UP_S
        ):
            live.run.behind_s.append(max(0.0, max(committed) - live.newest_seen))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def run_once(bench: Bench, hub: TraceHub, options: dict[str, Any]) -> LiveRun:
    prefix = f"live-{secrets.token_hex(3)}-"
    live = LiveClient(prefix)
    await live.client.connect(hub.url, transports=["websocket"])
    tui = start_tui(bench, hub.url)
    try:
        spec = {
            "mode": "open",
            "urls": [f"{u}/ingest" for u in hub.urls],
            "batch": BATCH,
            "services": [f"{prefix}{i:02d}" for i in range(SERVICES)],
            "rate": options["live_rate"],
            "duration_s": options["live_s"],
            "deadline_s": 60.0,
        }
        generators, t0 = await start_loadgens(bench, [spec])
        live.schedule = Schedule(t0, BATCH / options["live_rate"])
        cpu_before = cpu_seconds(tui)
        await sample_behind(hub, live, t0 + options["live_s"])
        if tui is not None and cpu_before is not None:
            live.run.tui_cpu = (cpu_seconds(tui) - cpu_before) / options["live_s"] * 100  # type: ignore[operator]
        await generators[0].result(options["live_s"] + 90)
    finally:
        await live.client.disconnect()
        if tui is not None:
            tui.close(bench)
    return live.run


# --- the dashboard ------------------------------------------------------------------


@functools.cache
def tui_available() -> bool:
    """Tell whether this checkout has a `tracehub tui` command (checked once)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tracehub", "tui", "--help"],
            check=False,
            capture_output=True,
            timeout=TUI_HELP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


@dataclass
class Tui:
    """A `tracehub tui` process on a pseudo-terminal whose output is read and dropped."""

    child: Child
    master: int

    def close(self, bench: Bench) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        bench.stop(self.child)
        os.close(self.master)


def start_tui(bench: Bench, url: str) -> Tui | None:
    """Start `tracehub tui` on a 120x40 pseudo-terminal, or return None without one."""
    if not tui_available():
        return None
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {
        **bench.tracehub_env(),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "40",
    }
    child = bench.spawn(
        "tui",
        [sys.executable, "-m", "tracehub", "tui", "--url", url],
        env,
        stdin=slave,
        stdout=slave,
    )
    os.close(slave)
    asyncio.get_running_loop().add_reader(master, _drain, master)
    return Tui(child, master)


def _drain(fd: int) -> None:
    try:
        os.read(fd, 65536)
    except OSError:
        asyncio.get_running_loop().remove_reader(fd)


def cpu_seconds(tui: Tui | None) -> float | None:
    if tui is None:
        return None
    try:
        times = psutil.Process(tui.child.pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


# --- figures ------------------------------------------------------------------------


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    runs: list[LiveRun] = []
    async with running_tracehub(bench, workers=WORKERS) as hub:
        for _ in range(bench.runs):
            runs.append(await run_once(bench, hub, options))
            await hub.reset()
    empty = [r for r in runs if not r.behind_s or not r.lag_s]
    void = f"{len(empty)} runs saw no log:new event" if empty else ""
    load = f"{options['live_rate']:,} events/s, {options['live_s']:.0f}s, {SERVICES} services, {WORKERS} workers"
    behind = [r.behind_s or [0.0] for r in runs]
    lag = [r.lag_s or [0.0] for r in runs]
    figures = [
        Figure(
            SECTION,
            f"log:new behind newest committed, p50 ({load})",
            "s",
            [percentile(b, 50) for b in behind],
            void=void,
        ),
        Figure(
            SECTION,
            "log:new behind newest committed, p99",
            "s",
            [percentile(b, 99) for b in behind],
            Target("<", TARGET_BEHIND_S),
            void=void,
        ),
        Figure(
            SECTION,
            "send to log:new lag p50",
            "s",
            [percentile(x, 50) for x in lag],
            void=void,
        ),
        Figure(
            SECTION,
            "send to log:new lag p99",
            "s",
            [percentile(x, 99) for x in lag],
            void=void,
        ),
        Figure(
            SECTION,
            "log:new events received",
            "events/s",
            [r.events / options["live_s"] for r in runs],
            note=f"log:skipped reported {sum(r.skipped for r in runs):,} events",
        ),
    ]
    cpu = [r.tui_cpu for r in runs if r.tui_cpu is not None]
    if cpu:
        figures.append(
            Figure(
                SECTION, "tracehub tui CPU (pseudo-terminal 120x40)", "% of a core", cpu
            )
        )
    else:
        figures.append(
            Figure(
                SECTION,
                "tracehub tui CPU",
                "% of a core",
                note="not measured: no `tracehub tui` command in this checkout",
            )
        )
    return figures
