"""One log entry with every field and attr, or one gap mark, in a modal."""

from __future__ import annotations

from typing import ClassVar

import orjson
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tracehub.tui import format as fmt
from tracehub.tui.model import GapMark, LogItem, LogRow

REPLAY_RESULT = "replay"


class LogDetailScreen(ModalScreen[str | None]):
    """An item of the log table in full; on a gap mark, `p` requests its replay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "app.pop_screen", "Close", id="detail.close"),
        Binding("p", "replay", "Replay these seqs", id="detail.replay"),
    ]

    def __init__(self, item: LogItem) -> None:
        super().__init__()
        self.item = item

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-dialog") as dialog:
            dialog.border_subtitle = "esc to close"
            if isinstance(self.item, GapMark):
                dialog.border_title = "Gap in the live stream"
                dialog.border_subtitle = "p to request a replay · esc to close"
                yield Static(describe_gap(self.item))
            else:
                dialog.border_title = f"{self.item.service} seq {self.item.seq}"
                yield Static(fields_table(self.item))
                yield Static(attrs_text(self.item), id="detail-attrs")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "replay":
            return isinstance(self.item, GapMark)
        return True

    def action_replay(self) -> None:
        self.dismiss(REPLAY_RESULT)


def fields_table(row: LogRow) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("service", row.service)
    table.add_row("seq", str(row.seq))
    table.add_row("level", row.level)
    table.add_row("ts", row.ts)
    table.add_row("request_id", row.request_id or fmt.NO_VALUE)
    table.add_row("message", Text(row.message))
    return table


def attrs_text(row: LogRow) -> Text:
    if not row.attrs:
        return Text("attrs: none", style="dim")
    body = orjson.dumps(row.attrs, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return Text("attrs:\n") + Text(body.decode())


def describe_gap(gap: GapMark) -> Text:
    return Text(
        f"{gap.service}: seq {fmt.seq_range(gap.first, gap.last)} "
        f"({fmt.plural(gap.size, 'seq', 'seqs')}) did not come through the live stream.\n\n"
        "Either the producer has not sent them yet, so the server lists them as "
        "missing and replays them from the producer buffer, or they were stored "
        "but left out of log:new, which carries the newest 20 entries of each "
        "batch and is capped per second (the skipped count).\n\n"
        "Services (5) shows the missing count of the service. "
        "Press p to request a replay of this range."
    )
