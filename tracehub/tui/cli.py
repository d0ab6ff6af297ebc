"""`tracehub tui`: the terminal dashboard of a running server.

Textual is imported inside the command, so that `tracehub --help` and the other
commands do not pay for it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

from tracehub.config import client_url, default_home

QUIET_LOGGERS = ("engineio", "socketio", "httpx", "httpcore", "asyncio")


def default_log_dir() -> Path:
    return default_home() / "logs"


def log_to_file(path: Path, verbose: bool) -> None:
    """Send log records to a file, since the terminal belongs to the dashboard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def client_token() -> str | None:
    """Return the token of the global --token option, or TRACEHUB_TOKEN."""
    from tracehub.cli import TOKEN

    return TOKEN["value"] or os.environ.get("TRACEHUB_TOKEN") or None


def run_dashboard(url: str) -> None:
    from tracehub.tui.app import TraceHubApp

    TraceHubApp(url, token=client_token()).run()


def tui(
    url: Optional[str] = typer.Option(
        None,
        "--url",
        envvar="TRACEHUB_URL",
        help="Server URL [default: http://127.0.0.1:3001].",
    ),
    log_file: Optional[Path] = typer.Option(
        None,
        help="File for the dashboard's own log [default: TRACEHUB_HOME/logs/tui.log].",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    """Open the terminal dashboard of a running server (keys 1-5 switch screens, ? helps).

    It sends the global --token (or TRACEHUB_TOKEN): a read token shows
    everything, fault keys and replay requests need an admin token.
    """
    log_to_file(log_file or default_log_dir() / "tui.log", verbose)
    run_dashboard(client_url(url))
