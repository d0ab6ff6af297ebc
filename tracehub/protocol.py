"""The ingest protocol: batch validation and the ACK arithmetic, with no I/O.

The live ACK state sits in Redis and is updated by ``ack.lua``; ``AckModel`` here is
the reference implementation the tests hold that script to.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

SEQ_LIMIT = 2**63
SERVICE_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal")
LEVEL_ALIASES = {"warning": "warn", "critical": "fatal"}
# The spellings producers use most, looked up before any case folding.
LEVEL_FAST = {
    spelling: LEVEL_ALIASES.get(name, name)
    for name in (*LEVELS, *LEVEL_ALIASES)
    for spelling in (name, name.upper(), name.capitalize())
}
# RFC 3339 text that PostgreSQL reads as timestamptz unchanged, so it is stored as sent.
RFC3339_STRICT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
KNOWN_KEYS = frozenset(("seq", "level", "message", "request_id", "ts"))
MAX_REQUEST_ID = 256
MAX_EPOCH = 128
TS_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
TS_MAX_AHEAD = timedelta(days=1)
EPOCH_MS_THRESHOLD = 100_000_000_000  # numbers above this are epoch milliseconds
TRUNCATED_ATTR = "_truncated_bytes"
REPLACED_ATTR = "_replaced_nul"

Range = tuple[int, int]


class RequestError(Exception):
    """A request that cannot be read as a batch; nothing of it is applied."""

    def __init__(self, status: int, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


@dataclass(slots=True)
class Entry:
    """One validated log entry, normalised for storage."""

    seq: int
    level: str
    message: str
    request_id: str | None
    ts: datetime
    attrs: dict[str, Any] | None
    ts_text: str = ""  # ts as PostgreSQL reads it; empty means ts.isoformat()


@dataclass(slots=True)
class Rejection:
    """An entry rejected on its own; the rest of its batch still counts."""

    index: int
    seq: int | None
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "seq": self.seq, "field": self.field, "reason": self.reason}


@dataclass(slots=True)
class Batch:
    """A validated ingest request: unique entries sorted by seq, plus what was set aside."""

    service: str
    epoch: str | None
    entries: list[Entry]
    rejected: list[Rejection] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    in_batch_duplicates: int = 0

    @property
    def settled_seqs(self) -> list[int]:
        """Seqs of rejected entries whose seq itself was valid: they never become gaps."""
        valid = {entry.seq for entry in self.entries}
        seqs = {r.seq for r in self.rejected if r.seq is not None and r.seq not in valid}
        return sorted(seqs)


# --- request validation -------------------------------------------------------------


def validate_service(value: Any) -> str:
    """Return a valid service name or raise RequestError naming the field."""
    if not isinstance(value, str) or not SERVICE_RE.fullmatch(value):
        raise RequestError(
            400,
            "invalid_service",
            "service",
            "service must be 1 to 128 characters of letters, digits, '.', '_' or '-',"
            f" got {_preview(value)}",
        )
    return value


def parse_batch(
    body: Any,
    *,
    now: datetime,
    max_entries: int,
    max_message_bytes: int,
    max_attrs_bytes: int,
    max_attrs_depth: int,
    dumps: Any,
) -> Batch:
    """Validate a decoded request body into a Batch.

    Raises RequestError when the request as a whole is unusable. Entries that are
    invalid on their own are listed in ``Batch.rejected`` instead. ``dumps`` serialises
    attrs to JSON bytes so their size can be checked.
    """
    if not isinstance(body, dict):
        raise RequestError(
            400,
            "invalid_body",
            "body",
            f"the body must be a JSON object with 'service' and 'batch', got {type(body).__name__}",
        )
    service = validate_service(body.get("service"))
    epoch = _parse_epoch(body.get("epoch"))
    raw = body.get("batch")
    if not isinstance(raw, list) or not raw:
        raise RequestError(
            400,
            "invalid_batch",
            "batch",
            "batch must be a non-empty JSON array of log entries, got "
            + _preview(raw),
        )
    if len(raw) > max_entries:
        raise RequestError(
            413,
            "batch_too_large",
            "batch",
            f"batch has {len(raw)} entries, the limit is {max_entries}; split it into smaller batches",
        )

    batch = Batch(service=service, epoch=epoch, entries=[])
    first_by_seq: dict[int, Entry] = {}
    for index, item in enumerate(raw):
        try:
            entry = parse_entry(
                item,
                now=now,
                max_message_bytes=max_message_bytes,
                max_attrs_bytes=max_attrs_bytes,
                max_attrs_depth=max_attrs_depth,
                dumps=dumps,
            )
        except _EntryError as exc:
            batch.rejected.append(Rejection(index, exc.seq, exc.field, exc.reason))
            continue
        previous = first_by_seq.get(entry.seq)
        if previous is None:
            first_by_seq[entry.seq] = entry
        elif _same_content(previous, entry):
            batch.in_batch_duplicates += 1
        else:
            batch.in_batch_duplicates += 1
            batch.conflicts.append(
                {
                    "index": index,
                    "seq": entry.seq,
                    "reason": "the batch holds this seq twice with different content;"
                    " the first entry was kept",
                }
            )
    batch.entries = sorted(first_by_seq.values(), key=lambda e: e.seq)
    return batch


class _EntryError(Exception):
    def __init__(self, seq: int | None, field: str, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.field = field
        self.reason = reason


def parse_entry(
    item: Any,
    *,
    now: datetime,
    max_message_bytes: int,
    max_attrs_bytes: int,
    max_attrs_depth: int,
    dumps: Any,
) -> Entry:
    """Validate one batch entry; raises _EntryError naming the first bad field."""
    if not isinstance(item, dict):
        raise _EntryError(None, "entry", f"each entry must be a JSON object, got {_preview(item)}")
    seq = parse_seq(item.get("seq"))
    level = _parse_level(seq, item.get("level"))
    message, attrs = _parse_message(seq, item, max_message_bytes)
    request_id = _parse_request_id(seq, item.get("request_id"))
    ts = _parse_ts(seq, item.get("ts"), now)
    ts_raw = item.get("ts")
    ts_text = ts_raw if isinstance(ts_raw, str) and RFC3339_STRICT.fullmatch(ts_raw) else ""
    if len(item) > 5 or not KNOWN_KEYS.issuperset(item):
        extra = {k: v for k, v in item.items() if k not in KNOWN_KEYS}
        if TRUNCATED_ATTR in extra or REPLACED_ATTR in extra:
            raise _EntryError(seq, "attrs", f"the keys {TRUNCATED_ATTR} and {REPLACED_ATTR} are set"
                                            " by the server only; rename them")  # fmt: skip
        if extra:
            if _check_attrs(seq, extra, max_attrs_bytes, max_attrs_depth, dumps):
                extra = _replace_nul(extra)
                extra[REPLACED_ATTR] = True
            attrs = {**extra, **(attrs or {})}
    return Entry(seq, level, message, request_id, ts, attrs or None, ts_text)


def parse_seq(value: Any) -> int:
    """Return a valid seq or raise _EntryError: an integer with 1 <= seq < 2**63."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _EntryError(
            None, "seq", f"seq must be an integer from 1 to 2^63-1, got {_preview(value)}"
        )
    if not 1 <= value < SEQ_LIMIT:
        raise _EntryError(None, "seq", f"seq must be from 1 to 2^63-1, got {value}")
    return value


