"""Access tokens: who may ingest which services, read, or operate the server.

Three kinds of bearer token exist. An ingest token writes only the services it
names (or every service, with "*"). A read token queries logs, metrics and the
Socket.IO stream. An admin token does everything, including fault control and
replay requests. With no token configured the server runs open, which it allows
only on a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READ = "read"
ADMIN = "admin"
INGEST = "ingest"


class TokenConfigError(ValueError):
    """The token file or variables cannot be read."""


@dataclass(frozen=True)
class Principal:
    """The permissions of one request's token."""

    role: str  # admin, read, ingest, or "open" when no tokens are configured
    services: frozenset[str] = frozenset()

    def can_read(self) -> bool:
        return self.role in (ADMIN, READ, "open")

    def can_admin(self) -> bool:
        return self.role in (ADMIN, "open")

    def can_ingest(self, service: str) -> bool:
        if self.role in (ADMIN, "open"):
            return True
        return self.role == INGEST and ("*" in self.services or service in self.services)


OPEN = Principal("open")


@dataclass(frozen=True)
class Tokens:
    """The configured tokens, each mapped to what it grants."""

    grants: dict[str, Principal] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.grants)

    def principal(self, authorization: str | None) -> Principal | None:
        """Return the principal of an Authorization header, or None when it grants
        nothing. Every configured token is compared, in constant time each, so the
        time taken does not tell which token came close."""
        if not self.enabled:
            return OPEN
        presented = _bearer(authorization)
        if presented is None:
            return None
        found = None
        for token, grant in self.grants.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = grant
        return found

    @classmethod
    def load(cls, path: str | None = None) -> Tokens:
        """Read tokens from TRACEHUB_TOKENS_FILE (JSON) and the TRACEHUB_*_TOKEN variables."""
        grants: dict[str, Principal] = {}
        file_path = path or os.environ.get("TRACEHUB_TOKENS_FILE")
        if file_path:
            grants.update(_from_file(Path(file_path)))
        for token in _split(os.environ.get("TRACEHUB_ADMIN_TOKEN")):
            grants[token] = Principal(ADMIN)
        for token in _split(os.environ.get("TRACEHUB_READ_TOKEN")):
            grants[token] = Principal(READ)
        for item in _split(os.environ.get("TRACEHUB_INGEST_TOKENS"), ";"):
            token, _, services = item.partition(":")
            grants[token.strip()] = _ingest_grant(services.split(","), "TRACEHUB_INGEST_TOKENS")
        return cls(grants)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _split(raw: str | None, separator: str = ",") -> list[str]:
    return [part.strip() for part in (raw or "").split(separator) if part.strip()]


def _ingest_grant(services: list[str], source: str) -> Principal:
    names = frozenset(s.strip() for s in services if s.strip())
    if not names:
        raise TokenConfigError(f"an ingest token in {source} names no service; add service names or '*'")
    return Principal(INGEST, names)


def _from_file(path: Path) -> dict[str, Principal]:
    """Read {"admin": [...], "read": [...], "ingest": {"<token>": ["svc", ...]}}."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokenConfigError(f"cannot read the token file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenConfigError(f"the token file {path} must hold a JSON object")
    grants: dict[str, Principal] = {}
    for token in data.get("admin", []):
        grants[str(token)] = Principal(ADMIN)
    for token in data.get("read", []):
        grants[str(token)] = Principal(READ)
    ingest = data.get("ingest", {})
    if not isinstance(ingest, dict):
        raise TokenConfigError(f"'ingest' in {path} must map each token to a list of services")
    for token, services in ingest.items():
        grants[str(token)] = _ingest_grant([str(s) for s in services], str(path))
    return grants


def is_loopback(host: str) -> bool:
    """Return True when host names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
