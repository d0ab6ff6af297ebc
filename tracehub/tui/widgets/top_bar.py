"""The top bar of every screen: screen tabs, connection state, faults."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static, Tab, Tabs

from tracehub.tui import format as fmt
from tracehub.tui.model import Connection, Link, fault_remaining_s

SCREENS = (
    ("overview", "Overview"),
    ("logs", "Logs"),
    ("replay", "Replay"),
    ("queue", "Queue"),
    ("services", "Services"),
)
LINK_SYMBOLS = {
    Link.CONNECTING: "○",
    Link.CONNECTED: "●",
    Link.RECONNECTING: "◌",
    Link.DISCONNECTED: "✕",
}


def screen_tabs(active: str) -> Tabs:
    """Return tabs for the five screens, numbered by their keys; keys switch them,
    so the tabs take no focus."""
    tabs = Tabs(
        *(Tab(f"{number} {label}", id=mode) for number, (mode, label)
          in enumerate(SCREENS, start=1)),
        active=active,
    )  # fmt: skip
    tabs.can_focus = False
    return tabs


class LinkBadge(Static):
    """The connection state on one line and the active faults on the next."""

    _last_text = ""

    def show(
        self, connection: Connection, faults: list[dict[str, Any]], now: float
    ) -> None:
        self.set_class(connection.link is Link.CONNECTED, "-up")
        self.set_class(connection.link is Link.DISCONNECTED, "-down")
        self.set_class(bool(faults), "-fault")
        text = describe_link(connection) + "\n" + describe_faults_short(faults, now)
        if (
            text.plain != self._last_text
        ):  # the clock ticks every second; redraw on change
            self._last_text = text.plain
            self.update(text)


def describe_link(connection: Connection) -> Text:
    text = Text(f"{LINK_SYMBOLS[connection.link]} {connection.link.value}")
    if connection.link is Link.RECONNECTING:
        text.append(f" #{connection.attempt}")
    if connection.link is Link.DISCONNECTED and connection.retry_in_s is not None:
        text.append(f", retry {fmt.duration(connection.retry_in_s)}")
    return text


def describe_faults_short(faults: list[dict[str, Any]], now: float) -> Text:
    if not faults:
        return Text("no faults", style="dim")
    first = faults[0]
    text = Text(
        f"⚠ {first.get('action')} {fmt.duration(fault_remaining_s(first, now))}"
    )
    if len(faults) > 1:
        text.append(f" +{len(faults) - 1}")
    return text
