"""`tracehub inject`: switch faults on and off through POST /metrics/control."""

from __future__ import annotations

import math
from typing import Optional

import typer
from rich.console import Console

from tracehub.faults import ACTIONS, DEFAULT_DURATION_MS

console = Console()


def inject(
    action: str = typer.Argument(..., help=f"One of: {', '.join(ACTIONS)}."),
    duration: Optional[float] = typer.Option(
        None, "--duration", "-d", help="How long a timed fault lasts, in seconds [crash-worker 5, drop-network 10, delay-ack 3]."
    ),
    wipe: bool = typer.Option(False, "--all", help="With reset: also delete every log, ACK state, replay and buffer."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before reset --all."),
    url: Optional[str] = typer.Option(None, "--url", envvar="TRACEHUB_URL", help="Server URL [default: http://127.0.0.1:3001]."),
) -> None:
    """Inject a fault into a running TraceHub, or end every fault with reset."""
    from tracehub.cli import CliError, request

    if action not in ACTIONS:
        raise CliError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if wipe and action != "reset":
        raise CliError("--all only goes with reset")
    if wipe and not yes and not typer.confirm("Delete every log, ACK state, replay and producer buffer?"):
        raise CliError("reset --all cancelled")
    body: dict[str, object] = {"action": action}
    if duration is not None and not (math.isfinite(duration) and 0 < duration <= 3600):
        raise CliError(f"--duration must be a number of seconds from 0.001 to 3600, got {duration}")
    if duration is not None:
        body["durationMs"] = int(duration * 1000)
    elif action in DEFAULT_DURATION_MS:
        body["durationMs"] = DEFAULT_DURATION_MS[action]
    if wipe:
        body["all"] = True
    result = request("POST", url, "/metrics/control", json=body).json()
    if "endsAt" in result:
        console.print(f"{action} active for {result['remainingMs'] / 1000:.1f}s")
    elif action == "flush-queue":
        flushed = result["flushed"]
        console.print(f"flushed {flushed['stream']} queued batches and {flushed['retry']} retries")
    else:
        console.print("every fault ended" + (", and all data deleted" if wipe else ""))
