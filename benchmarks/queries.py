"""GET /logs latency per query shape on a large ``logs`` table, with query plans.

The table is loaded with COPY straight into ``logs`` (not through the API): 30
services interleaved, one row every few milliseconds over the last 7 days, the
Loghub lines as messages. The two listing indexes are dropped for the load and
built again from schema.sql afterwards, then the table is analysed.

Requests are sequential on one keep-alive connection, limit 100 each. The plans
come from ``EXPLAIN (ANALYZE, BUFFERS)`` of the exact SQL ``Store.query_logs``
builds for one request of each shape.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg

from benchmarks.ceilings import apply_schema
from benchmarks.harness import Bench, running_tracehub
from benchmarks.loadgen import Corpus
from benchmarks.results import Figure, Target, percentile
from tracehub.server.routes import parse_log_query
from tracehub.storage import COLUMNS, Store, encode_cursor

log = logging.getLogger(__name__)

SECTION = "6 query"
TARGET_P99_MS = 50.0
SERVICES = 30
SPAN = timedelta(days=7)
CHUNK_ROWS = 100_000
LISTING_INDEXES = ("logs_ts_id_idx", "logs_service_ts_id_idx")
SHAPE_BUDGET_S = {True: 2.0, False: 30.0}  # per shape and run, by quick
MIN_SAMPLES = 3
ABSENT_TEXT = "no-such-text-in-any-log"
WORD = re.compile(r"[A-Za-z]{6,}")


# --- loading -----------------------------------------------------------------------


def copy_lines(
    corpus: Corpus, start: int, stop: int, first_ts: float, step_s: float
) -> bytes:
    """Return COPY rows start..stop-1: row i is service i % 30, seq i // 30 + 1."""
    lines = []
    for i in range(start, stop):
        service = i % SERVICES
        seq = i // SERVICES + 1
        message, level = corpus.pick(service, seq)
        ts = datetime.fromtimestamp(first_ts + i * step_s, UTC).isoformat()
        text = message.replace("\\", "\\\\").replace("\t", "\\t")
        lines.append(
            f"q-{service:02d}\t{seq}\t{level}\t{text}\tr-{service}-{seq}\t{ts}\t\\N\t{ts}\n"
        )
    return "".join(lines).encode()


