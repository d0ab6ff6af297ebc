"""Shaping a LogEntry into the JSON entry that POST /ingest takes, with no I/O.

Parsed fields and the shipper's own metadata become extra entry keys, which the
server stores in attrs. The metadata keys are ``file`` (the path as given, left out
for standard input), ``line_number`` (of the entry's first line), ``format`` and,
when they apply, ``truncated`` with ``truncated_bytes``, ``invalid_utf8``,
``continued`` and ``ts_out_of_range``. A parsed field whose name is taken by an
entry key or by metadata is sent as ``field_<name>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from tracehub.protocol import KNOWN_KEYS
from tracehub.protocol import _depth as nesting_depth  # the server's own depth rule
from tracehub.ship.multiline import LogEntry
from tracehub.ship.timestamps import in_server_range

# The server rejects an entry whose extra keys exceed 16 KiB as JSON or nest deeper
# than 8 levels (its defaults). These budgets stay below both, leaving room for
# the metadata.
FIELDS_BUDGET_BYTES = 12 * 1024
FIELDS_MAX_DEPTH = 6


def entry_body(entry: LogEntry, source: str | None, now: datetime) -> dict[str, Any]:
    """Return the ingest entry for a LogEntry, without its seq."""
    parsed = entry.parsed
    body: dict[str, Any] = {"level": parsed.level, "message": entry.message}
    if parsed.request_id is not None:
        body["request_id"] = parsed.request_id
    metadata = _metadata(entry, source)
    if parsed.ts is not None and in_server_range(parsed.ts, now):
        body["ts"] = parsed.ts.isoformat()
    elif parsed.ts is not None:
        metadata["ts_out_of_range"] = parsed.ts.isoformat()

    fields = parsed.fields
    if fields and not _fits(fields):
        body["message"] += "\n" + orjson.dumps(fields).decode()
        metadata["fields_in_message"] = True
        fields = {}
    for key, value in fields.items():
        reserved = key in KNOWN_KEYS or key in metadata
        body[f"field_{key}" if reserved else key] = value
    body.update(metadata)
    return body


def _metadata(entry: LogEntry, source: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "format": entry.parsed.format,
        "line_number": entry.line_number,
    }
    if source is not None:
        metadata["file"] = source
    if entry.cut_bytes:
        metadata["truncated"] = True
        metadata["truncated_bytes"] = entry.cut_bytes
    if entry.invalid_utf8:
        metadata["invalid_utf8"] = True
    if entry.continued:
        metadata["continued"] = True
    return metadata


def _fits(fields: dict[str, Any]) -> bool:
    """Tell whether parsed fields stay within the size and depth the server accepts."""
    if nesting_depth(fields, FIELDS_MAX_DEPTH + 1) > FIELDS_MAX_DEPTH:
        return False
    return len(orjson.dumps(fields)) <= FIELDS_BUDGET_BYTES
