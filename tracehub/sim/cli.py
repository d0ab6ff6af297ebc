"""`tracehub sim`: simulated services that log to a running server."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import contextmanager
from enum import Enum
from typing import Iterator, Optional, Sequence

import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler

from tracehub.config import client_url, default_home
from tracehub.sim.producer import BLOCK, DROP_OLDEST, ProducerOptions, ProducerStats
from tracehub.sim.report import (
    progress_table,
    reconciliation_json,
    reconciliation_table,
)
from tracehub.sim.run import SimConfig, SimError, SimResult, run_sim

log = logging.getLogger(__name__)

EXIT_NOT_DRAINED = 2


class OnFull(str, Enum):
    block = BLOCK
    drop_oldest = DROP_OLDEST


def sim(
    services: int = typer.Option(
        3,
        "--services",
        "-n",
        min=1,
        max=1000,
        help="Number of simulated services: auth, payment, notification, inventory,"
        " search, shipping, then service-7, …",
    ),
    rate: float = typer.Option(
        10.0, "--rate", min=0.1, help="Logs per second per service."
    ),
    duration: Optional[float] = typer.Option(
        None,
        "--duration",
        min=0.1,
        help="Stop after this many seconds (default: run until Ctrl-C).",
    ),
    batch_size: int = typer.Option(
        100, "--batch-size", min=1, max=10_000, help="Maximum logs per POST /ingest."
    ),
    flush_ms: int = typer.Option(
        200,
        "--flush-ms",
        min=10,
        help="Send a partial batch after this many milliseconds.",
    ),
    buffer_max: int = typer.Option(
        100_000,
        "--buffer-max",
        min=1,
        help="Maximum logs per service kept in Redis until durable.",
    ),
    on_full: OnFull = typer.Option(
        OnFull.block,
        "--on-full",
        help="When the buffer is full: block generation, or drop the oldest logs"
        " (counted).",
    ),
    gap_rate: float = typer.Option(
        0.01,
        "--gap-rate",
        min=0.0,
        max=1.0,
        help="Share of logs held back from their batch, making gaps that replays fill.",
    ),
    drain_timeout: float = typer.Option(
        30.0,
        "--drain-timeout",
        min=0.0,
        help="Seconds to wait at exit until every log is durable.",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Seed for the generated logs."
    ),
    url: Optional[str] = typer.Option(
        None,
        "--url",
        envvar="TRACEHUB_URL",
        help="Server URL (default: http://127.0.0.1:3001).",
    ),
    redis_url: Optional[str] = typer.Option(
        None,
        "--redis-url",
        envvar="TRACEHUB_REDIS_URL",
        help="The server's Redis, which stores the producer buffers (default: the"
        " embedded Redis of TRACEHUB_HOME, if running).",
    ),
    redis_prefix: str = typer.Option(
        "tracehub:",
        "--redis-prefix",
        envvar="TRACEHUB_REDIS_PREFIX",
        help="Redis key prefix; must match the server's.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the reconciliation as JSON."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live progress."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log starts, stops and recoveries (INFO)."
    ),
) -> None:
    """Run simulated services that log to TraceHub, then drain and reconcile.

    Stops at --duration or Ctrl-C (a second Ctrl-C skips the drain). Exits 2 when
    some logs were not durable by the end of the drain.
    """
    from tracehub.cli import TOKEN, CliError, auth_headers

    resolved = resolve_redis_url(redis_url)
    if resolved is None:
        raise CliError(
            "no Redis for the producer buffers: set TRACEHUB_REDIS_URL (or"
            " --redis-url) to the server's Redis"
        )
    try:
        options = ProducerOptions(
            rate=rate,
            batch_size=batch_size,
            flush_ms=flush_ms,
            buffer_max=buffer_max,
            on_full=on_full.value,
            gap_rate=gap_rate,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    config = SimConfig(
        url=client_url(url),
        redis_url=resolved,
        redis_prefix=redis_prefix,
        services=services,
        producer=options,
        duration_s=duration,
        drain_timeout_s=drain_timeout,
        seed=seed,
        headers=auth_headers(TOKEN["value"]),
    )
    stderr = Console(stderr=True)
    _setup_logging(stderr, verbose)
    try:
        result = asyncio.run(_run(config, None if quiet else stderr))
    except SimError as exc:
        raise CliError(str(exc)) from exc
    _print_result(result, as_json)
    if not result.drained:
        buffered = sum(s.buffered for s in result.services)
        stderr.print(
            f"[yellow]not every log is durable yet: {buffered} stay in the Redis"
            " buffers, and the next run of the sim sends them again[/]"
        )
        raise typer.Exit(EXIT_NOT_DRAINED)


def resolve_redis_url(flag: str | None) -> str | None:
    """Return the Redis URL from the flag or environment, else the embedded Redis
    socket under TRACEHUB_HOME when it exists, else None."""
    if flag:
        return flag
    socket_path = default_home() / "redis" / "redis.sock"
    if socket_path.exists():
        return f"unix://{socket_path}"
    return None


def _setup_logging(console: Console, verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, markup=False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[handler],
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def _run(config: SimConfig, live_console: Console | None) -> SimResult:
    stop, abort = asyncio.Event(), asyncio.Event()
    with _signals(stop, abort):
        if live_console is None:
            return await run_sim(config, stop=stop, abort=abort)
        with Live(console=live_console, refresh_per_second=4, transient=True) as live:

            def show(
                stats: Sequence[ProducerStats], elapsed_s: float, phase: str
            ) -> None:
                live.update(progress_table(stats, elapsed_s, phase))

            return await run_sim(config, stop=stop, abort=abort, progress=show)


@contextmanager
def _signals(stop: asyncio.Event, abort: asyncio.Event) -> Iterator[None]:
    """Make a first SIGINT or SIGTERM stop generation, and a second skip the drain."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second interrupt: skipping the drain")
            abort.set()
        else:
            log.warning(
                "interrupted: stopping generation and draining"
                " (interrupt again to skip the drain)"
            )
            stop.set()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
            installed.append(signum)
        except (
            NotImplementedError,
            RuntimeError,
        ):  # not on the main thread, or Windows
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _print_result(result: SimResult, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(
            orjson.dumps(
                reconciliation_json(result.services, result.elapsed_s)
            ).decode()
            + "\n"
        )
        return
    Console().print(reconciliation_table(result.services))
