"""The active faults, with how long each has run and how long it has left."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from tracehub.tui import format as fmt
from tracehub.tui.model import fault_remaining_s


class FaultPanel(Static):
    """The list of active faults, or "none active"."""

    _last_text: str | None = None

    def show(self, faults: list[dict[str, Any]], now: float) -> None:
        self.set_class(bool(faults), "-active")
        text = describe_faults(faults, now)
        if (
            text.plain != self._last_text
        ):  # the clock ticks every second; redraw on change
            self._last_text = text.plain
            self.update(text)


def describe_faults(faults: list[dict[str, Any]], now: float) -> Text:
    if not faults:
        return Text("none active", style="dim")
    text = Text()
    for fault in faults:
        elapsed = now - float(fault.get("startedAt", now))
        text.append(f"⚠ {fault.get('action')}\n", style="bold")
        text.append(
            f"  on {fmt.duration(elapsed)}, "
            f"{fmt.duration(fault_remaining_s(fault, now))} left\n"
        )
    text.rstrip()
    return text
