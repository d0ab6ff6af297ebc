"""Committed throughput: events per second from the first POST /ingest until every
row is committed in PostgreSQL and covered by durableTill in GET /metrics.

Each run uses services of its own, then the rows are counted: a run with a row
missing or duplicated makes its figure void. Between runs, POST /metrics/control
``reset`` with ``all`` empties the tables and the Redis keys.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import (
    Bench,
    CpuMeter,
    RssSampler,
    TraceHub,
    durable_marks,
    events_per_service,
    running_tracehub,
    server_pids,
    split_services,
    start_loadgens,
    wait_until,
)
from benchmarks.profile import record, stop
from benchmarks.results import Figure, Target

log = logging.getLogger(__name__)

SECTION = "1 committed throughput"
TARGET_EPS = 150_000
MIN_DEADLINE_S = 120.0
SLOWEST_EXPECTED_EPS = 2_000  # sets each run's deadline: events / this rate
DRAIN_POLL_S = 0.05


@dataclass(frozen=True)
class Config:
    services: int
    batch: int
    workers: int

    @property
    def label(self) -> str:
        plural = "s" if self.workers > 1 else ""
        return f"{self.services} services, batch {self.batch}, {self.workers} worker{plural}"

    @property
    def has_target(self) -> bool:
        return self.batch == 1000 and self.workers == 2


@dataclass
class RunOutcome:
    eps: float
    void: str = ""
    seconds: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core by role


def matrix(
    services: Sequence[int], batches: Sequence[int], workers: Sequence[int]
) -> list[Config]:
    return [Config(s, b, w) for w in workers for b in batches for s in services]


async def run_once(
    bench: Bench, hub: TraceHub, config: Config, events: int, processes: int
) -> RunOutcome:
    """Drive one run to completion and check its rows; never raises on a slow run."""
    tag = secrets.token_hex(3)
    services = [f"tp-{tag}-{i:02d}" for i in range(config.services)]
    counts = events_per_service(events, config.services)
    specs = []
    for group in split_services(services, processes):
        specs.append(
            {
                "mode": "closed",
                "urls": [f"{u}/ingest" for u in hub.urls],
                "batch": config.batch,
                "services": [services[i] for i in group],
                "indexes": group,
                "events": [counts[i] for i in group],
                "deadline_s": deadline_s(events),
            }
        )
    with RssSampler(hub.pids()) as sampler:
        generators, _ = await start_loadgens(bench, specs)
        meter = CpuMeter(
            {
                **hub.pids(),
                "loadgen": [g.child.pid for g in generators],
                **server_pids(),
            }
        )
        meter.start()
        results = await asyncio.gather(
            *(g.result(deadline_s(events) + 30) for g in generators)
        )
        expected = dict(zip(services, counts))
        try:
            done_at = await wait_durable(hub.url, expected, deadline_s(events))
        except TimeoutError as exc:
            return RunOutcome(
                0.0, f"not durable in time: {exc}", load=merge_results(results)
            )
        cpu = meter.stop()
    first_post = min(r["first_post"] for r in results if r["first_post"] is not None)
    load = merge_results(results)
    seconds = done_at - first_post
    void = check_rows(bench, expected)
    if load["failed_batches"]:
        void = f"{load['failed_batches']} batches never accepted; {void}".rstrip("; ")
    outcome = RunOutcome(
        events / seconds, void, seconds, dict(sampler.peak_mb), load, cpu
    )
    log.info(
        "throughput %s: %d events in %.2fs = %.0f events/s %s",
        config.label,
        events,
        seconds,
        outcome.eps,
        void,
    )
    return outcome


def deadline_s(events: int) -> float:
    return max(MIN_DEADLINE_S, events / SLOWEST_EXPECTED_EPS)


async def wait_durable(url: str, expected: dict[str, int], timeout: float) -> float:
    """Poll GET /metrics until durableTill reaches the last seq of every service;
    returns the epoch time of the poll that saw it."""

    async def all_durable() -> float | None:
        marks = await durable_marks(url)
        if all(marks.get(service, 0) >= last for service, last in expected.items()):
            return time.time()
        return None

    return await wait_until(
        all_durable, timeout, "durableTill of every service", interval=DRAIN_POLL_S
    )


def check_rows(bench: Bench, expected: dict[str, int]) -> str:
    """Return why the stored rows differ from the ones sent, or '' when they match."""
    rows = bench.sql(
        "SELECT service, count(*), count(DISTINCT seq), min(seq), max(seq) FROM logs"
        " WHERE service = ANY(%s) GROUP BY service",
        (list(expected),),
    )
    found = {row[0]: row[1:] for row in rows}
    problems = []
    for service, last in expected.items():
        total, distinct, first, top = found.get(service, (0, 0, None, None))
        if total != last or distinct != last or first != 1 or top != last:
            problems.append(
                f"{service}: {total} rows, {distinct} distinct seqs, expected {last}"
            )
    if problems:
        return f"row check failed: {'; '.join(problems[:3])}"
    return ""


def merge_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "requests": 0,
        "retries": 0,
        "failed_batches": 0,
        "statuses": {},
    }
    for result in results:
        for key in ("requests", "retries", "failed_batches"):
            merged[key] += result[key]
        for status, n in result["statuses"].items():
            merged["statuses"][status] = merged["statuses"].get(status, 0) + n
        for error, n in result["errors"].items():
            merged.setdefault("errors", {})[error] = (
                merged.get("errors", {}).get(error, 0) + n
            )
    return merged


def run_note(outcomes: Sequence[RunOutcome]) -> str:
    retries = sum(o.load.get("retries", 0) for o in outcomes)
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        for status, n in outcome.load.get("statuses", {}).items():
            if status != "200":
                statuses[status] = statuses.get(status, 0) + n
    parts = [cpu_note(outcomes)]
    if retries:
        parts.append(f"{retries} retries")
    if statuses:
        parts.append(
            "answers " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        )
    return "; ".join(p for p in parts if p)


def cpu_note(outcomes: Sequence[RunOutcome]) -> str:
    """Return the median CPU share by role over the runs, e.g. 'CPU % of a core: serve 98'."""
    roles = sorted({role for o in outcomes for role in o.cpu})
    if not roles:
        return ""
    shares = [
        f"{role} {statistics.median(o.cpu.get(role, 0.0) for o in outcomes):.0f}"
        for role in roles
    ]
    return "CPU % of a core: " + ", ".join(shares)


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    """Run every configuration bench.runs times; store outcomes in shared['throughput']."""
    configs = matrix(options["services"], options["batches"], options["workers"])
    figures = []
    outcomes_by_label: dict[str, list[RunOutcome]] = {}
    async with running_tracehub(bench, workers=1) as hub:
        for config in configs:
            await hub.set_workers(config.workers)
            outcomes = [
                await guarded_run(bench, hub, config, options)
                for _ in range(bench.runs)
            ]
            outcomes_by_label[config.label] = outcomes
            figures.append(figure_of(config, outcomes, options["events"]))
            if (
                options.get("profile")
                and config.has_target
                and not shared.get("profiled")
            ):
                await profiled_run(bench, hub, config, options)
                shared["profiled"] = True
    shared["throughput"] = {"configs": configs, "outcomes": outcomes_by_label}
    return figures


async def guarded_run(
    bench: Bench, hub: TraceHub, config: Config, options: dict[str, Any]
) -> RunOutcome:
    """Run once and reset; a run whose processes failed is void, and TraceHub restarts."""
    try:
        outcome = await run_once(
            bench, hub, config, options["events"], options["processes"]
        )
        await hub.reset()
        return outcome
    except (TimeoutError, RuntimeError, OSError, aiohttp.ClientError) as exc:
        reason = "; ".join(hub.exited()) or f"{type(exc).__name__}: {exc}"
        log.error("throughput run of %s failed: %s", config.label, reason)
        await hub.restart(config.workers)
        return RunOutcome(0.0, f"run failed: {reason}")


async def profiled_run(
    bench: Bench, hub: TraceHub, config: Config, options: dict[str, Any]
) -> None:
    """Run once more (not counted) with py-spy on the serve node and the first worker."""
    folder: Path = options["profile"]
    spies = [
        record(bench, hub.servers[0].pid, folder / "serve.txt"),
        record(bench, hub.workers[0].pid, folder / "worker.txt"),
    ]
    try:
        outcome = await run_once(
            bench, hub, config, options["events"], options["processes"]
        )
        log.info("profiled run: %.0f events/s; profiles in %s", outcome.eps, folder)
    finally:
        for spy in spies:
            if spy is not None:
                stop(bench, spy)
        await hub.reset()


def figure_of(config: Config, outcomes: Sequence[RunOutcome], events: int) -> Figure:
    voids = [o.void for o in outcomes if o.void]
    return Figure(
        SECTION,
        f"{config.label} ({events:,} events)",
        "events/s",
        [o.eps for o in outcomes],
        target=Target(">=", TARGET_EPS) if config.has_target else None,
        void=voids[0] if voids else "",
        note=run_note(outcomes),
    )
