"""Tables and JSON for the simulator: live progress and the final reconciliation."""

from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table

from tracehub.sim.producer import ProducerStats

STATE_STYLES = {
    "running": "green",
    "drained": "green",
    "retrying": "yellow",
    "blocked": "yellow",
    "stopped": "red",
    "starting": "dim",
}


def _seqs(stats: ProducerStats) -> str:
    if stats.first_seq is None:
        return "-"
    return f"{stats.first_seq}..{stats.last_seq}"


def _table(title: str, text: Sequence[str], numbers: Sequence[str]) -> Table:
    """Return an empty table with left-aligned text and right-aligned number columns."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in text:
        table.add_column(column, no_wrap=True)
    for column in numbers:
        table.add_column(column, justify="right")
    return table


def progress_table(
    services: Sequence[ProducerStats], elapsed_s: float, phase: str
) -> Table:
    """Return the live view: one row per service, refreshed while the sim runs."""
    table = _table(
        f"tracehub sim: {phase}, {elapsed_s:.0f}s",
        ("service", "state"),
        ("generated", "ackTill", "durableTill", "buffered", "dropped", "retries"),
    )
    for s in services:
        state = "blocked" if s.blocked else s.state
        style = STATE_STYLES.get(state, "")
        figures = (
            s.generated,
            s.ack_till,
            s.durable_till,
            s.buffered,
            s.dropped,
            s.retries,
        )
        table.add_row(s.service, f"[{style}]{state}[/]", *map(str, figures))
    return table


def reconciliation_table(services: Sequence[ProducerStats]) -> Table:
    """Return the final per-service reconciliation; --json adds the other counters."""
    table = _table(
        "reconciliation",
        ("service", "seqs"),
        ("generated", "ackTill", "durableTill", "dropped", "buffered", "drained"),
    )
    for s in services:
        figures = (s.generated, s.ack_till, s.durable_till, s.dropped, s.buffered)
        drained = "[green]yes[/]" if s.drained else "[red]no[/]"
        table.add_row(s.service, _seqs(s), *map(str, figures), drained)
    return table


def reconciliation_json(
    services: Sequence[ProducerStats], elapsed_s: float
) -> dict[str, Any]:
    """Return the reconciliation as a JSON-ready object."""
    return {
        "elapsedS": round(elapsed_s, 3),
        "drained": all(s.drained for s in services),
        "services": [s.to_json() for s in services],
    }
