"""The dashboard app: five screens over one model, fed by the live connection."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from functools import partial
from typing import Any, Awaitable, Callable, ClassVar, Iterable

from textual.app import App, SystemCommand
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tracehub.tui import messages
from tracehub.tui.api import ApiError, TraceHubApi
from tracehub.tui.feed import LiveBuffer, LiveFeed
from tracehub.tui.model import Connection, DashboardModel, Link
from tracehub.tui.screens.base import DashboardScreen, FaultKey, Topic
from tracehub.tui.screens.confirm import ConfirmScreen
from tracehub.tui.screens.help import key_label, listed_bindings
from tracehub.tui.screens.logs import LogsScreen
from tracehub.tui.screens.overview import OverviewScreen
from tracehub.tui.screens.queue import QueueScreen
from tracehub.tui.screens.replay import ReplayScreen
from tracehub.tui.screens.services import ServicesScreen

log = logging.getLogger(__name__)

TICK_S = 1.0
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class TraceHubApp(App[None]):
    """The TraceHub dashboard for the server at `url`, with a read or admin token.

    With live=False nothing connects: tests feed the model through the message
    handlers, and `clock` fixes the time used for ages and countdowns.
    """

    CSS_PATH = "app.tcss"
    TITLE = "TraceHub"
    MODES: ClassVar[dict[str, Any]] = {
        "overview": OverviewScreen,
        "logs": LogsScreen,
        "replay": ReplayScreen,
        "queue": QueueScreen,
        "services": ServicesScreen,
    }
    DEFAULT_MODE = "overview"
    # Screens of 36 rows or more get the class -tall, which gives charts more rows.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        live: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.live = live
        self.clock = clock
        self.api = TraceHubApi(self.url, token)
        self.model = DashboardModel()
        self.model.connection = Connection(
            Link.CONNECTING if live else Link.DISCONNECTED, self.url
        )
        self.buffer = LiveBuffer()

    def on_mount(self) -> None:
        if self.live:
            feed = LiveFeed(self.url, self.api, self.buffer, self.post_message)
            self.run_worker(
                feed.run(), name="live feed", group="feed", exit_on_error=False
            )
            self.set_interval(TICK_S, partial(self.refresh_screens, Topic.CLOCK))
        self._handle_exit_signals(install=True)
        log.info("dashboard started for %s", self.url)

    async def on_unmount(self) -> None:
        self._handle_exit_signals(install=False)
        await self.api.aclose()
        log.info("dashboard stopped")

    def _handle_exit_signals(self, *, install: bool) -> None:
        """Exit cleanly (restoring the terminal) on SIGTERM, and on SIGHUP when an SSH
        session drops; the event loop takes signals in the main thread only."""
        loop = asyncio.get_running_loop()
        for signum in EXIT_SIGNALS:
            try:
                if install:
                    loop.add_signal_handler(signum, self.exit)
                else:
                    loop.remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                log.debug("cannot handle signal %s here: %s", signum, exc)

    def refresh_screens(self, *topics: Topic) -> None:
        """Redraw what shows these topics on the current screen (below any modal)."""
        base = self.screen_stack[0] if self.screen_stack else None
        if isinstance(base, DashboardScreen) and base.is_mounted:
            base.refresh_view(set(topics))

    # --- server data ---------------------------------------------------------------

    def on_metrics_updated(self, message: messages.MetricsUpdated) -> None:
        self.model.apply_metrics(message.body)
        self.refresh_screens(Topic.METRICS, Topic.FAULTS)

    def on_live_ready(self, message: messages.LiveReady) -> None:
        batch = self.buffer.drain()
        self.model.add_logs(batch.logs)
        self.model.count_skipped(batch.skipped_by_server, batch.dropped_locally)
        self.model.apply_acks(batch.acks)
        self.refresh_screens(Topic.LOGS)

    def on_caught_up(self, message: messages.CaughtUp) -> None:
        self.model.apply_metrics(message.metrics)
        self.model.merge_logs(message.logs)
        self.refresh_screens(Topic.METRICS, Topic.FAULTS, Topic.LOGS)

    def on_connection_changed(self, message: messages.ConnectionChanged) -> None:
        connection = message.connection
        if self.model.set_connection(connection, self.clock()):
            self.notify(f"{connection.error}; retrying with backoff",
                        title=f"No connection to {connection.url}", severity="warning")  # fmt: skip
        self.refresh_screens(Topic.LINK, Topic.EVENTS)

    def on_replay_completed(self, message: messages.ReplayCompleted) -> None:
        self.model.replay_completed(message.event, self.clock())
        self.refresh_screens(Topic.REPLAYS, Topic.EVENTS)
        if isinstance(self.screen, ReplayScreen):
            self.load_replays()

    def on_worker_crashed(self, message: messages.WorkerCrashed) -> None:
        self.model.worker_crashed(message.event, self.clock())
        self.refresh_screens(Topic.EVENTS)

    def on_worker_recovered(self, message: messages.WorkerRecovered) -> None:
        self.model.worker_recovered(message.event, self.clock())
        self.refresh_screens(Topic.EVENTS)

    def on_control_applied(self, message: messages.ControlApplied) -> None:
        self.model.apply_control(message.body, self.clock())
        self.refresh_screens(Topic.FAULTS, Topic.EVENTS)

    def on_replays_loaded(self, message: messages.ReplaysLoaded) -> None:
        self.model.apply_replays(message.body)
        self.refresh_screens(Topic.REPLAYS)

    def on_queue_loaded(self, message: messages.QueueLoaded) -> None:
        self.model.queue = message.body
        self.refresh_screens(Topic.QUEUE)

    # --- requests ------------------------------------------------------------------

    def fetch(
        self,
        call: Callable[[], Awaitable[Any]],
        wrap: Callable[[Any], Message],
        group: str,
        *,
        poll: bool = False,
    ) -> None:
        """Run an API call in a worker and post its result wrapped in a message.

        Without a live server (live=False) nothing is fetched, and a poll is skipped
        while the connection is down, so an outage is not reported every 2 s.
        """
        if not self.live:
            return
        if poll and self.model.connection.link is not Link.CONNECTED:
            return

        async def run() -> None:
            self.post_message(wrap(await call()))

        # A callable, not a coroutine, so a worker cancelled before it starts leaves
        # no coroutine unawaited. Textual's stubs type this case loosely.
        self.run_worker(
            run,  # type: ignore[arg-type]
            name=group,
            group=group,
            exclusive=True,
            exit_on_error=False,
        )

    def load_replays(self) -> None:
        self.fetch(
            self.api.replays, messages.ReplaysLoaded, "GET /logs/replay", poll=True
        )

    def load_queue(self) -> None:
        self.fetch(
            self.api.queue, messages.QueueLoaded, "GET /metrics/queue", poll=True
        )

    def request_fault(self, fault: FaultKey) -> None:
        """Send a fault to POST /metrics/control, a destructive one once the user confirms."""
        if fault.question is None:
            self._send_control(fault.action)
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._send_control(fault.action)

        self.push_screen(ConfirmScreen(fault.description, fault.question), answered)

    def _send_control(self, action: str) -> None:
        log.info("sending fault control %s to %s", action, self.url)
        self.fetch(
            partial(self.api.control, action),
            messages.ControlApplied,
            f"control {action}",
        )

    def request_replay(self, service: str, first: int, last: int) -> None:
        async def run() -> None:
            body = await self.api.request_replay(service, first, last)
            replay = body["replay"]
            self.notify(
                f"replay {replay['id']} of {service} {first}..{last}: {replay['status']}"
            )
            self.load_replays()

        self.run_worker(run(), name="POST /logs/replay", exit_on_error=False)

    def open_replay_form(self, service: str, first: int, last: int) -> None:
        """Show the Replay screen with its form filled in for this seq range."""

        def prefill() -> None:
            if isinstance(self.screen, ReplayScreen):
                self.screen.prefill(service, first, last)

        self.switch_mode("replay")
        self.call_after_refresh(prefill)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        if isinstance(error, ApiError):  # the message names the request already
            log.warning("%s", error)
            text = str(error)
        else:
            log.error("%s failed: %s", event.worker.name, error, exc_info=error)
            text = f"{event.worker.name} failed: {error}"
        self.notify(text, title="Request failed", severity="error")
        if event.worker.group == "feed":
            down = Connection(Link.DISCONNECTED, self.url, f"live feed failed: {error}")
            self.model.set_connection(down, self.clock())
            self.refresh_screens(Topic.LINK, Topic.EVENTS)

    # --- command palette -----------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Offer every binding of the screen (screens, faults, its own keys)."""
        yield from super().get_system_commands(screen)
        for active in listed_bindings(screen.active_bindings.values()):
            binding = active.binding
            yield SystemCommand(
                binding.description,
                f"key {key_label(binding)}",
                partial(self.run_action, binding.action, active.node),
            )
