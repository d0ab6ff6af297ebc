"""Ceilings, measured in the same run on the same schema, and TraceHub's share of each.

- load generator alone: the same producers against a handler that only reads the
  body (benchmarks.bare ``/sink``); the most any server can get from this client.
- bare aiohttp: a handler that decodes the JSON with orjson and responds.
- XADD: each request body XADDed into a Redis stream, one producer task per
  service as the load generator has, all on one connection pool.
- COPY: the rows TraceHub would write (``parse_batch`` then ``format_rows``), copied
  straight into ``logs`` with psycopg 3, one transaction per 50 batches as a worker
  round commits (``worker_batch`` = 50 stream entries).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import psycopg
import redis.asyncio as aioredis

from benchmarks.harness import (
    Bench,
    events_per_service,
    free_port,
    split_services,
    start_loadgens,
    wait_healthy,
)
from benchmarks.loadgen import Corpus, service_bodies
from benchmarks.results import Figure, Target
from benchmarks.throughput import Config, RunOutcome, merge_results
from tracehub.config import Settings
from tracehub.protocol import parse_batch
from tracehub.storage import COLUMNS, format_rows

log = logging.getLogger(__name__)

SECTION = "2 ceilings"
CEILING_SERVICES = 30
BATCHES_PER_TRANSACTION = 50
TARGET_COPY_FRACTION = 0.5
RUN_TIMEOUT_S = 600.0


def apply_schema(bench: Bench) -> None:
    """Create TraceHub's tables and indexes in the bench database (idempotent)."""
    schema = resources.files("tracehub").joinpath("sql/schema.sql").read_text()
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute(schema)  # type: ignore[arg-type]


def plan_bodies(bench: Bench, events: int, batch: int) -> dict[str, list[bytes]]:
    corpus = Corpus.load(bench.loghub)
    counts = events_per_service(events, CEILING_SERVICES)
    return {
        f"ceil-{i:02d}": service_bodies(corpus, f"ceil-{i:02d}", i, counts[i], batch)
        for i in range(CEILING_SERVICES)
    }


# --- HTTP ceilings ---------------------------------------------------------------------


async def http_rate(
    bench: Bench, url: str, events: int, batch: int, processes: int
) -> float:
    """Return events/s of closed-loop producers posting to url (first request to last response)."""
    services = [f"ceil-{i:02d}" for i in range(CEILING_SERVICES)]
    counts = events_per_service(events, CEILING_SERVICES)
    specs = [
        {
            "mode": "closed",
            "urls": [url],
            "batch": batch,
            "services": [services[i] for i in group],
            "indexes": group,
            "events": [counts[i] for i in group],
            "deadline_s": RUN_TIMEOUT_S,
        }
        for group in split_services(services, processes)
    ]
    generators, _ = await start_loadgens(bench, specs)
    results = await asyncio.gather(*(g.result(RUN_TIMEOUT_S + 30) for g in generators))
    merged = merge_results(results)
    if merged["failed_batches"]:
        raise RuntimeError(
            f"{merged['failed_batches']} batches failed against {url}: {merged}"
        )
    first = min(r["first_post"] for r in results)
    last = max(r["last_response"] for r in results)
    return events / (last - first)


async def bare_rates(
    bench: Bench, events: int, batch: int, processes: int
) -> tuple[float, float]:
    """Return (generator alone, bare aiohttp) events/s against benchmarks.bare."""
    port = free_port()
    server = bench.spawn(
        f"bare-{port}", [sys.executable, "-m", "benchmarks.bare", str(port)]
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", [server])
        sink = await http_rate(
            bench, f"http://127.0.0.1:{port}/sink", events, batch, processes
        )
        bare = await http_rate(
            bench, f"http://127.0.0.1:{port}/ingest", events, batch, processes
        )
    finally:
        bench.stop(server)
    return sink, bare


# --- Redis and PostgreSQL ceilings -------------------------------------------------------


async def xadd_rate(bench: Bench, bodies: dict[str, list[bytes]], events: int) -> float:
    client = aioredis.from_url(bench.redis_url)
    key = f"{bench.prefix}ceiling:xadd"

    async def producer(one_service: Sequence[bytes]) -> None:
        for body in one_service:
            await client.xadd(key, {"b": body})

    try:
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(producer(b) for b in bodies.values())), RUN_TIMEOUT_S
        )
        seconds = time.perf_counter() - started
    finally:
        await client.delete(key)
        await client.aclose()
    return events / seconds


