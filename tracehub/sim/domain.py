"""Believable logs for simulated services: domain events, a level mix with bursts
of errors, and request ids that several services share.

Pure: nothing here does I/O. Every choice comes from the ``random.Random`` passed
in, so a seeded run writes the same logs.
"""

from __future__ import annotations

import random
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from tracehub.sim.catalog import CATALOGS, GENERIC, Event

KNOWN_NAMES = (
    "auth-service",
    "payment-service",
    "notification-service",
    "inventory-service",
    "search-service",
    "shipping-service",
)

# Error bursts: how often one starts, how long it lasts, and the share of a burst's
# logs that are incident events (the rest keep the normal mix).
BURSTS_PER_MINUTE = 1.0
BURST_MIN_S = 2.0
BURST_MAX_S = 6.0
BURST_INCIDENT_SHARE = 0.6

# Request ids: the first service starts most requests and the others mostly join
# one of the recent ones, so a request id shows up in several services.
RECENT_REQUESTS = 64
START_SHARE_FIRST = 0.7
START_SHARE_OTHERS = 0.2


def service_names(count: int) -> list[str]:
    """Return count service names: the known ones first, then service-7, service-8, …"""
    names = list(KNOWN_NAMES[:count])
    names += [f"service-{index}" for index in range(len(names) + 1, count + 1)]
    return names


# --- request ids and bursts ---------------------------------------------------------


class RequestIds:
    """Request ids shared by every service of one run."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.recent: deque[str] = deque(maxlen=RECENT_REQUESTS)

    def next(self, start_share: float) -> str:
        """Return a new request id with probability start_share, else a recent one."""
        if not self.recent or self.rng.random() < start_share:
            request_id = f"req-{self.rng.getrandbits(48):012x}"
            self.recent.append(request_id)
            return request_id
        return self.rng.choice(self.recent)


class Bursts:
    """When one service is in an error burst: rare, a few seconds long."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self.checked = now
        self.until = 0.0

    def active(self, now: float) -> bool:
        if now < self.until:
            return True
        elapsed, self.checked = max(0.0, now - self.checked), now
        if self.rng.random() < elapsed * BURSTS_PER_MINUTE / 60:
            self.until = now + self.rng.uniform(BURST_MIN_S, BURST_MAX_S)
            return True
        return False


# --- one service --------------------------------------------------------------------


class ServiceLogs:
    """The log writer of one simulated service: returns entries without a seq."""

    def __init__(
        self,
        service: str,
        requests: RequestIds,
        rng: random.Random,
        *,
        first: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.requests = requests
        self.rng = rng
        self.clock = clock
        self.start_share = START_SHARE_FIRST if first else START_SHARE_OTHERS
        self.events = CATALOGS.get(service, GENERIC)
        self.incidents = [e for e in self.events if e.incident] or list(self.events)
        self.bursts = Bursts(rng, clock())

    def entry(self) -> dict[str, Any]:
        """Return the next log as the fields of a batch entry, without its seq."""
        now = self.clock()
        event = self._pick(self.bursts.active(now))
        fields = event.fields(self.rng)
        entry: dict[str, Any] = {
            "level": event.level,
            "message": event.text.format(**fields),
            "ts": _rfc3339(now),
        }
        if event.traced:
            entry["request_id"] = self.requests.next(self.start_share)
        entry["event"] = event.name
        entry.update(fields)
        return entry

    def _pick(self, in_burst: bool) -> Event:
        pool = self.events
        if in_burst and self.rng.random() < BURST_INCIDENT_SHARE:
            pool = self.incidents
        return self.rng.choices(pool, weights=[e.weight for e in pool])[0]


def _rfc3339(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
