"""PostgreSQL storage: schema, exactly-once batch writes, queries and replay records.

Every SQL statement of TraceHub lives in this module. Driver errors leave it as
``StorageUnavailable`` (the server cannot be reached) or ``StorageError``.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Iterable, Sequence

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from tracehub.protocol import Entry, Range

log = logging.getLogger(__name__)

COLUMNS = "service, seq, level, message, request_id, ts, attrs, received_at"
# A text search for a word no row contains scans the whole table; cancel it.
QUERY_TIMEOUT_MS = 5000
SCHEMA_LOCK_ID = 0x7472616365  # advisory lock key serialising schema set-up across nodes


class StorageError(Exception):
    """A PostgreSQL operation failed for a reason other than reachability."""


class QueryTimeout(StorageError):
    """A query ran past QUERY_TIMEOUT_MS and was cancelled."""


class StorageUnavailable(StorageError):
    """PostgreSQL cannot be reached; the operation may succeed later."""


# --- COPY rows -----------------------------------------------------------------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_text(value: str) -> str:
    """Escape value for COPY text format; most values need nothing, so check first."""
    if "\\" in value or "\n" in value or "\t" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def format_rows(service: str, entries: Iterable[Entry], received_at: datetime) -> bytes:
    """Render entries as COPY text rows, one per line, in the column order of COLUMNS.

    The second field of each line is the seq, so a consumer can filter rows by seq
    without decoding them.
    """
    tail = f"\t{received_at.isoformat()}\n"
    head = f"{_copy_text(service)}\t"
    dumps = orjson.dumps
    lines = []
    for e in entries:
        attrs = _copy_text(dumps(e.attrs).decode()) if e.attrs else "\\N"
        request_id = "\\N" if e.request_id is None else _copy_text(e.request_id)
        lines.append(
            f"{head}{e.seq}\t{e.level}\t{_copy_text(e.message)}\t{request_id}"
            f"\t{e.ts_text or e.ts.isoformat()}\t{attrs}{tail}"
        )
    return "".join(lines).encode("utf-8")


# --- query helpers -------------------------------------------------------------------


@dataclass(frozen=True)
class LogQuery:
    """Filters of GET /logs; every field is optional except limit."""

    service: str | None = None
    levels: tuple[str, ...] = ()
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: tuple[datetime, int] | None = None
    limit: int = 100


def like_pattern(text: str) -> str:
    """Return an ILIKE pattern matching text literally anywhere in a value."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_cursor(ts: datetime, row_id: int) -> str:
    raw = f"{ts.timestamp():.6f}:{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Decode a cursor from encode_cursor; raises ValueError when it is not one."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        ts_text, id_text = base64.urlsafe_b64decode(padded).decode().split(":")
        return datetime.fromtimestamp(float(ts_text), tz=timezone.utc), int(id_text)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError) as exc:
        raise ValueError(f"cursor {cursor!r} is not a cursor returned by GET /logs") from exc


# --- the store -----------------------------------------------------------------------


@dataclass
class CompletedReplay:
    id: int
    service: str
    from_seq: int
    to_seq: int
    latency_ms: float