def copy_chunks(bodies: dict[str, list[bytes]]) -> list[bytes]:
    """Return the COPY text TraceHub's worker would write, one chunk per transaction."""
    now = datetime.now(UTC)
    limits = Settings()
    rows = []
    for one_service in bodies.values():
        for body in one_service:
            batch = parse_batch(
                orjson.loads(body),
                now=now,
                max_entries=limits.max_batch_entries,
                max_message_bytes=limits.max_message_bytes,
                max_attrs_bytes=limits.max_attrs_bytes,
                max_attrs_depth=limits.max_attrs_depth,
                dumps=orjson.dumps,
            )
            rows.append(format_rows(batch.service, batch.entries, now))
    step = BATCHES_PER_TRANSACTION
    return [b"".join(rows[i : i + step]) for i in range(0, len(rows), step)]


def copy_rate(bench: Bench, chunks: Sequence[bytes], events: int) -> float:
    """COPY chunks into logs, one transaction each; return events/s; empties logs after."""
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE logs")
        started = time.perf_counter()
        for chunk in chunks:
            with conn.transaction():
                with conn.cursor().copy(f"COPY logs ({COLUMNS}) FROM STDIN") as copy:
                    copy.write(chunk)
        seconds = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM logs").fetchone()
        conn.execute("TRUNCATE logs")
    if stored is None or stored[0] != events:
        raise RuntimeError(f"COPY ceiling stored {stored} rows, expected {events}")
    return events / seconds


# --- figures --------------------------------------------------------------------------


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    apply_schema(bench)
    events, processes = options["events"], options["processes"]
    figures: list[Figure] = []
    ceilings: dict[tuple[str, int], list[float]] = {}
    for batch in options["batches"]:
        bodies = plan_bodies(bench, events, batch)
        chunks = await asyncio.to_thread(copy_chunks, bodies)
        runs: dict[str, list[float]] = {
            "generator": [],
            "bare": [],
            "xadd": [],
            "copy": [],
        }
        for _ in range(bench.runs):
            sink, bare = await bare_rates(bench, events, batch, processes)
            runs["generator"].append(sink)
            runs["bare"].append(bare)
            runs["xadd"].append(await xadd_rate(bench, bodies, events))
            runs["copy"].append(
                await asyncio.to_thread(copy_rate, bench, chunks, events)
            )
        del bodies, chunks
        for kind, values in runs.items():
            ceilings[(kind, batch)] = values
        figures += ceiling_figures(runs, batch, events)
    shared["ceilings"] = ceilings
    figures += fraction_figures(shared.get("throughput"), ceilings)
    return figures


LABELS = {
    "generator": "load generator alone (POST /sink)",
    "bare": "bare aiohttp handler (orjson parse)",
    "xadd": "XADD of the request bodies",
    "copy": "COPY straight into logs",
}


def ceiling_figures(
    runs: dict[str, list[float]], batch: int, events: int
) -> list[Figure]:
    return [
        Figure(
            SECTION,
            f"{LABELS[kind]}, batch {batch} ({events:,} events)",
            "events/s",
            values,
        )
        for kind, values in runs.items()
    ]


def fraction_figures(
    throughput: dict[str, Any] | None, ceilings: dict[tuple[str, int], list[float]]
) -> list[Figure]:
    """TraceHub's committed throughput over each ceiling of the same batch size, for
    the configurations that have a target (batches of 1,000, 2 workers)."""
    if not throughput:
        return []
    figures = []
    configs: list[Config] = throughput["configs"]
    for config in configs:
        outcomes: list[RunOutcome] = throughput["outcomes"][config.label]
        for kind in ("copy", "xadd", "bare"):
            ceiling = ceilings.get((kind, config.batch))
            if not ceiling or not config.has_target:
                continue
            median = statistics.median(ceiling)
            target = Target(">=", TARGET_COPY_FRACTION) if kind == "copy" else None
            void = next((o.void for o in outcomes if o.void), "")
            figures.append(
                Figure(
                    SECTION,
                    f"TraceHub / {LABELS[kind]}: {config.label}",
                    "x",
                    [o.eps / median for o in outcomes],
                    target=target,
                    void=void,
                )
            )
    return figures
