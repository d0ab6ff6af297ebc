"""Completing log timestamps that lack a year or a zone, with no I/O.

Naive times are read in ``TimeRules.zone`` (UTC unless ``--tz`` sets another). A time
without a year (RFC 3164 syslog, OpenSSH) gets ``TimeRules.year`` when it is set.
Otherwise it gets the year of ``TimeRules.now``, or an earlier one when that would
put it more than ``FUTURE_SLACK`` ahead of now, as a log read in January that
was written in December.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS = {
    name: number
    for number, name in enumerate(
        (
            "Jan",
            "Feb",
            "Mar",
            "Apr",
            "May",
            "Jun",
            "Jul",
            "Aug",
            "Sep",
            "Oct",
            "Nov",
            "Dec",
        ),
        start=1,
    )
}
FUTURE_SLACK = timedelta(days=1)
# A February 29 needs up to eight years back to find a leap year (2100 is not one).
YEARS_BACK = 8
OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")
# The server accepts times from 1970 to one day after its clock.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class TimeRules:
    """The zone for naive times, and the year (or the clock) for times without one."""

    zone: tzinfo = timezone.utc
    year: int | None = None
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def parse_zone(text: str) -> tzinfo:
    """Return the zone named by text: UTC, Z, an offset like +02:00, or an IANA name.

    Raises ValueError naming the accepted forms.
    """
    if text.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    match = OFFSET_RE.fullmatch(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {text!r}; use UTC, an offset such as +02:00,"
            " or an IANA name such as Europe/Berlin"
        ) from exc


def localize(naive: datetime, rules: TimeRules) -> datetime:
    """Attach the rules' zone to a naive time and convert it to UTC."""
    return naive.replace(tzinfo=rules.zone).astimezone(timezone.utc)


def with_inferred_year(
    month: int, day: int, clock: tuple[int, int, int, int], rules: TimeRules
) -> datetime | None:
    """Build a UTC time for a date without a year; None when no year makes it valid.

    ``clock`` is (hour, minute, second, microsecond).
    """
    if rules.year is not None:
        return _build(rules.year, month, day, clock, rules)
    latest = rules.now + FUTURE_SLACK
    for year in range(rules.now.year, rules.now.year - YEARS_BACK, -1):
        candidate = _build(year, month, day, clock, rules)
        if candidate is not None and candidate <= latest:
            return candidate
    return None


def _build(
    year: int, month: int, day: int, clock: tuple[int, int, int, int], rules: TimeRules
) -> datetime | None:
    try:
        return localize(datetime(year, month, day, *clock), rules)
    except ValueError:
        return None


def two_digit_year(value: int) -> int:
    """Expand a two-digit year as POSIX strptime %y does: 69-99 are 19xx, 00-68 20xx."""
    return 1900 + value if value >= 69 else 2000 + value


def fraction_to_micros(digits: str | None) -> int:
    """Return the microseconds of a fraction of a second given as its digits."""
    if not digits:
        return 0
    return int(digits[:6].ljust(6, "0"))


def parse_iso(text: str, rules: TimeRules) -> datetime | None:
    """Parse an ISO 8601 date-time with a space or T, reading naive ones in the zone."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return localize(parsed, rules)
    return parsed.astimezone(timezone.utc)


def in_server_range(ts: datetime, now: datetime) -> bool:
    """Tell whether the server accepts ts: from 1970 to one day after its clock."""
    return EARLIEST <= ts <= now + FUTURE_SLACK
