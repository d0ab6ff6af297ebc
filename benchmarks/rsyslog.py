"""The peer: rsyslog (imtcp in, ompgsql out) storing the same lines in PostgreSQL.

Our own rsyslogd runs with ``-n -f <config> -i <pidfile>`` and a work folder under
the bench folder; the system's rsyslog configuration and service are never read
or touched. It listens on a free 127.0.0.1 port and writes into ``rsyslog_logs``,
a copy of ``logs`` with the same columns, indexes and UNIQUE (service, seq), one
``INSERT ... ON CONFLICT DO NOTHING`` per line, as ompgsql executes its template
once per message inside each batch's transaction.

Lines are RFC 5424: APP-NAME is the service, PROCID the seq, MSGID the level.
The request_id is not sent, since ompgsql has no field for it without parsing
structured data.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from benchmarks.ceilings import apply_schema
from benchmarks.harness import Bench, Child, events_per_service, free_port, wait_until
from benchmarks.loadgen import Corpus
from benchmarks.results import Figure, Target
from benchmarks.throughput import Config, RunOutcome

log = logging.getLogger(__name__)

SECTION = "3 rsyslog peer"
SERVICES = 30
CONNECTIONS = 4
TARGET_MULTIPLE = 5.0
START_TIMEOUT_S = 15.0
MIN_DRAIN_TIMEOUT_S = 120.0
SLOWEST_EXPECTED_EPS = 1_000
SEVERITY = {"fatal": 2, "error": 3, "warn": 4, "info": 6, "debug": 7, "trace": 7}
FACILITY_LOCAL0 = 16


@dataclass(frozen=True)
class RsyslogConfig:
    """The tunables that matter for ompgsql: action queue workers and batch size."""

    input: str = "imptcp"
    workers: int = 8
    batch: int = 1024

    @property
    def label(self) -> str:
        return (
            f"{self.input}, {self.workers} queue workers, dequeueBatchSize {self.batch}"
        )


# Chosen from the two sweeps described in docs/benchmarks.md (rsyslog section).
BEST = RsyslogConfig()
SWEEP = [
    RsyslogConfig(input_, workers, batch)
    for input_ in ("imtcp", "imptcp")
    for workers in (1, 2, 4, 8, 16)
    for batch in (256, 1024, 4096)
]


def find_rsyslogd() -> tuple[str, str]:
    """Return the rsyslogd binary and the ompgsql module; raise FileNotFoundError."""
    binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(binary).exists():
        raise FileNotFoundError(
            "rsyslogd is not installed (apt-get install rsyslog rsyslog-pgsql)"
        )
    modules = glob.glob("/usr/lib/*/rsyslog/ompgsql.so") + glob.glob(
        "/usr/lib/rsyslog/ompgsql.so"
    )
    if not modules:
        raise FileNotFoundError(
            "the ompgsql module is not installed (apt-get install rsyslog-pgsql)"
        )
    return binary, modules[0]


def conninfo_uri(params: dict[str, str]) -> str:
    """Return a libpq URI (rsyslog rejects whitespace in conninfo, so no key=value form)."""
    user = quote(params.get("user", "postgres"), safe="")
    password = params.get("password")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = params.get("host", "127.0.0.1")
    query = [f"port={params.get('port', '5432')}"]
    if host.startswith("/"):  # a Unix socket folder goes in the query string
        query.append(f"host={quote(host, safe='')}")
        host = ""
    return f"postgresql://{credentials}@{host}/{quote(params['dbname'], safe='')}?{'&'.join(query)}"


def config_text(config: RsyslogConfig, workdir: Path, port: int, conninfo: str) -> str:
    sql = (
        "INSERT INTO rsyslog_logs (service, seq, level, message, ts) VALUES ('%app-name%',"
        " '%procid%', '%msgid%', '%msg%', '%timereported:::date-rfc3339%')"
        " ON CONFLICT (service, seq) DO NOTHING"
    )
    return f"""
