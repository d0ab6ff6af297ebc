"""Shared machinery: backing servers, the bench database, TraceHub processes, load.

A ``Bench`` owns everything a benchmark run creates. The database
``bench_<random>`` is dropped at the end, and the keys under its Redis prefix are
deleted. Child processes run in process groups of their own, which are killed at
the end even when a measurement fails. Their logs go to a work folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import psycopg
import redis.asyncio as aioredis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOADGEN_READY_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(
    predicate: Callable[[], Awaitable[Any]],
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL_S,
) -> Any:
    """Poll an async predicate until it returns a truthy value; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}; last value {last!r}"
    )


# --- backing servers -----------------------------------------------------------------


@contextlib.contextmanager
def backing_servers(workdir: Path) -> Iterator[tuple[str, str]]:
    """Yield (admin database URL, Redis URL) from TRACEHUB_DATABASE_URL and
    TRACEHUB_REDIS_URL, starting the embedded servers under workdir for the unset ones."""
    database = os.environ.get("TRACEHUB_DATABASE_URL")
    redis_url = os.environ.get("TRACEHUB_REDIS_URL")
    if database and redis_url:
        yield database, redis_url
        return
    from tracehub.embedded import Embedded

    embedded = Embedded(workdir / "embedded")
    embedded_database, embedded_redis = embedded.start()
    log.info("started the embedded PostgreSQL and Redis under %s", workdir / "embedded")
    try:
        yield database or embedded_database, redis_url or embedded_redis
    finally:
        embedded.stop()


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """Create a database bench_<random> on the server of admin_url; drop it at the end."""
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log.info("created database %s", name)
    try:
        yield make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log.info("dropped database %s", name)


async def delete_prefix(redis_url: str, prefix: str) -> int:
    """Delete every Redis key under prefix; returns how many."""
    client = aioredis.from_url(redis_url)
    deleted = 0
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            deleted += await client.delete(key)
    finally:
        await client.aclose()
    return deleted


# --- child processes -----------------------------------------------------------------


