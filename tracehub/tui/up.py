"""`tracehub up`: the server, a simulator and the dashboard, from one command.

The server and the simulator run as child processes in their own sessions, so
keys and terminal signals reach only the dashboard. Whatever ends the dashboard
(q, an error, SIGTERM or SIGHUP), the children are stopped with SIGTERM, then
SIGKILL after a timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional

import httpx
import typer
from rich.console import Console

from tracehub.config import DEFAULT_PORT
from tracehub.tui.cli import default_log_dir, log_to_file, run_dashboard

log = logging.getLogger(__name__)
console = Console(stderr=True)

HEALTH_POLL_S = 0.2
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 15


@dataclass
class Child:
    """A tracehub command running as a child process, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    output: IO[bytes]


@dataclass
class Children:
    """The child processes of `up`, stopped in reverse start order."""

    log_dir: Path
    stop_timeout_s: float = STOP_TIMEOUT_S
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        output = open(log_path, "ab")
        command = [sys.executable, "-m", "tracehub", *args]
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.info("started %s (pid %d): %s", name, process.pid, " ".join(args))
        child = Child(name, process, log_path, output)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.started):
            stop(child, self.stop_timeout_s)
        self.started.clear()


def stop(child: Child, timeout_s: float) -> None:
    """Send SIGTERM, wait up to timeout_s, then SIGKILL."""
    process = child.process
    if process.poll() is None:
        log.info("stopping %s (pid %d) with SIGTERM", child.name, process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) still running after %.0fs; sending SIGKILL",
                        child.name, process.pid, timeout_s)  # fmt: skip
            process.kill()
            process.wait()
    log.info("%s (pid %d) exited with %s", child.name, process.pid, process.returncode)
    child.output.close()


@contextmanager
def children(log_dir: Path, stop_timeout_s: float) -> Iterator[Children]:
    group = Children(log_dir, stop_timeout_s)
    try:
        yield group
    finally:
        group.stop_all()


def is_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(url: str, server: Child, timeout_s: float) -> None:
    """Poll GET /health until it returns 200; raise when the server exits or times out."""
    from tracehub.cli import CliError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy(url):
            return
        if server.process.poll() is not None:
            raise CliError(
                f"the server exited with {server.process.returncode} before it was "
                f"healthy; its log {server.log_path} ends with:\n{tail(server.log_path)}"
            )
        time.sleep(HEALTH_POLL_S)
    raise CliError(
        f"the server at {url} was not healthy after {timeout_s:.0f}s; see {server.log_path} "
        "or raise --startup-timeout"
    )


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read it: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def command_exists(name: str) -> bool:
    """Return True when `tracehub NAME` is a registered command."""
    import typer.main

    from tracehub.cli import app, register_commands

    group = typer.main.get_command(app)
    if name not in getattr(group, "commands", {}):
        register_commands()
        group = typer.main.get_command(app)
    return name in getattr(group, "commands", {})


def child_env(port: int, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TRACEHUB_PORT=str(port), TRACEHUB_URL=url)
    return env


def up(
    port: Optional[int] = typer.Option(
        None, help="TCP port of the server [env TRACEHUB_PORT, default 3001]."
    ),
    services: int = typer.Option(3, min=1, help="Services the simulator runs."),
    sim: bool = typer.Option(True, "--sim/--no-sim", help="Start `tracehub sim`."),
    startup_timeout: float = typer.Option(
        180.0,
        help="Seconds to wait for the server's /health (the first embedded start is slow).",
    ),
    stop_timeout: float = typer.Option(
        STOP_TIMEOUT_S,
        help="Seconds each child gets to exit after SIGTERM before SIGKILL.",
    ),
    log_dir: Optional[Path] = typer.Option(
        None,
        help="Folder for server.log, sim.log and tui.log [default: TRACEHUB_HOME/logs].",
    ),
) -> None:
    """Run the whole system: server, simulator and dashboard; q stops everything."""
    from tracehub.cli import CliError

    port = port or int(os.environ.get("TRACEHUB_PORT") or DEFAULT_PORT)
    url = f"http://127.0.0.1:{port}"
    log_dir = log_dir or default_log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_to_file(log_dir / "tui.log", verbose=False)
    if is_healthy(url):
        raise CliError(
            f"a server is already running at {url}; use `tracehub tui --url {url}` or --port"
        )
    env = child_env(port, url)
    with children(log_dir, stop_timeout) as group:
        console.print(f"starting the server on {url} (log: {log_dir / 'server.log'})")
        server = group.start("server", ["serve", "--port", str(port)], env)
        wait_healthy(url, server, startup_timeout)
        start_sim(group, sim, services, env)
        run_dashboard(url)
        console.print("stopping the simulator and the server")
    console.print(f"stopped; logs are in {log_dir}")


def start_sim(
    group: Children, requested: bool, services: int, env: dict[str, str]
) -> None:
    if not requested:
        return
    if not command_exists("sim"):
        console.print(
            "`tracehub sim` is not available in this install; running without a simulator"
        )
        log.warning("tracehub sim is not registered; up runs without a simulator")
        return
    group.start("sim", ["sim", "--services", str(services)], env)