global(workDirectory="{workdir}" maxMessageSize="8k")
module(load="{config.input}")
module(load="ompgsql")
template(name="bench_sql" type="string" option.stdsql="on" string="{sql}")
ruleset(name="bench") {{
  action(type="ompgsql" conninfo="{conninfo}" template="bench_sql"
         queue.type="LinkedList" queue.size="500000"
         queue.workerThreads="{config.workers}" queue.dequeueBatchSize="{config.batch}")
}}
input(type="{config.input}" port="{port}" address="127.0.0.1" ruleset="bench")
"""


async def start_rsyslogd(bench: Bench, config: RsyslogConfig) -> tuple[Child, int]:
    binary, _ = find_rsyslogd()
    workdir = bench.workdir / f"rsyslog-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    port = free_port()
    conf = workdir / "rsyslog.conf"
    conf.write_text(
        config_text(config, workdir, port, conninfo_uri(bench.libpq_params()))
    )
    args = [binary, "-n", "-f", str(conf), "-i", str(workdir / "rsyslogd.pid")]
    child = bench.spawn(f"rsyslogd-{port}", args)

    async def listening() -> bool:
        if not child.alive():
            raise RuntimeError(f"rsyslogd exited:\n{child.tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await wait_until(listening, START_TIMEOUT_S, f"rsyslogd on port {port}")
    return child, port


def syslog_lines(corpus: Corpus, events: int) -> list[bytes]:
    """Return one RFC 5424 line per event, services interleaved as producers would be."""
    counts = events_per_service(events, SERVICES)
    base = datetime.now(UTC).timestamp() - 3600
    lines = []
    for seq in range(1, max(counts) + 1):
        for index, count in enumerate(counts):
            if seq > count:
                continue
            message, level = corpus.pick(index, seq)
            pri = FACILITY_LOCAL0 * 8 + SEVERITY[level]
            ts = datetime.fromtimestamp(base + seq / 1000, UTC).isoformat(
                timespec="milliseconds"
            )
            lines.append(
                f"<{pri}>1 {ts} bench rs-{index:02d} {seq} {level} - {message}\n".encode()
            )
    return lines


async def send_lines(port: int, lines: Sequence[bytes]) -> None:
    async def send(part: Sequence[bytes]) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for start in range(0, len(part), 500):
            writer.write(b"".join(part[start : start + 500]))
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(send(lines[i::CONNECTIONS]) for i in range(CONNECTIONS)))


async def run_once(bench: Bench, port: int, lines: Sequence[bytes]) -> RunOutcome:
    events = len(lines)
    bench.sql("TRUNCATE rsyslog_logs")
    timeout = max(MIN_DRAIN_TIMEOUT_S, events / SLOWEST_EXPECTED_EPS)
    async with await psycopg.AsyncConnection.connect(
        bench.database_url, autocommit=True
    ) as conn:

        async def stored() -> float | None:
            row = await (
                await conn.execute("SELECT count(*) FROM rsyslog_logs")
            ).fetchone()
            return time.time() if row and row[0] >= events else None

        started = time.time()
        await send_lines(port, lines)
        try:
            done_at = await wait_until(
                stored, timeout, f"{events} rows in rsyslog_logs", interval=0.1
            )
        except TimeoutError as exc:
            return RunOutcome(0.0, f"not stored in time: {exc}")
    total, distinct = bench.sql(
        "SELECT count(*), count(DISTINCT (service, seq)) FROM rsyslog_logs"
    )[0]
    void = (
        ""
        if total == distinct == events
        else f"row check failed: {total} rows, {distinct} distinct, expected {events}"
    )
    return RunOutcome(events / (done_at - started), void, done_at - started)


async def rates_for(
    bench: Bench, config: RsyslogConfig, lines: Sequence[bytes], runs: int
) -> list[RunOutcome]:
    child, port = await start_rsyslogd(bench, config)
    try:
        return [await run_once(bench, port, lines) for _ in range(runs)]
    finally:
        bench.stop(child)


async def measure(
    bench: Bench, options: dict[str, Any], shared: dict[str, Any]
) -> list[Figure]:
    try:
        find_rsyslogd()
    except FileNotFoundError as exc:
        return [Figure(SECTION, "rsyslog", "events/s", void=str(exc))]
    apply_schema(bench)
    bench.sql("CREATE TABLE IF NOT EXISTS rsyslog_logs (LIKE logs INCLUDING ALL)")
    lines = syslog_lines(Corpus.load(bench.loghub), options["events"])
    figures = []
    configs = SWEEP if options.get("rsyslog_sweep") else [BEST]
    best: list[RunOutcome] = []
    for config in configs:
        outcomes = await rates_for(bench, config, lines, bench.runs)
        void = next((o.void for o in outcomes if o.void), "")
        figures.append(
            Figure(
                SECTION,
                f"rsyslog {config.label} ({len(lines):,} events)",
                "events/s",
                [o.eps for o in outcomes],
                void=void,
            )
        )
        if not best or statistics.median(o.eps for o in outcomes) > statistics.median(
            o.eps for o in best
        ):
            best = outcomes
    bench.sql("DROP TABLE rsyslog_logs")
    shared["rsyslog"] = best
    return figures + multiple_figures(shared.get("throughput"), best)


def multiple_figures(
    throughput: dict[str, Any] | None, rsyslog: Sequence[RunOutcome]
) -> list[Figure]:
    if not throughput or not rsyslog or any(o.void for o in rsyslog):
        return []
    median = statistics.median(o.eps for o in rsyslog)
    figures = []
    configs: list[Config] = throughput["configs"]
    for config in configs:
        if not config.has_target:
            continue
        outcomes: list[RunOutcome] = throughput["outcomes"][config.label]
        void = next((o.void for o in outcomes if o.void), "")
        figures.append(
            Figure(
                SECTION,
                f"TraceHub / rsyslog: {config.label}",
                "x",
                [o.eps / median for o in outcomes],
                target=Target(">=", TARGET_MULTIPLE),
                void=void,
            )
        )
    return figures
