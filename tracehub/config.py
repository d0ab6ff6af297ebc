"""Settings read from the environment, overridable by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

DEFAULT_PORT = 3001
DEFAULT_HOST = "127.0.0.1"


def default_home() -> Path:
    """Return the folder for embedded server data: TRACEHUB_HOME or the user data dir."""
    configured = os.environ.get("TRACEHUB_HOME")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("tracehub"))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Every tunable of a TraceHub node. Limits are in the units their names give."""

    database_url: str | None = None
    redis_url: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    home: Path = field(default_factory=default_home)
    redis_prefix: str = "tracehub:"

    # Protocol limits.
    missing_cap: int = 1000
    max_batch_entries: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    max_message_bytes: int = 64 * 1024
    max_attrs_bytes: int = 16 * 1024
    max_attrs_depth: int = 8
    gap_deadline_s: float = 300.0

    # Worker.
    worker_batch: int = 50
    worker_block_ms: int = 1000
    claim_idle_ms: int = 15_000
    retry_max_attempts: int = 5
    queue_max_depth: int = 200_000

    # Live events.
    log_events_per_s: int = 200

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from TRACEHUB_* variables, then apply non-None overrides."""
        settings = cls(
            database_url=os.environ.get("TRACEHUB_DATABASE_URL") or None,
            redis_url=os.environ.get("TRACEHUB_REDIS_URL") or None,
            host=os.environ.get("TRACEHUB_HOST") or DEFAULT_HOST,
            port=_env_int("TRACEHUB_PORT", DEFAULT_PORT),
            home=default_home(),
            redis_prefix=os.environ.get("TRACEHUB_REDIS_PREFIX", "tracehub:"),
            missing_cap=_env_int("TRACEHUB_MISSING_CAP", 1000),
            max_batch_entries=_env_int("TRACEHUB_MAX_BATCH_ENTRIES", 10_000),
            max_body_bytes=_env_int("TRACEHUB_MAX_BODY_BYTES", 8 * 1024 * 1024),
            max_message_bytes=_env_int("TRACEHUB_MAX_MESSAGE_BYTES", 64 * 1024),
            gap_deadline_s=float(_env_int("TRACEHUB_GAP_DEADLINE_S", 300)),
            worker_batch=_env_int("TRACEHUB_WORKER_BATCH", 50),
            claim_idle_ms=_env_int("TRACEHUB_CLAIM_IDLE_MS", 15_000),
            queue_max_depth=_env_int("TRACEHUB_QUEUE_MAX_DEPTH", 200_000),
            log_events_per_s=_env_int("TRACEHUB_LOG_EVENTS_PER_S", 200),
        )
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: object) -> Settings:
        """Return a copy with every override that is not None applied."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def embedded(self) -> bool:
        """True when TraceHub must provision its own PostgreSQL or Redis."""
        return self.database_url is None or self.redis_url is None


def client_url(url: str | None) -> str:
    """Return the server URL a client talks to: the flag, TRACEHUB_URL, or the local default."""
    if url:
        return url.rstrip("/")
    env = os.environ.get("TRACEHUB_URL")
    if env:
        return env.rstrip("/")
    port = _env_int("TRACEHUB_PORT", DEFAULT_PORT)
    return f"http://127.0.0.1:{port}"