class Store:
    """A connection pool to PostgreSQL and the statements TraceHub runs on it."""

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self.conninfo = conninfo
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=10,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
        )

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS logs_stage"
            " (service text, seq bigint, level text, message text, request_id text,"
            " ts timestamptz, attrs jsonb, received_at timestamptz)"
            " ON COMMIT DELETE ROWS"
        )

    async def open(self) -> None:
        """Open the pool and apply the schema; raises StorageUnavailable on failure."""
        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=10
            ) as conn:
                await self._apply_schema(conn)
            await self.pool.open(wait=True, timeout=15)
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        await self.pool.close()

    @staticmethod
    async def _apply_schema(conn: psycopg.AsyncConnection) -> None:
        schema = resources.files("tracehub").joinpath("sql/schema.sql").read_text()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            await conn.execute(schema)
        log.info("schema applied")

    async def ping(self) -> bool:
        """Return True when a query runs within the pool timeout."""
        try:
            async with self.pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, TimeoutError, OSError) as exc:
            log.warning("PostgreSQL health check failed: %s", exc)
            return False

    # --- writes --------------------------------------------------------------------

    async def write_batch(
        self,
        rows: bytes,
        gaps: Sequence[tuple[str, int, int]],
        replay_services: Sequence[str],
        *,
        fresh: bool = False,
    ) -> tuple[int, list[CompletedReplay]]:
        """Store COPY rows exactly once and record new gaps, in one transaction.

        With fresh, the caller expects none of the rows to be stored yet, so they are
        copied straight into logs. If one is stored after all, the unique key rejects
        the copy and the batch is written again through the staging table, which
        skips rows already present. Returns the number of rows inserted and the
        replay requests of replay_services that the stored rows completed.
        """
        try:
            if fresh:
                try:
                    return await self._write(rows, gaps, replay_services, direct=True)
                except psycopg.errors.UniqueViolation:
                    log.info("direct copy of %d bytes met stored rows; writing through staging", len(rows))
            return await self._write(rows, gaps, replay_services, direct=False)
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"PostgreSQL write failed: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL rejected the batch: {exc}") from exc

    async def _write(
        self,
        rows: bytes,
        gaps: Sequence[tuple[str, int, int]],
        replay_services: Sequence[str],
        *,
        direct: bool,
    ) -> tuple[int, list[CompletedReplay]]:
        async with self.pool.connection() as conn:
            async with conn.transaction():
                if direct:
                    inserted = await self._copy_rows(conn, rows)
                else:
                    inserted = await self._insert_rows(conn, rows)
                if gaps:
                    await self._insert_gaps(conn, gaps)
                completed = []
                if replay_services:
                    completed = await self._complete_replays(conn, replay_services)
        return inserted, completed

    @staticmethod
    async def _copy_rows(conn: psycopg.AsyncConnection, rows: bytes) -> int:
        if not rows:
            return 0
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY logs ({COLUMNS}) FROM STDIN") as copy:
                await copy.write(rows)
            return cur.rowcount

    @staticmethod
    async def _insert_rows(conn: psycopg.AsyncConnection, rows: bytes) -> int:
        if not rows:
            return 0
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY logs_stage ({COLUMNS}) FROM STDIN") as copy:
                await copy.write(rows)
            await cur.execute(
                f"INSERT INTO logs ({COLUMNS}) SELECT {COLUMNS} FROM logs_stage"
                " ON CONFLICT (service, seq) DO NOTHING"
            )
            return cur.rowcount  # the staging rows go at commit (ON COMMIT DELETE ROWS)

    @staticmethod
    async def _insert_gaps(
        conn: psycopg.AsyncConnection, gaps: Sequence[tuple[str, int, int]]
    ) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO replay_requests (service, from_seq, to_seq, reason)"
                " VALUES (%s, %s, %s, 'gap')"
                " ON CONFLICT (service, from_seq, to_seq) DO NOTHING",
                list(gaps),
            )

    @staticmethod
    async def _complete_replays(
        conn: psycopg.AsyncConnection, services: Sequence[str]
    ) -> list[CompletedReplay]:
        """Recount pending replays of services and complete those now fully stored."""
        cur = await conn.execute(
            """
            WITH counted AS (
                SELECT r.id,
                       (SELECT count(*) FROM logs l
                         WHERE l.service = r.service
                           AND l.seq BETWEEN r.from_seq AND r.to_seq) AS filled
                  FROM replay_requests r
                 WHERE r.status = 'pending' AND r.service = ANY(%s)
            )
            UPDATE replay_requests r
               SET filled = c.filled,
                   status = CASE WHEN c.filled >= r.to_seq - r.from_seq + 1
                                 THEN 'completed' ELSE 'pending' END,
                   completed_at = CASE WHEN c.filled >= r.to_seq - r.from_seq + 1
                                       THEN now() END
              FROM counted c
             WHERE r.id = c.id
            RETURNING r.id, r.service, r.from_seq, r.to_seq, r.status,
                      extract(epoch FROM (r.completed_at - r.created_at)) * 1000
            """,
            (list(services),),
        )
        return [
            CompletedReplay(row[0], row[1], row[2], row[3], float(row[5]))
            for row in await cur.fetchall()
            if row[4] == "completed"
        ]

    async def save_ack_state(self, states: Sequence[dict[str, Any]]) -> None:
        """Upsert the durable ACK figures of services; marks only ever move forward."""
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    """
                    INSERT INTO ack_state (service, base, ack_till, durable_till, lost, epoch)
                    VALUES (%(service)s, %(base)s, %(ack_till)s, %(durable_till)s,
                            %(lost)s, %(epoch)s)
                    ON CONFLICT (service) DO UPDATE SET
                        ack_till = GREATEST(ack_state.ack_till, EXCLUDED.ack_till),
                        durable_till = GREATEST(ack_state.durable_till, EXCLUDED.durable_till),
                        lost = GREATEST(ack_state.lost, EXCLUDED.lost),
                        epoch = COALESCE(EXCLUDED.epoch, ack_state.epoch),
                        updated_at = now()
                    """,
                    list(states),
                )

    async def load_ack_state(self, service: str) -> dict[str, Any] | None:
        """Return the saved ACK row of service, or None for a service never seen."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM ack_state WHERE service = %s", (service,))
            return await cur.fetchone()

    async def stored_ranges(self, service: str, above: int) -> list[Range]:
        """Return the stored seqs of service above a seq, collapsed into ranges."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT min(seq), max(seq) FROM (
                    SELECT seq, seq - row_number() OVER (ORDER BY seq) AS island
                      FROM logs WHERE service = %s AND seq > %s
                ) s GROUP BY island ORDER BY 1
                """,
                (service, above),
            )
            return [(row[0], row[1]) for row in await cur.fetchall()]

    # --- replay requests -------------------------------------------------------------

    async def record_gaps(self, service: str, ranges: Sequence[Range], reason: str) -> None:
        """Open a pending replay request for each range (reopening an old one)."""
        async with self.pool.connection() as conn:
            async with conn.cursor() as cur:
                await cur.executemany(
                    """
                    INSERT INTO replay_requests (service, from_seq, to_seq, reason)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (service, from_seq, to_seq) DO UPDATE
                        SET status = 'pending', reason = EXCLUDED.reason,
                            completed_at = NULL, created_at = now()
                    """,
                    [(service, start, end, reason) for start, end in ranges],
                )

    async def create_replay(self, service: str, from_seq: int, to_seq: int) -> dict[str, Any]:
        """Record an operator's request to replay a seq range; returns the row."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                """
                INSERT INTO replay_requests (service, from_seq, to_seq, reason)
                VALUES (%s, %s, %s, 'manual')
                ON CONFLICT (service, from_seq, to_seq) DO UPDATE
                    SET status = 'pending', reason = 'manual', completed_at = NULL,
                        created_at = now(), attempts = 0
                RETURNING *
                """,
                (service, from_seq, to_seq),
            )
            row = await cur.fetchone()
            assert row is not None
            return row

    async def pending_replays(self, limit: int = 500) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT * FROM replay_requests WHERE status = 'pending'"
                " ORDER BY created_at LIMIT %s",
                (limit,),
            )
            return await cur.fetchall()

    async def services_with_pending_replays(self) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT service FROM replay_requests WHERE status = 'pending'"
            )
            return [row[0] for row in await cur.fetchall()]

    async def recount_replays(self, services: Sequence[str]) -> list[CompletedReplay]:
        async with self.pool.connection() as conn:
            async with conn.transaction():
                return await self._complete_replays(conn, services)

    async def bump_replay_attempts(self, ids: Sequence[int]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE replay_requests SET attempts = attempts + 1 WHERE id = ANY(%s)",
                (list(ids),),
            )

    async def mark_replays_lost(self, ids: Sequence[int], reason: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE replay_requests SET status = 'lost', reason = %s,"
                " completed_at = now() WHERE id = ANY(%s) AND status = 'pending'",
                (reason, list(ids)),
            )

    async def mark_ranges_lost(self, service: str, ranges: Sequence[Range], reason: str) -> None:
        """Record ranges of service as lost: pending replays overlapping them end as
        lost, and a lost record is written for each range, so a gap record that
        arrives later through the queue cannot reopen it."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                for start, end in ranges:
                    await conn.execute(
                        "UPDATE replay_requests SET status = 'lost', reason = %s,"
                        " completed_at = now() WHERE service = %s AND status = 'pending'"
                        " AND from_seq <= %s AND to_seq >= %s",
                        (reason, service, end, start),
                    )
                    await conn.execute(
                        "INSERT INTO replay_requests (service, from_seq, to_seq, reason, status,"
                        " completed_at) VALUES (%s, %s, %s, %s, 'lost', now())"
                        " ON CONFLICT (service, from_seq, to_seq) DO UPDATE"
                        " SET status = 'lost', reason = EXCLUDED.reason, completed_at = now()",
                        (service, start, end, reason),
                    )

    async def list_replays(
        self, *, service: str | None, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                """
                SELECT * FROM replay_requests
                 WHERE (%(service)s::text IS NULL OR service = %(service)s)
                   AND (%(status)s::text IS NULL OR status = %(status)s)
                 ORDER BY created_at DESC, id DESC LIMIT %(limit)s
                """,
                {"service": service, "status": status, "limit": limit},
            )
            return await cur.fetchall()

    async def replay_counts(self) -> dict[str, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT status, count(*) FROM replay_requests GROUP BY status")
            return {row[0]: row[1] for row in await cur.fetchall()}

    # --- reads -----------------------------------------------------------------------

    async def query_logs(self, query: LogQuery) -> list[dict[str, Any]]:
        """Return logs matching query, newest first (by ts, then id)."""
        clauses = []
        params: dict[str, Any] = {"limit": query.limit}
        if query.service is not None:
            clauses.append("service = %(service)s")
            params["service"] = query.service
        if query.levels:
            clauses.append("level = ANY(%(levels)s)")
            params["levels"] = list(query.levels)
        if query.text:
            clauses.append("message ILIKE %(pattern)s ESCAPE '\\'")
            params["pattern"] = like_pattern(query.text)
        if query.since is not None:
            clauses.append("ts >= %(since)s")
            params["since"] = query.since
        if query.until is not None:
            clauses.append("ts <= %(until)s")
            params["until"] = query.until
        if query.cursor is not None:
            clauses.append("(ts, id) < (%(cursor_ts)s, %(cursor_id)s)")
            params["cursor_ts"], params["cursor_id"] = query.cursor
        where = " AND ".join(clauses) or "TRUE"
        sql = (
            f"SELECT id, {COLUMNS} FROM logs WHERE {where}"  # clauses are fixed strings
            " ORDER BY ts DESC, id DESC LIMIT %(limit)s"
        )
        try:
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)", (f"{QUERY_TIMEOUT_MS}ms",)
                    )
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(sql, params)  # type: ignore[arg-type]
                    return await cur.fetchall()
        except psycopg.errors.QueryCanceled as exc:
            raise QueryTimeout(
                f"the query ran longer than {QUERY_TIMEOUT_MS} ms; narrow it with service,"
                " level or a from/to range"
            ) from exc

    async def count_logs(self, service: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM logs WHERE service = %s", (service,))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def clear_all(self) -> None:
        """Delete every log, ACK record and replay request."""
        async with self.pool.connection() as conn:
            await conn.execute("TRUNCATE logs, ack_state, replay_requests")
