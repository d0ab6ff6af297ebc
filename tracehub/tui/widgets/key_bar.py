"""The bottom line of every screen: the keys it takes, from its active bindings."""

from __future__ import annotations

from itertools import groupby
from typing import Iterable

from textual.app import App
from textual.binding import ActiveBinding, Binding
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Static


class KeyBar(Static):
    """A one-line list of keys, like Textual's Footer but drawn as one text line.

    Footer builds a widget per key and rebuilds them all on every screen switch. With
    the dashboard's dozen keys that took 0.3 to 0.8 s per switch (measured with Pilot
    on the development VM, Textual 8.2). One line of text redraws at once.
    """

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        padding: 0 1;
        background: $footer-background;
        color: $footer-foreground;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if screen is self.screen:
            self.update(describe_keys(screen.active_bindings.values(), self.app))


def describe_keys(bindings: Iterable[ActiveBinding], app: App[object]) -> str:
    """Return markup listing the shown bindings, a group's keys under one label."""
    visible = [active.binding for active in bindings if active.binding.show]
    parts = []
    for group, members in groupby(visible, key=lambda binding: binding.group):
        keys = list(members)
        if group is not None and len(keys) > 1:
            joined = "".join(escape(app.get_key_display(binding)) for binding in keys)
            parts.append(f"{_key(joined)} {escape(group.description)}")
        else:
            parts.extend(_entry(binding, app) for binding in keys)
    if app.ENABLE_COMMAND_PALETTE:
        palette = Binding(app.COMMAND_PALETTE_BINDING, "command_palette", "palette",
                          key_display=app.COMMAND_PALETTE_DISPLAY)  # fmt: skip
        parts.append(_entry(palette, app))
    return "  ".join(parts)


def _entry(binding: Binding, app: App[object]) -> str:
    return f"{_key(escape(app.get_key_display(binding)))} {escape(binding.description)}"


def _key(text: str) -> str:
    return f"[bold $footer-key-foreground]{text}[/]"
