"""The load generator: realistic log entries, pre-serialised bodies, HTTP producers.

It runs as a child process (``python -m benchmarks.loadgen``) so that its CPU time
is its own and a run can use more than one. The protocol on its standard streams:
the parent writes one JSON spec line; the child builds every request body, prints
``ready``; the parent writes ``go <epoch seconds>``; the child sends, then prints
one JSON result line. Every loop is bounded by the spec's counts and deadline.

Two modes:

- ``closed``: one producer task per service sends that service's batches in seq
  order, each after the response to the previous one, as the producer contract
  expects. Throughput is what the server sustains.
- ``open``: requests leave on a fixed schedule whatever the responses, round-robin
  over the services, and latency is measured from the scheduled send time, so a
  slow server cannot slow the load down and hide its own delay.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)

MIN_LINE_BYTES = 100
MAX_LINE_BYTES = 200
LINE_BREAKS = re.compile(r"\r\n|\r|\n")
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_RETRIES_PER_BATCH = 50
RETRY_AFTER_CAP_S = 2.0
MAX_OUTSTANDING = 2000  # open mode: requests in flight before new ones are skipped
LEVEL_WORDS = (
    ("fatal", "fatal"),
    ("error", "error"),
    ("fail", "error"),
    ("warn", "warn"),
    ("debug", "debug"),
    ("trace", "trace"),
)


# --- messages ------------------------------------------------------------------------


def find_loghub(explicit: str | None, root: Path) -> Path:
    """Return the folder of Loghub samples: the explicit one, else tests/data/loghub."""
    folder = Path(explicit) if explicit else root / "tests" / "data" / "loghub"
    if not any(folder.glob("*.log")):
        raise FileNotFoundError(
            f"no *.log files in {folder}; pass --loghub with a folder of Loghub samples"
        )
    return folder


def load_lines(folder: Path) -> list[str]:
    """Return the lines of every *.log file in folder that are 100 to 200 bytes long.

    Files are split on CRLF, CR and LF alike, since the Loghub samples mix them.
    """
    lines = []
    for path in sorted(folder.glob("*.log")):
        text = path.read_bytes().decode("utf-8", "replace")
        for line in LINE_BREAKS.split(text):
            line = line.strip()
            if MIN_LINE_BYTES <= len(line.encode()) <= MAX_LINE_BYTES:
                lines.append(line)
    if not lines:
        raise ValueError(f"no line of 100 to 200 bytes in the *.log files of {folder}")
    return lines


def level_of(line: str) -> str:
    """Return the level a log line names (info when it names none)."""
    lowered = line.lower()
    for word, level in LEVEL_WORDS:
        if word in lowered:
            return level
    return "info"


@dataclass(frozen=True)
class Corpus:
    """Log lines with their levels, picked by seq so every run sends the same text."""

    lines: list[str]
    levels: list[str]

    @classmethod
    def load(cls, folder: Path) -> Corpus:
        lines = load_lines(folder)
        return cls(lines, [level_of(line) for line in lines])

    def pick(self, service_index: int, seq: int) -> tuple[str, str]:
        index = (seq * 7919 + service_index * 104729) % len(self.lines)
        return self.lines[index], self.levels[index]


def make_entry(
    corpus: Corpus, service_index: int, seq: int, ts_ms: int
) -> dict[str, Any]:
    message, level = corpus.pick(service_index, seq)
    return {
        "seq": seq,
        "level": level,
        "message": message,
        "request_id": f"r-{service_index}-{seq}",
        "ts": ts_ms,
    }


def make_body(
    corpus: Corpus,
    service: str,
    service_index: int,
    first_seq: int,
    count: int,
    ts_ms: int,
) -> bytes:
    """Return one serialised POST /ingest body with seqs first_seq .. first_seq+count-1."""
    entries = [
        make_entry(corpus, service_index, seq, ts_ms + seq)
        for seq in range(first_seq, first_seq + count)
    ]
    return orjson.dumps({"service": service, "batch": entries})


def batch_sizes(events: int, batch: int) -> list[int]:
    """Split events into batches of at most batch entries."""
    full, rest = divmod(events, batch)
    return [batch] * full + ([rest] if rest else [])


def service_bodies(
    corpus: Corpus, service: str, service_index: int, events: int, batch: int
) -> list[bytes]:
    ts_ms = int(time.time() * 1000) - 3_600_000
    bodies = []
    seq = 1
    for size in batch_sizes(events, batch):
        bodies.append(make_body(corpus, service, service_index, seq, size, ts_ms))
        seq += size
    return bodies


# --- results -------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one generator process did; times are epoch seconds."""

    first_post: float | None = None
    last_response: float | None = None
    requests: int = 0
    events: int = 0
    retries: int = 0
    skipped: int = 0
    failed_batches: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


# --- closed loop ---------------------------------------------------------------------


