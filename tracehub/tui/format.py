"""Text formatting of figures for the dashboard: counts, rates, durations, times."""

from __future__ import annotations

from datetime import datetime, timezone

NO_VALUE = "-"


def count(value: float | int | None) -> str:
    """Format a count with thousands separators, or 12.3k / 4.5M when large."""
    if value is None:
        return NO_VALUE
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 100_000:
        return f"{value / 1000:.0f}k"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def rate(value: float | int | None) -> str:
    """Format events per second."""
    return NO_VALUE if value is None else f"{count(value)}/s"


def percent(ratio: float | None) -> str:
    """Format a ratio from 0 to 1 as a percentage."""
    if ratio is None:
        return NO_VALUE
    return f"{ratio * 100:.1f}%"


def millis(value: float | None) -> str:
    """Format a latency in milliseconds."""
    if value is None:
        return NO_VALUE
    if value >= 10_000:
        return duration(value / 1000)
    return f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def duration(seconds: float | None) -> str:
    """Format a duration as 4.2s, 3m05s or 2h07m."""
    if seconds is None:
        return NO_VALUE
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def parse_time(value: str | float | None) -> float | None:
    """Return epoch seconds from an ISO 8601 string or a number, None when invalid."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def clock(value: str | float | None, *, millis: bool = False) -> str:
    """Format a time of day in UTC, HH:MM:SS or HH:MM:SS.mmm."""
    epoch = parse_time(value)
    if epoch is None:
        return NO_VALUE
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    text = moment.strftime("%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def age(since: str | float | None, now: float) -> str:
    """Format how long ago `since` was, relative to now (epoch seconds)."""
    epoch = parse_time(since)
    return NO_VALUE if epoch is None else duration(now - epoch)


def seq_range(first: int, last: int) -> str:
    """Format an inclusive seq range."""
    return str(first) if first == last else f"{first}..{last}"


def seq(value: int | None) -> str:
    """Format a seq exactly, since a rounded seq is useless for a replay request."""
    return NO_VALUE if value is None else str(value)


def plural(number: int, singular: str, plural_form: str) -> str:
    """Format a count with its noun, e.g. 1 batch, 3 batches."""
    return f"{count(number)} {singular if number == 1 else plural_form}"
