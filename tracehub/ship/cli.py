"""`tracehub ship`: send log files or standard input to TraceHub."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import tzinfo
from typing import Optional

import typer
from rich.console import Console

from tracehub.cli import TOKEN, CliError, auth_headers, setup_logging
from tracehub.config import client_url, default_home
from tracehub.protocol import RequestError, validate_service
from tracehub.ship.buffer import ShipBufferError, buffer_path
from tracehub.ship.lines import DEFAULT_MAX_LINE_BYTES
from tracehub.ship.parsers import FORMATS, LineParser
from tracehub.ship.progress import RichProgress, log_through
from tracehub.ship.run import STDIN, ParseOptions, ship_paths
from tracehub.ship.sender import IngestRejected
from tracehub.ship.shipper import (
    ProgressView,
    ShipOptions,
    Shipper,
    ShipReadError,
    ShipStats,
    ShipTimeout,
)
from tracehub.ship.timestamps import TimeRules, parse_zone

log = logging.getLogger(__name__)
console = Console()
err_console = Console(stderr=True)


def ship(
    files: list[str] = typer.Argument(
        ..., help="Log files to ship; - reads standard input."
    ),
    service: str = typer.Option(
        ..., "--service", "-s", help="Service name to store the entries under."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-F",
        help="Keep reading the files as they grow, across rotation and truncation,"
        " like tail -F; stop with Ctrl-C or SIGTERM.",
    ),
    log_format: str = typer.Option(
        "auto", "--format", help=f"Line format: {', '.join(FORMATS)}."
    ),
    year: Optional[int] = typer.Option(
        None,
        "--year",
        min=1970,
        max=9999,
        help="Year of timestamps that have none (RFC 3164 syslog, OpenSSH). Default:"
        " the current year, or the year before for dates more than a day ahead.",
    ),
    tz: str = typer.Option(
        "UTC",
        "--tz",
        help="Time zone of timestamps that have none: UTC, an offset such as +02:00,"
        " or an IANA name.",
    ),
    batch_size: int = typer.Option(
        500, "--batch-size", min=1, max=10_000, help="Entries per POST /ingest."
    ),
    rate_limit: float = typer.Option(
        0.0,
        "--rate-limit",
        min=0.0,
        help="Maximum entries read per second; 0 means no limit.",
    ),
    drain_timeout: float = typer.Option(
        60.0,
        "--drain-timeout",
        min=0.1,
        help="Seconds to wait, once the input is read, for every entry to become"
        " durable; without --follow also the longest time without a successful"
        " request.",
    ),
    max_line_bytes: int = typer.Option(
        DEFAULT_MAX_LINE_BYTES,
        "--max-line-bytes",
        min=64,
        help="Lines longer than this many bytes are cut, and their entry gets"
        " truncated=true and truncated_bytes.",
    ),
    progress: bool = typer.Option(
        True,
        "--progress/--no-progress",
        help="Show the bytes read per file (never with --follow).",
    ),
    url: Optional[str] = typer.Option(
        None,
        "--url",
        envvar="TRACEHUB_URL",
        help="Server URL. Default: http://127.0.0.1:3001.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Ship log files or standard input to TraceHub and resume where a run stopped."""
    setup_logging(verbose)
    options = ShipOptions(
        service=_checked_service(service),
        follow=follow,
        batch_size=batch_size,
        drain_timeout=drain_timeout,
        rate_limit=rate_limit,
    )
    parse = ParseOptions(
        _checked_format(log_format),
        TimeRules(zone=_checked_zone(tz), year=year),
        max_line_bytes,
    )
    if files.count(STDIN) > 1:
        raise CliError("standard input (-) can be named only once")
    view = None
    if progress and not follow:
        view = RichProgress(err_console)
        log_through(err_console)
    try:
        stats, shipper = asyncio.run(_run(files, options, parse, client_url(url), view))
    finally:
        if view is not None:
            view.close()
    if shipper is not None and shipper.stopped and not follow and not shipper.all_read:
        raise CliError(
            "interrupted before the input was read;"
            f" {stats.recorded} entries were shipped, and the next run of this"
            " command continues where this one stopped"
        )
    console.print(_summary(options.service, stats), highlight=False, soft_wrap=True)


async def _run(
    files: list[str],
    options: ShipOptions,
    parse: ParseOptions,
    url: str,
    view: ProgressView | None,
) -> tuple[ShipStats, Shipper | None]:
    """Run the shipper with SIGINT and SIGTERM handled; map its failures to CliError."""
    started: list[Shipper] = []
    main = asyncio.current_task()

    def on_signal() -> None:
        if started and not started[0].stopped:
            log.info(
                "stopping: sending what is buffered, for at most %g s",
                options.drain_timeout,
            )
            started[0].stop()
        elif main is not None:
            main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    home = default_home()
    try:
        stats = await ship_paths(
            files,
            options,
            parse,
            url,
            home,
            progress=view,
            on_start=started.append,
            headers=auth_headers(TOKEN["value"]),
        )
    except asyncio.CancelledError:
        raise CliError(
            "stopped at once; entries not yet durable stay in"
            f" {buffer_path(home, options.service)}"
            " and the next run sends them"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot open {exc.filename}: {exc.strerror}") from exc
    except (ShipBufferError, ShipTimeout, ShipReadError, IngestRejected) as exc:
        raise CliError(str(exc)) from exc
    return stats, started[0] if started else None


def _summary(service: str, stats: ShipStats) -> str:
    if stats.first_seq is None:
        return (
            f"nothing new to ship for service {service};"
            " every buffered entry is durable"
        )
    return (
        f"shipped {stats.recorded} entries to service {service}"
        f" (seqs {stats.first_seq}..{stats.last_seq}); every entry is durable"
    )


def _checked_service(service: str) -> str:
    try:
        return validate_service(service)
    except RequestError as exc:
        raise CliError(f"invalid --service: {exc.message}") from None


def _checked_format(log_format: str) -> str:
    try:
        LineParser(log_format, TimeRules())
    except ValueError as exc:
        raise CliError(f"invalid --format: {exc}") from None
    return log_format


def _checked_zone(tz: str) -> tzinfo:
    try:
        return parse_zone(tz)
    except ValueError as exc:
        raise CliError(f"invalid --tz: {exc}") from None