def load_table(bench: Bench, rows: int) -> tuple[float, float]:
    """Fill logs with rows rows; return (first ts, last ts) as epoch seconds."""
    corpus = Corpus.load(bench.loghub)
    last_ts = datetime.now(UTC).timestamp() - 60
    first_ts = last_ts - SPAN.total_seconds()
    step_s = SPAN.total_seconds() / rows
    started = time.monotonic()
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE logs")
        for index in LISTING_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        with conn.cursor().copy(f"COPY logs ({COLUMNS}) FROM STDIN") as copy:
            for start in range(0, rows, CHUNK_ROWS):
                copy.write(
                    copy_lines(
                        corpus, start, min(rows, start + CHUNK_ROWS), first_ts, step_s
                    )
                )
    apply_schema(bench)
    with psycopg.connect(bench.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE logs")
    log.info("loaded %d rows into logs in %.0fs", rows, time.monotonic() - started)
    return first_ts, first_ts + (rows - 1) * step_s


# --- shapes ------------------------------------------------------------------------


def pick_words(corpus: Corpus) -> tuple[str, str]:
    """Return a word in about 10% of the lines and a word in exactly one line."""
    frequency: Counter[str] = Counter()
    for line in corpus.lines:
        frequency.update({w.lower() for w in WORD.findall(line)})
    total = len(corpus.lines)
    common = min(frequency, key=lambda w: (abs(frequency[w] / total - 0.1), w))
    rare = min(w for w, n in frequency.items() if n == 1)
    return common, rare


def shapes(
    bench: Bench, first_ts: float, last_ts: float, rows: int
) -> dict[str, Callable[[random.Random], dict[str, str]]]:
    """Return, per shape name, a function giving the query string of one request."""
    common, rare = pick_words(Corpus.load(bench.loghub))

    def service(rng: random.Random) -> str:
        return f"q-{rng.randrange(SERVICES):02d}"

    def window(rng: random.Random) -> dict[str, str]:
        start = rng.uniform(first_ts, last_ts - 3600)
        return {"from": iso(start), "to": iso(start + 3600)}

    cursors = deep_cursors(bench)
    return {
        "service + level=error": lambda rng: {
            "service": service(rng),
            "level": "error",
        },
        f"q={common} (in ~10% of rows)": lambda rng: {"q": common},
        f"q={rare} (in ~1 of {len(Corpus.load(bench.loghub).lines):,} rows)": lambda rng: {
            "q": rare
        },
        f"q={ABSENT_TEXT} (in no row)": lambda rng: {"q": ABSENT_TEXT},
        "time range of 1 hour": window,
        "service + time range of 1 hour": lambda rng: {
            "service": service(rng),
            **window(rng),
        },
        "deep cursor (past half the table)": lambda rng: {
            "cursor": rng.choice(cursors)
        },
        "service + deep cursor": lambda rng: {
            "service": service(rng),
            "cursor": rng.choice(cursors),
        },
    }


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def deep_cursors(bench: Bench, count: int = 50) -> list[str]:
    """Return cursors of random rows older than the newest half of the table (ids
    follow ts, since the load writes rows in ts order)."""
    rng = random.Random(7)
    low, high = bench.sql("SELECT min(id), max(id) FROM logs")[0]
    ids = [rng.randrange(low, low + max(1, (high - low) // 2)) for _ in range(count)]
    found = bench.sql("SELECT ts, id FROM logs WHERE id = ANY(%s)", (ids,))
    if not found:
        raise RuntimeError(f"no row of logs has an id among {ids[:5]}...")
    return [encode_cursor(ts, row_id) for ts, row_id in found]


# --- measuring ---------------------------------------------------------------------


async def sample_shape(
    session: aiohttp.ClientSession,
    url: str,
    make: Callable[[random.Random], dict[str, str]],
    requests: int,
    budget_s: float,
    seed: int,
) -> list[float]:
    """Return latencies in ms of up to requests GET /logs, stopping after budget_s."""
    rng = random.Random(seed)
    latencies: list[float] = []
    deadline = time.monotonic() + budget_s
    for _ in range(requests):
        params = {"limit": "100", **make(rng)}
        started = time.perf_counter()
        async with session.get(f"{url}/logs", params=params) as response:
            body = await response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(
                f"GET /logs {params} returned HTTP {response.status}: {body[:300]!r}"
            )
        if time.monotonic() > deadline and len(latencies) >= MIN_SAMPLES:
            break
    return latencies


@contextlib.asynccontextmanager
async def captured_sql() -> AsyncIterator[Callable[[dict[str, str]], Any]]:
    """Yield a function returning the (sql, params) Store.query_logs runs for a query string."""

    class Capture:
        def __init__(self) -> None:
            self.statement: tuple[str, Any] = ("", None)

        @contextlib.asynccontextmanager
        async def connection(self) -> AsyncIterator[Capture]:
            yield self

        @contextlib.asynccontextmanager
        async def transaction(self) -> AsyncIterator[Capture]:
            yield self

        def cursor(self, row_factory: Any = None) -> Capture:
            return self

        async def execute(self, sql: str, params: Any) -> None:
            self.statement = (sql, params)  # the last one is the query itself

        async def fetchall(self) -> list[Any]:
            return []

    store = Store("postgresql://unused")
    capture = Capture()
    store.pool = capture  # type: ignore[assignment]

    async def statement(params: dict[str, str]) -> tuple[str, Any]:
        await store.query_logs(parse_log_query({"limit": "100", **params}))
        return capture.statement

    yield statement


async def explain_all(
    bench: Bench, makers: dict[str, Callable[[random.Random], dict[str, str]]]
) -> dict[str, str]:
    plans = {}
    async with captured_sql() as statement:
        for name, make in makers.items():
            params = make(random.Random(1))
            sql, values = await statement(params)
            rows = bench.sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", values)
            plans[name] = (
                f"-- GET /logs?{'&'.join(f'{k}={v}' for k, v in params.items())}&limit=100\n"
                + "\n".join(r[0] for r in rows)
            )
    return plans


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    apply_schema(bench)
    rows = options["query_rows"]
    first_ts, last_ts = load_table(bench, rows)
    makers = shapes(bench, first_ts, last_ts, rows)
    results: dict[str, list[list[float]]] = {name: [] for name in makers}
    async with running_tracehub(bench, workers=1) as hub:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(120)) as session:
            for run in range(bench.runs):
                for seed, (name, make) in enumerate(makers.items()):
                    results[name].append(
                        await sample_shape(
                            session,
                            hub.url,
                            make,
                            options["query_requests"],
                            SHAPE_BUDGET_S[bench.quick],
                            seed + 100 * run,
                        )
                    )
    shared["plans"] = await explain_all(bench, makers)
    bench.sql("TRUNCATE logs")
    figures = []
    for name, runs in results.items():
        counts = (
            f"{min(len(r) for r in runs)}-{max(len(r) for r in runs)} requests per run"
        )
        figures.append(
            Figure(
                SECTION,
                f"{name} p50 ({rows:,} rows)",
                "ms",
                [percentile(r, 50) for r in runs],
                note=counts,
            )
        )
        figures.append(
            Figure(
                SECTION,
                f"{name} p99",
                "ms",
                [percentile(r, 99) for r in runs],
                Target("<=", TARGET_P99_MS),
            )
        )
    return figures
