"""The base of every dashboard screen: the top bar, the footer, and the global keys."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Iterable

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Tabs

from tracehub.faults import DEFAULT_DURATION_MS
from tracehub.tui.model import DashboardModel
from tracehub.tui.screens.help import HelpScreen
from tracehub.tui.widgets.key_bar import KeyBar
from tracehub.tui.widgets.top_bar import SCREENS, LinkBadge, screen_tabs

if TYPE_CHECKING:
    from tracehub.tui.app import TraceHubApp


class Topic(Enum):
    """A part of the model that changed, so screens redraw only what shows it."""

    METRICS = "metrics"
    LOGS = "logs"
    REPLAYS = "replays"
    QUEUE = "queue"
    FAULTS = "faults"
    LINK = "link"
    EVENTS = "events"
    CLOCK = "clock"


ALL_TOPICS = frozenset(Topic)


@dataclass(frozen=True)
class FaultKey:
    """A fault key: its action for POST /metrics/control, and the confirmation question."""

    key: str
    action: str
    description: str
    question: str | None


def _seconds(action: str) -> str:
    return f"{DEFAULT_DURATION_MS[action] / 1000:g} s"


FAULT_KEYS = (
    FaultKey("c", "crash-worker", "Crash worker",
             f"Crash the worker for {_seconds('crash-worker')}? It resumes its "
             "batches when it comes back."),
    FaultKey("n", "drop-network", "Drop network",
             f"Cut every /ingest connection for {_seconds('drop-network')}? "
             "Producers see connection errors."),
    FaultKey("d", "delay-ack", "Delay ACK", None),
    FaultKey("f", "flush-queue", "Flush queue",
             "Delete every queued batch not yet written, and the retry queue? "
             "Their seqs come back as gaps."),
    FaultKey("r", "reset", "Reset faults", "End every active fault now?"),
)  # fmt: skip
FAULTS_BY_ACTION = {fault.action: fault for fault in FAULT_KEYS}

_SCREEN_GROUP = Binding.Group("screens", compact=True)
_FAULT_GROUP = Binding.Group("faults", compact=True)


class DashboardScreen(Screen[None]):
    """A screen under the top bar, redrawn from the model when a topic changes."""

    MODE: ClassVar[str] = ""
    RELOAD_EVERY_S: ClassVar[float | None] = None  # poll interval of reload(), if any
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(number), f"show('{mode}')", label, id=f"screen.{mode}",
                    group=_SCREEN_GROUP)
            for number, (mode, label) in enumerate(SCREENS, start=1)
        ),
        *(
            Binding(fault.key, f"fault('{fault.action}')", fault.description,
                    id=f"fault.{fault.action}", group=_FAULT_GROUP)
            for fault in FAULT_KEYS
        ),
        Binding("question_mark", "help", "Help", key_display="?", id="screen.help"),
        Binding("q", "app.quit", "Quit", id="app.quit"),
    ]  # fmt: skip

    @property
    def dashboard(self) -> TraceHubApp:
        return self.app  # type: ignore[return-value]

    @property
    def model(self) -> DashboardModel:
        return self.dashboard.model

    def now(self) -> float:
        return self.dashboard.clock()

    def compose(self) -> ComposeResult:
        with Horizontal(id="top-bar"):
            yield screen_tabs(self.MODE)
            yield LinkBadge(id="link-badge")
        yield from self.compose_body()
        yield KeyBar()

    def compose_body(self) -> Iterable[Widget]:
        raise NotImplementedError

    _reload_timer: Timer | None = None
    _composed = False  # set on mount: the app may post updates before then

    def on_mount(self) -> None:
        self._composed = True
        self.refresh_view(ALL_TOPICS)

    def on_screen_resume(self) -> None:
        self.refresh_view(ALL_TOPICS)
        if self.RELOAD_EVERY_S is None:
            return
        self.reload()
        if self._reload_timer is None:
            self._reload_timer = self.set_interval(self.RELOAD_EVERY_S, self.reload)
        self._reload_timer.resume()

    def on_screen_suspend(self) -> None:
        if self._reload_timer is not None:
            self._reload_timer.pause()

    def reload(self) -> None:
        """Fetch what the screen polls over HTTP while it is shown (see RELOAD_EVERY_S)."""

    def refresh_view(self, topics: frozenset[Topic] | set[Topic]) -> None:
        """Redraw the parts of the screen that show any of these topics."""
        if not self._composed:
            return
        if topics & {Topic.LINK, Topic.FAULTS, Topic.METRICS, Topic.CLOCK}:
            model = self.model
            now = self.now()
            badge = self.query_one(LinkBadge)
            badge.show(model.connection, model.active_faults(now), now)
        self.update_body(topics)

    def update_body(self, topics: frozenset[Topic] | set[Topic]) -> None:
        raise NotImplementedError

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab.id and event.tab.id != self.MODE:
            self.action_show(event.tab.id)

    def action_show(self, mode: str) -> None:
        self.app.switch_mode(mode)

    def action_fault(self, action: str) -> None:
        self.dashboard.request_fault(FAULTS_BY_ACTION[action])

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.HELP or "", self.active_bindings.values()))