def _parse_level(seq: int, value: Any) -> str:
    known = LEVEL_FAST.get(value) if isinstance(value, str) else None
    if known is not None:
        return known
    if isinstance(value, str):
        level = value.lower()
        level = LEVEL_ALIASES.get(level, level)
        if level in LEVELS:
            return level
    raise _EntryError(
        seq,
        "level",
        f"level must be one of {', '.join(LEVELS)} (any case; warning and critical"
        f" are accepted), got {_preview(value)}",
    )


def _parse_message(
    seq: int, item: dict[str, Any], max_bytes: int
) -> tuple[str, dict[str, Any] | None]:
    value = item.get("message")
    if not isinstance(value, str):
        raise _EntryError(seq, "message", f"message must be a string, got {_preview(value)}")
    flags: dict[str, Any] = {}
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
        flags[REPLACED_ATTR] = True
    if value.isascii():  # one byte per character, and no surrogates
        if len(value) > max_bytes:
            flags[TRUNCATED_ATTR] = len(value)
            value = value[:max_bytes]
        return value, flags or None
    if _has_surrogate(value):
        raise _EntryError(seq, "message", "message contains a lone UTF-16 surrogate; send valid Unicode")
    encoded = value.encode("utf-8")
    if len(encoded) > max_bytes:
        flags[TRUNCATED_ATTR] = len(encoded)
        value = encoded[:max_bytes].decode("utf-8", "ignore")
    return value, flags or None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_request_id(seq: int, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_REQUEST_ID and (value.isascii() or not _has_surrogate(value)):
        return value.replace("\x00", "\ufffd")
    raise _EntryError(
        seq,
        "request_id",
        f"request_id must be a string of at most {MAX_REQUEST_ID} characters, got {_preview(value)}",
    )


def _parse_ts(seq: int, value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    parsed = parse_timestamp(value)
    if parsed is None:
        raise _EntryError(
            seq,
            "ts",
            "ts must be an RFC 3339 timestamp or epoch seconds or milliseconds,"
            f" got {_preview(value)}",
        )
    if parsed < TS_MIN or parsed > now + TS_MAX_AHEAD:
        raise _EntryError(
            seq,
            "ts",
            f"ts {parsed.isoformat()} is out of range: send a time from 1970 to at most"
            " one day after the server's clock",
        )
    return parsed


def parse_timestamp(value: Any) -> datetime | None:
    """Parse RFC 3339 text or epoch seconds/milliseconds to an aware UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) > EPOCH_MS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    text = value.strip()
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return None
        return parsed if parsed.tzinfo is timezone.utc else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: before year 1 once in UTC
        return None


def _check_attrs(seq: int, attrs: dict[str, Any], max_bytes: int, max_depth: int, dumps: Any) -> bool:
    """Check depth and size of extra fields; return True when a string in them
    contains NUL, which PostgreSQL jsonb cannot store."""
    if _depth(attrs, max_depth + 1) > max_depth:
        raise _EntryError(seq, "attrs", f"extra fields nest deeper than {max_depth} levels; flatten them")
    try:
        encoded = dumps(attrs)
        size = len(encoded)
    except (TypeError, ValueError) as exc:
        raise _EntryError(seq, "attrs", f"extra fields cannot be stored as JSON: {exc}") from None
    if size > max_bytes:
        raise _EntryError(
            seq, "attrs", f"extra fields take {size} bytes as JSON, the limit is {max_bytes}"
        )
    return b"\\u0000" in encoded


def _replace_nul(value: Any) -> Any:
    """Return value with NUL replaced by U+FFFD in every string, keys included."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_replace_nul(k): _replace_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_nul(item) for item in value]
    return value


def _depth(value: Any, stop: int) -> int:
    """Return the nesting depth of value, counting no further than stop."""
    if stop <= 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, stop - 1) for child in children), default=0)


