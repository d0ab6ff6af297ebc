"""The tracehub command line."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from tracehub.config import Settings, client_url

app = typer.Typer(
    name="tracehub",
    help="TraceHub: sequenced log ingest with exact ACKs, a Redis queue and PostgreSQL storage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show "[default: …]" literally
)
replay_app = typer.Typer(help="List and request replays of missing seqs.", no_args_is_help=True)
app.add_typer(replay_app, name="replay")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("tracehub.cli")

LEVEL_STYLES = {"trace": "dim", "debug": "cyan", "info": "green", "warn": "yellow", "error": "red", "fatal": "bold red"}
UrlOption = typer.Option(None, "--url", envvar="TRACEHUB_URL", help="Server URL [default: http://127.0.0.1:3001].")
DEBUG = {"enabled": False}
TOKEN: dict[str, str | None] = {"value": None}


class CliError(Exception):
    """A failure to report on one line before exiting non-zero."""


BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s'\"\\]+")


class RedactingFormatter(logging.Formatter):
    """Replace bearer tokens with [redacted] anywhere in a formatted record,
    tracebacks included: aiohttp logs the raw bytes of a malformed request."""

    def format(self, record: logging.LogRecord) -> str:
        return BEARER_RE.sub(r"\1[redacted]", super().format(record))


def setup_logging(verbose: bool) -> None:
    warnings.filterwarnings("ignore", module="platformdirs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("aiohttp.access", "engineio", "socketio", "httpx", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on failure."),
    token: Optional[str] = typer.Option(None, "--token", envvar="TRACEHUB_TOKEN",
                                        help="Bearer token for client commands."),  # fmt: skip
) -> None:
    DEBUG["enabled"] = debug
    TOKEN["value"] = token


# --- server processes ----------------------------------------------------------------


def _settings(host: str | None = None, port: int | None = None, **overrides: Any) -> Settings:
    try:
        return Settings.from_env(host=host, port=port, **overrides)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Address to bind [env TRACEHUB_HOST, default 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="TCP port [env TRACEHUB_PORT, default 3001]."),
    database_url: Optional[str] = typer.Option(None, help="PostgreSQL URL [env TRACEHUB_DATABASE_URL; default: embedded]."),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [env TRACEHUB_REDIS_URL; default: embedded]."),
    home: Optional[Path] = typer.Option(None, help="Folder for embedded server data [env TRACEHUB_HOME]."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run a worker in this process."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Run the HTTP and Socket.IO API, with a worker unless --no-worker."""
    from tracehub.auth import TokenConfigError
    from tracehub.runner import UnsafeBinding, install_event_loop, load_tokens, provisioned, serve as serve_node

    setup_logging(verbose)
    settings = _settings(host, port, database_url=database_url, redis_url=redis_url, home=home)
    try:
        tokens = load_tokens(settings)
    except (UnsafeBinding, TokenConfigError) as exc:
        raise CliError(str(exc)) from exc
    install_event_loop()
    with provisioned(settings) as ready:
        asyncio.run(serve_node(ready, run_worker=worker, tokens=tokens))


