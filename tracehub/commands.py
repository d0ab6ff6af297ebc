"""Commands that live beside their packages (producers, faults, dashboard)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every package command to the tracehub app."""
    from tracehub.inject import inject
    from tracehub.ship.cli import ship
    from tracehub.sim.cli import sim
    from tracehub.tui.cli import tui
    from tracehub.tui.up import up

    app.command("inject")(inject)
    app.command("ship")(ship)
    app.command("sim")(sim)
    app.command("tui")(tui)
    app.command("up")(up)