async def post_once(
    session: aiohttp.ClientSession, url: str, body: bytes, result: LoadResult
) -> tuple[int, float]:
    """Post one body and count its status; return (status, Retry-After seconds).

    A connection error counts under result.errors and returns status 0.
    """
    try:
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            await response.read()
            result.requests += 1
            result.count(result.statuses, str(response.status))
            if response.status == 200:
                result.last_response = time.time()
            return response.status, float(response.headers.get("Retry-After", "0.2"))
    except (aiohttp.ClientError, OSError) as exc:
        result.count(result.errors, type(exc).__name__)
        return 0, 0.2


async def post_until_accepted(
    session: aiohttp.ClientSession, url: str, body: bytes, result: LoadResult
) -> bool:
    """Post one body, retrying on 429, 503 and connection errors; True once it gets 200."""
    for _ in range(MAX_RETRIES_PER_BATCH):
        if result.first_post is None:
            result.first_post = time.time()
        status, delay = await post_once(session, url, body, result)
        if status == 200:
            return True
        if status not in (0, 429, 503):
            return False
        result.retries += 1
        await asyncio.sleep(min(delay, RETRY_AFTER_CAP_S))
    return False


async def produce(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[tuple[bytes, int]],
    result: LoadResult,
    deadline: float,
) -> None:
    for body, events in bodies:
        if time.monotonic() > deadline:
            result.count(result.errors, "deadline")
            return
        if await post_until_accepted(session, url, body, result):
            result.events += events
        else:
            result.failed_batches += 1


async def run_closed(
    spec: dict[str, Any], plan: dict[str, list[tuple[bytes, int]]]
) -> LoadResult:
    result = LoadResult()
    deadline = time.monotonic() + spec["deadline_s"]
    urls = spec["urls"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            produce(session, urls[index % len(urls)], bodies, result, deadline)
            for index, bodies in enumerate(plan.values())
        ]
        await asyncio.gather(*tasks)
    return result


# --- open loop -----------------------------------------------------------------------


async def send_scheduled(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    due: float,
    result: LoadResult,
) -> None:
    status, _ = await post_once(session, url, body, result)
    if status == 200:
        result.latencies_ms.append((asyncio.get_running_loop().time() - due) * 1000)


async def run_open(
    spec: dict[str, Any], schedule: list[tuple[str, bytes]], t0: float
) -> LoadResult:
    """Send schedule[j] at t0 + j * interval, never waiting for earlier answers."""
    result = LoadResult()
    loop = asyncio.get_running_loop()
    start = loop.time() + (t0 - time.time())
    interval = spec["batch"] / spec["rate"]
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for j, (url, body) in enumerate(schedule):
            due = start + j * interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            if len(pending) >= MAX_OUTSTANDING:
                result.skipped += 1
                continue
            if result.first_post is None:
                result.first_post = time.time()
            task = asyncio.create_task(send_scheduled(session, url, body, due, result))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.wait_for(asyncio.gather(*pending), timeout=spec["deadline_s"])
    result.events = len(result.latencies_ms) * spec["batch"]
    return result


def open_schedule(spec: dict[str, Any], corpus: Corpus) -> list[tuple[str, bytes]]:
    """Return (url, body) per request: request j goes to service j % S, batch j // S."""
    services, urls, batch = spec["services"], spec["urls"], spec["batch"]
    total = int(spec["rate"] * spec["duration_s"] / batch)
    ts_ms = int(time.time() * 1000) - 3_600_000
    schedule = []
    for j in range(total):
        index = j % len(services)
        first_seq = (j // len(services)) * batch + 1
        body = make_body(corpus, services[index], index, first_seq, batch, ts_ms)
        schedule.append((urls[index % len(urls)], body))
    return schedule


# --- the child process ---------------------------------------------------------------


def closed_plan(
    spec: dict[str, Any], corpus: Corpus
) -> dict[str, list[tuple[bytes, int]]]:
    plan = {}
    for service, index, events in zip(
        spec["services"], spec["indexes"], spec["events"]
    ):
        bodies = service_bodies(corpus, service, index, events, spec["batch"])
        plan[service] = list(zip(bodies, batch_sizes(events, spec["batch"])))
    return plan


async def child_main() -> None:
    spec = orjson.loads(sys.stdin.readline())
    corpus = Corpus.load(Path(spec["loghub"]))
    if spec["mode"] == "closed":
        plan = closed_plan(spec, corpus)
    else:
        schedule = open_schedule(spec, corpus)
    print("ready", flush=True)
    command = sys.stdin.readline().split()
    if not command or command[0] != "go":
        raise SystemExit(f"expected 'go <t0>' on standard input, got {command!r}")
    t0 = float(command[1])
    await asyncio.sleep(max(0.0, t0 - time.time()))
    if spec["mode"] == "closed":
        result = await run_closed(spec, plan)
    else:
        result = await run_open(spec, schedule, t0)
    sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        import uvloop
    except ImportError:
        asyncio.run(child_main())
    else:
        uvloop.run(child_main())