@app.command("worker")
def worker_command(
    database_url: Optional[str] = typer.Option(None, help="PostgreSQL URL [env TRACEHUB_DATABASE_URL; default: embedded]."),
    redis_url: Optional[str] = typer.Option(None, help="Redis URL [env TRACEHUB_REDIS_URL; default: embedded]."),
    home: Optional[Path] = typer.Option(None, help="Folder for embedded server data [env TRACEHUB_HOME]."),
    batch: Optional[int] = typer.Option(None, help="Stream entries (batches) read per round [env TRACEHUB_WORKER_BATCH]."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Run a worker process alone: it moves queued logs into PostgreSQL."""
    from tracehub.runner import install_event_loop, provisioned, run_worker

    setup_logging(verbose)
    settings = _settings(database_url=database_url, redis_url=redis_url, home=home, worker_batch=batch)
    install_event_loop()
    with provisioned(settings) as ready:
        asyncio.run(run_worker(ready))


# --- clients -------------------------------------------------------------------------


def auth_headers(token: str | None = None) -> dict[str, str]:
    """Return the Authorization header for token, or TRACEHUB_TOKEN, if either is set."""
    token = token or os.environ.get("TRACEHUB_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def request(method: str, url: str | None, path: str, **kwargs: Any) -> httpx.Response:
    """Send one request; raises CliError with the server's message on failure."""
    headers = {**auth_headers(TOKEN["value"]), **kwargs.pop("headers", {})}
    try:
        response = httpx.request(method, f"{client_url(url)}{path}", timeout=15, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach TraceHub at {client_url(url)}: {exc}") from exc
    if response.status_code >= 400 and response.status_code != 503:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise CliError(f"{method} {path} failed with {response.status_code}: {message}")
    return response


@app.command()
def health(url: Optional[str] = UrlOption) -> None:
    """Show whether the server, PostgreSQL and Redis are up; exits 1 when one is down."""
    body = request("GET", url, "/health").json()
    style = "green" if body.get("status") == "ok" else "red"
    console.print(f"[{style}]{body.get('status')}[/]  postgres {body.get('postgres')}  redis {body.get('redis')}")
    if body.get("status") != "ok":
        raise typer.Exit(1)


@app.command()
def logs(
    service: Optional[str] = typer.Option(None, help="Only this service."),
    level: Optional[str] = typer.Option(None, help="Only these levels, comma-separated (e.g. warn,error)."),
    q: Optional[str] = typer.Option(None, "--q", "-q", help="Literal, case-insensitive text in the message."),
    since: Optional[str] = typer.Option(None, "--from", help="Earliest ts: RFC 3339 or epoch seconds."),
    until: Optional[str] = typer.Option(None, "--to", help="Latest ts: RFC 3339 or epoch seconds."),
    limit: int = typer.Option(100, help="Rows per page, 1 to 1000."),
    pages: int = typer.Option(1, help="Pages to fetch, following the cursor."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per line."),
    url: Optional[str] = UrlOption,
) -> None:
    """Query stored logs, newest first, with the filters of GET /logs."""
    params = {k: v for k, v in {"service": service, "level": level, "q": q, "from": since, "to": until,
                                "limit": limit}.items() if v is not None}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for _ in range(max(1, pages)):
        body = request("GET", url, "/logs", params=params).json()
        rows.extend(body["logs"])
        if as_json:
            for row in body["logs"]:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
        if not body.get("nextCursor"):
            break
        params["cursor"] = body["nextCursor"]
    if not as_json:
        console.print(_logs_table(rows))


def _logs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for column in ("ts", "service", "level", "seq", "request_id", "message"):
        table.add_column(column, overflow="fold" if column == "message" else "ellipsis")
    for row in rows:
        level = row["level"]
        table.add_row(row["ts"], row["service"], f"[{LEVEL_STYLES.get(level, '')}]{level}[/]", str(row["seq"]),
                      row.get("request_id") or "", row["message"])  # fmt: skip
    return table


@replay_app.command("list")
def replay_list(
    service: Optional[str] = typer.Option(None, help="Only this service."),
    status: Optional[str] = typer.Option(None, help="pending, completed or lost."),
    limit: int = typer.Option(100, help="Rows, 1 to 1000."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per line."),
    url: Optional[str] = UrlOption,
) -> None:
    """List replay requests, newest first."""
    params = {k: v for k, v in {"service": service, "status": status, "limit": limit}.items() if v is not None}
    body = request("GET", url, "/logs/replay", params=params).json()
    if as_json:
        for row in body["replays"]:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table(header_style="bold")
    for column in ("id", "service", "from", "to", "status", "filled", "attempts", "reason", "created_at"):
        table.add_column(column)
    for r in body["replays"]:
        table.add_row(str(r["id"]), r["service"], str(r["from_seq"]), str(r["to_seq"]), r["status"],
                      str(r["filled"]), str(r["attempts"]), r["reason"], r["created_at"])  # fmt: skip
    console.print(table)
    console.print(" ".join(f"{k}: {v}" for k, v in sorted(body["counts"].items())) or "no replays")


@replay_app.command("request")
def replay_request(
    service: str = typer.Argument(..., help="Service whose seqs to replay."),
    from_seq: int = typer.Argument(..., help="First seq of the range."),
    to_seq: int = typer.Argument(..., help="Last seq of the range (inclusive)."),
    url: Optional[str] = UrlOption,
) -> None:
    """Ask for a range of seqs to be replayed from the producer's buffer."""
    body = request("POST", url, "/logs/replay", json={"service": service, "fromSeq": from_seq, "toSeq": to_seq}).json()
    replay = body["replay"]
    console.print(f"replay {replay['id']} of {service} {from_seq}..{to_seq}: {replay['status']}")


def register_commands() -> None:
    """Add the commands of the producer and dashboard packages."""
    from tracehub import commands

    commands.register(app)


def main() -> None:
    register_commands()
    try:
        app()
    except CliError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except Exception as exc:  # the top-level handler: one line unless --debug
        if DEBUG["enabled"]:
            raise
        chain = []
        current: BaseException | None = exc
        while current is not None:
            chain.append(str(current) or type(current).__name__)
            current = current.__cause__
        err_console.print(f"[red]error:[/] {': '.join(dict.fromkeys(chain))}", highlight=False)
        sys.exit(1)