class Child:
    """A child process in its own process group, its output going to a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        stdin: int | None = None,
        stdout: int | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            list(args),
            env=env,
            cwd=ROOT,
            stdin=stdin,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        log.info("started %s (pid %d)", name, self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait, then kill the group if it did not exit."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM; killing its group",
                    self.name,
                    self.pid,
                )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()
        log.info(
            "stopped %s (pid %d), exit code %s",
            self.name,
            self.pid,
            self.popen.returncode,
        )

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return ""


@dataclass
class Bench:
    """Everything one benchmark run owns; see the module docstring."""

    database_url: str
    redis_url: str
    prefix: str
    workdir: Path
    loghub: Path
    quick: bool
    runs: int
    children: list[Child] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        **pipes: Any,
    ) -> Child:
        log_dir = self.workdir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(
            name, args, env or dict(os.environ), log_dir / f"{name}.log", **pipes
        )
        self.children.append(child)
        return child

    def stop(self, child: Child, sig: int = signal.SIGTERM) -> None:
        child.stop(sig)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            try:
                self.stop(child)
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("could not stop %s (pid %d): %s", child.name, child.pid, exc)

    def tracehub_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TRACEHUB_DATABASE_URL=self.database_url,
            TRACEHUB_REDIS_URL=self.redis_url,
            TRACEHUB_REDIS_PREFIX=self.prefix,
            TRACEHUB_HOME=str(self.workdir / "home"),
            **extra,
        )
        return env

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def libpq_params(self) -> dict[str, str]:
        return {k: str(v) for k, v in conninfo_to_dict(self.database_url).items()}


@contextlib.contextmanager
def open_bench(
    loghub: Path, quick: bool, runs: int, keep_workdir: bool = False
) -> Iterator[Bench]:
    """Start (or reach) the servers, create the bench database and prefix; clean all up."""
    workdir = Path(tempfile.mkdtemp(prefix="tracehub-bench-"))
    prefix = f"bench:{secrets.token_hex(4)}:"
    log.info("bench work folder %s, Redis prefix %s", workdir, prefix)
    with backing_servers(workdir) as (admin_url, redis_url):
        with bench_database(admin_url) as database_url:
            bench = Bench(database_url, redis_url, prefix, workdir, loghub, quick, runs)
            try:
                yield bench
            finally:
                bench.stop_all()
                deleted = asyncio.run(delete_prefix(redis_url, prefix))
                log.info("deleted %d Redis keys under %s", deleted, prefix)
    if not keep_workdir:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# --- TraceHub --------------------------------------------------------------------------


class TraceHub:
    """Server nodes (``serve --no-worker``) and worker processes of one bench."""

    def __init__(self, bench: Bench, nodes: int = 1, **settings: str) -> None:
        self.bench = bench
        self.settings = settings
        self.ports = [free_port() for _ in range(nodes)]
        self.servers: list[Child] = []
        self.workers: list[Child] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        return self.urls[0]

    async def start(self, workers: int) -> None:
        for index, port in enumerate(self.ports):
            env = self.bench.tracehub_env(TRACEHUB_PORT=str(port), **self.settings)
            args = [sys.executable, "-m", "tracehub", "serve", "--no-worker"]
            self.servers.append(self.bench.spawn(f"serve-{index}-{port}", args, env))
        for url in self.urls:
            await wait_healthy(url, self.servers)
        await self.set_workers(workers)

    async def set_workers(self, count: int) -> None:
        """Start or stop worker processes until count run, and wait for their heartbeat."""
        while len(self.workers) > count:
            self.bench.stop(self.workers.pop())
        while len(self.workers) < count:
            env = self.bench.tracehub_env(**self.settings)
            args = [sys.executable, "-m", "tracehub", "worker"]
            name = f"worker-{len(self.workers)}-{secrets.token_hex(2)}"
            self.workers.append(self.bench.spawn(name, args, env))
        pids = {w.pid for w in self.workers}
        await wait_until(
            lambda: self._running_workers(pids),
            HEALTH_TIMEOUT_S,
            f"{count} workers to report running",
            interval=0.25,
        )

    async def _running_workers(self, pids: set[int]) -> bool:
        for worker in self.workers:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.tail()}")
        body = await self.metrics()
        running = {w["pid"] for w in body["workers"] if w.get("alive")}
        return pids <= running

    async def metrics(self) -> dict[str, Any]:
        return await get_json(f"{self.url}/metrics")

    async def reset(self) -> None:
        """Delete every log, ACK record and queued batch (POST /metrics/control reset)."""
        await post_json(f"{self.url}/metrics/control", {"action": "reset", "all": True})

    def stop(self) -> None:
        for child in self.workers + self.servers:
            self.bench.stop(child)
        self.workers, self.servers = [], []

    def exited(self) -> list[str]:
        """Describe the processes of this TraceHub that exited, with their exit codes."""
        return [
            f"{c.name} exited with code {c.popen.returncode}"
            for c in self.servers + self.workers
            if not c.alive()
        ]

    async def restart(self, workers: int) -> None:
        log.warning("restarting TraceHub: %s", "; ".join(self.exited()) or "on request")
        self.stop()
        self.ports = [free_port() for _ in self.ports]
        await self.start(workers)

    def pids(self) -> dict[str, list[int]]:
        return {
            "serve": [s.pid for s in self.servers],
            "worker": [w.pid for w in self.workers],
        }


@contextlib.asynccontextmanager
async def running_tracehub(
    bench: Bench, workers: int, nodes: int = 1, **settings: str
) -> AsyncIterator[TraceHub]:
    hub = TraceHub(bench, nodes, **settings)
    try:
        await hub.start(workers)
        yield hub
    finally:
        hub.stop()


async def wait_healthy(url: str, children: Sequence[Child]) -> None:
    async def healthy() -> bool:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(2)) as r,
            ):
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    await wait_until(healthy, HEALTH_TIMEOUT_S, f"{url}/health", interval=0.2)


async def get_json(url: str, **params: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, timeout=aiohttp.ClientTimeout(30)) as r,
    ):
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {url} returned HTTP {r.status}: {body[:300]!r}")
        return orjson.loads(body)


async def post_json(url: str, payload: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(30),
        ) as r,
    ):
        body = await r.read()
        if r.status >= 300:
            raise RuntimeError(f"POST {url} returned HTTP {r.status}: {body[:300]!r}")
        return orjson.loads(body)


async def durable_marks(url: str) -> dict[str, int]:
    body = await get_json(f"{url}/metrics")
    return {s["service"]: s["durableTill"] for s in body["services"]}


# --- load generators -------------------------------------------------------------------


class Loadgen:
    """A load generator child process; see benchmarks.loadgen for its protocol."""

    def __init__(self, bench: Bench, name: str, spec: dict[str, Any]) -> None:
        spec = {"loghub": str(bench.loghub), **spec}
        args = [sys.executable, "-m", "benchmarks.loadgen"]
        self.bench = bench
        self.child = bench.spawn(
            name, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.child.popen.stdin is not None
        self.child.popen.stdin.write(orjson.dumps(spec) + b"\n")
        self.child.popen.stdin.flush()

    async def ready(self) -> None:
        line = await asyncio.wait_for(self._readline(), LOADGEN_READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"{self.child.name} did not start:\n{self.child.tail()}")

    def go(self, t0: float) -> None:
        assert self.child.popen.stdin is not None
        self.child.popen.stdin.write(f"go {t0}\n".encode())
        self.child.popen.stdin.flush()

    async def result(self, timeout: float) -> dict[str, Any]:
        line = await asyncio.wait_for(self._readline(), timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.child.popen.wait, STOP_TIMEOUT_S)
        self.bench.stop(self.child)
        if not line:
            raise RuntimeError(
                f"{self.child.name} gave no result:\n{self.child.tail()}"
            )
        return orjson.loads(line)

    async def _readline(self) -> bytes:
        assert self.child.popen.stdout is not None
        return await asyncio.to_thread(self.child.popen.stdout.readline)


async def start_loadgens(
    bench: Bench, specs: Sequence[dict[str, Any]]
) -> tuple[list[Loadgen], float]:
    """Start generators, wait until each built its bodies, release them together.

    Returns the generators and the epoch time given to them as the start.
    """
    generators = [
        Loadgen(bench, f"loadgen-{i}-{secrets.token_hex(2)}", s)
        for i, s in enumerate(specs)
    ]
    await asyncio.gather(*(g.ready() for g in generators))
    t0 = time.time() + 0.2
    for generator in generators:
        generator.go(t0)
    return generators, t0


def split_services(services: Sequence[str], parts: int) -> list[list[int]]:
    """Deal service indexes round-robin into at most parts groups."""
    groups: list[list[int]] = [[] for _ in range(min(parts, len(services)))]
    for index in range(len(services)):
        groups[index % len(groups)].append(index)
    return groups


def events_per_service(total: int, services: int) -> list[int]:
    base, rest = divmod(total, services)
    return [base + (1 if i < rest else 0) for i in range(services)]


# --- memory --------------------------------------------------------------------------


class RssSampler:
    """Samples the resident memory of processes by role; keeps the maximum per role."""

    def __init__(self, pids: dict[str, list[int]], every_s: float = 0.5) -> None:
        self.pids = pids
        self.every_s = every_s
        self.peak_mb: dict[str, float] = {role: 0.0 for role in pids}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for role, pids in self.pids.items():
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                    self.peak_mb[role] = max(self.peak_mb[role], rss)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="rss-sampler"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()


# --- CPU -------------------------------------------------------------------------------


def server_pids(
    names: Sequence[str] = ("postgres", "redis-server"),
) -> dict[str, list[int]]:
    """Return the pids of the PostgreSQL and Redis server processes, by name."""
    found: dict[str, list[int]] = {name: [] for name in names}
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        for wanted in names:
            if name.startswith(wanted):
                found[wanted].append(process.pid)
    return found


class CpuMeter:
    """CPU time of processes by role between start() and stop(), as % of one core.

    The role "other" is the rest of the machine's busy time: processes outside
    the benchmark, which make the figures noisier on a shared machine.
    """

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[int, float] = {}
        self._started_at = 0.0
        self._machine_start = 0.0

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._machine_start = self._machine_busy()
        for pids in self.pids.values():
            for pid in pids:
                cpu = self._cpu(pid)
                if cpu is not None:
                    self._start[pid] = cpu

    def stop(self) -> dict[str, float]:
        """Return % of one core by role; processes that exited meanwhile are left out."""
        wall = max(time.monotonic() - self._started_at, 1e-9)
        shares = {}
        for role, pids in self.pids.items():
            used = 0.0
            for pid in pids:
                cpu = self._cpu(pid)
                if cpu is not None and pid in self._start:
                    used += cpu - self._start[pid]
            shares[role] = 100 * used / wall
        machine = 100 * (self._machine_busy() - self._machine_start) / wall
        shares["other"] = max(0.0, machine - sum(shares.values()))
        return shares
