"""ACK latency under a steady open-loop load, with two workers committing meanwhile.

Requests leave on schedule (benchmarks.loadgen ``open`` mode) and each latency runs
from the scheduled send time to the end of the response, so a stalled server shows
up in full instead of slowing the load down.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from benchmarks.harness import Bench, TraceHub, running_tracehub, start_loadgens
from benchmarks.results import Figure, Target, percentile

log = logging.getLogger(__name__)

SECTION = "4 ACK latency"
TARGET_P99_MS = 5.0
WORKERS = 2


async def run_once(
    bench: Bench, hub: TraceHub, options: dict[str, Any]
) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    spec = {
        "mode": "open",
        "urls": [f"{u}/ingest" for u in hub.urls],
        "services": [f"lat-{tag}-{i:02d}" for i in range(options["latency_services"])],
        "batch": options["latency_batch"],
        "rate": options["latency_rate"],
        "duration_s": options["latency_s"],
        "deadline_s": 60.0,
    }
    generators, _ = await start_loadgens(bench, [spec])
    return await generators[0].result(options["latency_s"] + 90)


def summarise(result: dict[str, Any], options: dict[str, Any]) -> dict[str, float]:
    latencies = result["latencies_ms"]
    if not latencies:
        raise RuntimeError(
            f"no request returned HTTP 200: {result['statuses']} {result['errors']}"
        )
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "p99.9": percentile(latencies, 99.9),
        "rate": len(latencies) * options["latency_batch"] / options["latency_s"],
        "failed": result["requests"]
        - len(latencies)
        + sum(result["errors"].values())
        + result["skipped"],
    }


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    runs: list[dict[str, float]] = []
    async with running_tracehub(bench, workers=WORKERS) as hub:
        for _ in range(bench.runs):
            runs.append(summarise(await run_once(bench, hub, options), options))
            await hub.reset()
            await asyncio.sleep(0)
    failed = sum(r["failed"] for r in runs)
    rate, batch = options["latency_rate"], options["latency_batch"]
    load = f"{rate:,} events/s as {rate // batch} requests/s of {batch}, {options['latency_s']:.0f}s"
    void = f"{failed:.0f} requests failed or were skipped" if failed else ""
    figures = [
        Figure(SECTION, f"ACK p50 ({load})", "ms", [r["p50"] for r in runs], void=void),
        Figure(
            SECTION,
            "ACK p99",
            "ms",
            [r["p99"] for r in runs],
            Target("<=", TARGET_P99_MS),
            void=void,
        ),
        Figure(SECTION, "ACK p99.9", "ms", [r["p99.9"] for r in runs], void=void),
        Figure(
            SECTION,
            "acknowledged rate (HTTP 200)",
            "events/s",
            [r["rate"] for r in runs],
        ),
    ]
    return figures
