"""The help screen: what the current screen shows, and every key it takes."""

from __future__ import annotations

from typing import ClassVar, Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """A modal listing the bindings active on the screen it was opened from."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close", id="help.close"),
    ]

    def __init__(self, about: str, bindings: Iterable[ActiveBinding]) -> None:
        super().__init__()
        self.about = about
        self.bindings = list(bindings)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "Help"
            dialog.border_subtitle = "esc to close"
            yield Static(self.about, id="help-about")
            yield Static(keys_table(self.bindings), id="help-keys")


def listed_bindings(bindings: Iterable[ActiveBinding]) -> list[ActiveBinding]:
    """Return the dashboard's own bindings (those with an id), the screen's and the
    global ones first, each description once."""
    own = [
        active
        for active in bindings
        if active.binding.id and active.binding.description
    ]
    own.sort(key=lambda active: not isinstance(active.node, Screen))
    seen: set[str] = set()
    listed = []
    for active in own:
        if active.binding.description not in seen:
            seen.add(active.binding.description)
            listed.append(active)
    return listed


def keys_table(bindings: Iterable[ActiveBinding]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1))
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("action")
    for active in listed_bindings(bindings):
        table.add_row(key_label(active.binding), active.binding.description)
    table.add_row("ctrl+p", "Command palette: search every action")
    table.add_row("ctrl+q", "Quit")
    return table


def key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    return binding.key.split(",")[0]