def _parse_epoch(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RequestError(400, "invalid_epoch", "epoch", f"epoch must be a string or integer, got {_preview(value)}")
    text = str(value)
    if not 1 <= len(text) <= MAX_EPOCH:
        raise RequestError(400, "invalid_epoch", "epoch", f"epoch must be 1 to {MAX_EPOCH} characters")
    return text


def _same_content(a: Entry, b: Entry) -> bool:
    return (a.level, a.message, a.request_id, a.ts, a.attrs) == (
        b.level,
        b.message,
        b.request_id,
        b.ts,
        b.attrs,
    )


def _preview(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (dict, list)):
        return f"{'object' if isinstance(value, dict) else 'array'} of {len(value)} items"
    text = repr(value)
    kind = type(value).__name__
    kind = {"str": "string", "int": "integer", "float": "number"}.get(kind, kind)
    return f"{kind} {text[:60]}{'…' if len(text) > 60 else ''}"


# --- seq ranges ----------------------------------------------------------------------


def to_ranges(seqs: Iterable[int]) -> list[Range]:
    """Collapse ascending unique seqs into inclusive [from, to] ranges."""
    ranges: list[Range] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def expand(ranges: Sequence[Sequence[int]], cap: int) -> list[int]:
    """List the seqs of ranges in order, at most cap of them."""
    seqs: list[int] = []
    for start, end in ranges:
        for seq in range(start, end + 1):
            if len(seqs) >= cap:
                return seqs
            seqs.append(seq)
    return seqs


def count(ranges: Sequence[Sequence[int]]) -> int:
    return sum(end - start + 1 for start, end in ranges)


def contains(ranges: Sequence[Sequence[int]], seq: int) -> bool:
    return any(start <= seq <= end for start, end in ranges)


# --- reference ACK model -------------------------------------------------------------


@dataclass
class AckResult:
    """The effect of one batch on a service's ACK state."""

    accepted: list[Range]
    duplicates: int
    new_gaps: list[Range]
    filled: int
    ack_till: int
    missing: list[Range]
    durable_till: int


@dataclass
class AckModel:
    """The ACK state of one service, in plain Python: the specification of ack.lua."""

    base: int | None = None
    hwm: int = 0
    missing: list[Range] = field(default_factory=list)
    done: list[Range] = field(default_factory=list)
    below: list[Range] = field(default_factory=list)  # seqs received below the base

    def receive(self, seqs: Sequence[int]) -> AckResult:
        """Apply a batch of ascending unique seqs and return the ACK for it."""
        incoming = to_ranges(seqs)
        if self.base is None:
            self.base = incoming[0][0]
            self.hwm = self.base - 1
        accepted: list[Range] = []
        duplicates = 0
        filled = 0
        new_gaps: list[Range] = []
        for start, end in incoming:
            if start < self.base:
                below_end = min(end, self.base - 1)
                taken = self._take_below(start, below_end)
                accepted.extend(taken)
                duplicates += below_end - start + 1 - count(taken)
                start = self.base
                if start > end:
                    continue
            low_end = min(end, self.hwm)
            if start <= low_end:
                taken = self._take_missing(start, low_end)
                accepted.extend(taken)
                got = count(taken)
                filled += got
                duplicates += low_end - start + 1 - got
            high_start = max(start, self.hwm + 1)
            if high_start <= end:
                if high_start > self.hwm + 1:
                    gap = (self.hwm + 1, high_start - 1)
                    new_gaps.append(gap)
                    self.missing.append(gap)
                accepted.append((high_start, end))
                self.hwm = end
        return AckResult(
            accepted=merge(accepted),
            duplicates=duplicates,
            new_gaps=new_gaps,
            filled=filled,
            ack_till=self.hwm,
            missing=list(self.missing),
            durable_till=self.durable_till,
        )

    def commit(self, ranges: Sequence[Range]) -> None:
        """Record ranges as stored in PostgreSQL (or declared lost)."""
        self.done = merge([*self.done, *ranges])

    def declare_lost(self, ranges: Sequence[Range]) -> None:
        for start, end in ranges:
            self._take_missing(start, end)
        self.commit(ranges)

    @property
    def durable_till(self) -> int:
        if self.base is None:
            return 0
        return durable_mark(self.done, self.base)

    def _take_below(self, start: int, end: int) -> list[Range]:
        """Record [start, end] (all below the base) as received; return the new part."""
        new = subtract([(start, end)], self.below)
        self.below = merge([*self.below, *new])
        return new

    def _take_missing(self, start: int, end: int) -> list[Range]:
        """Remove [start, end] from the missing ranges; return the part that was missing."""
        taken: list[Range] = []
        kept: list[Range] = []
        for m_start, m_end in self.missing:
            if m_end < start or m_start > end:
                kept.append((m_start, m_end))
                continue
            lo, hi = max(m_start, start), min(m_end, end)
            taken.append((lo, hi))
            if m_start < lo:
                kept.append((m_start, lo - 1))
            if hi < m_end:
                kept.append((hi + 1, m_end))
        self.missing = kept
        return taken


def durable_mark(done: Sequence[Sequence[int]], base: int) -> int:
    """Return the end of the done range that covers base, or base - 1 if none does."""
    for start, end in done:
        if start <= base <= end:
            return end
    return base - 1


def subtract(ranges: Sequence[Range], removed: Sequence[Range]) -> list[Range]:
    """Return the parts of ranges not covered by removed."""
    result: list[Range] = []
    for start, end in ranges:
        pieces = [(start, end)]
        for r_start, r_end in removed:
            next_pieces = []
            for p_start, p_end in pieces:
                if r_end < p_start or r_start > p_end:
                    next_pieces.append((p_start, p_end))
                    continue
                if p_start < r_start:
                    next_pieces.append((p_start, r_start - 1))
                if r_end < p_end:
                    next_pieces.append((r_end + 1, p_end))
            pieces = next_pieces
        result.extend(pieces)
    return result


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Merge overlapping or adjacent ranges into a sorted disjoint list."""
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
