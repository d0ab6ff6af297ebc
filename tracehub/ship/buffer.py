"""The durable local buffer of one shipped service, in SQLite.

One file per service, ``<TRACEHUB_HOME>/ship/<service>.sqlite``, contains the seq
counter and the epoch created with it, every entry not yet durable on the server,
and how far each file has been read. Entries and the read offset they advance are
written in one transaction before they are sent, so a ``ship`` killed at any point
restarts without losing or duplicating an entry. The database runs in WAL mode with
``synchronous=FULL``, so a committed transaction also survives a power loss.
A lock file keeps a second ``ship`` of the same service out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Entries not yet durable on the server. body is the ingest entry as JSON,
-- without its seq; source and end_offset say where in which file it ended.
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    source TEXT NOT NULL,
    end_offset INTEGER NOT NULL
);
-- How far each file has been read: the byte offset and line number just after the
-- last recorded entry, in the file identified by device and inode.
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    line_number INTEGER NOT NULL
);
"""

PendingEntry = tuple[int, str]  # (seq, body JSON without the seq)


class ShipBufferError(Exception):
    """The buffer file cannot be opened or is in use by another process."""


@dataclass(frozen=True, slots=True)
class Position:
    """The read position in a file: the file's identity, byte offset and line count."""

    device: int
    inode: int
    offset: int
    line_number: int


@dataclass(frozen=True, slots=True)
class Recorded:
    """An entry to record: its body JSON (without seq) and the offset it ends at."""

    body: str
    end_offset: int


def buffer_path(home: Path, service: str) -> Path:
    """Return where the buffer of a service lives under the TraceHub home folder."""
    return home / "ship" / f"{service}.sqlite"


class ShipBuffer:
    """The seq counter, epoch, unacknowledged entries and read offsets of a service."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(path.with_suffix(".lock"))
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self.epoch = self._init_meta()
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise ShipBufferError(f"cannot open the ship buffer {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()
        self._lock_file.close()

    def _init_meta(self) -> str:
        """Return the epoch, creating it with the seq counter on first use."""
        with self._transaction():
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = 'epoch'"
            ).fetchone()
            if row is not None:
                return str(row[0])
            epoch = f"{int(time.time())}-{secrets.token_hex(6)}"
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("epoch", epoch), ("next_seq", "1")],
            )
        log.info("created ship buffer %s with epoch %s", self.path, epoch)
        return epoch

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- recording -------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = 'next_seq'"
        ).fetchone()
        return int(row[0])

    def record(
        self, source: str, entries: Sequence[Recorded], position: Position | None
    ) -> int:
        """Number entries and store them with the file's new position, atomically.

        Returns the first seq given. ``position`` is None for standard input, which
        cannot be read again from an offset.
        """
        with self._transaction():
            first = self.next_seq
            rows = [
                (first + i, e.body, source, e.end_offset) for i, e in enumerate(entries)
            ]
            self._db.executemany(
                "INSERT INTO entries (seq, body, source, end_offset)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )
            self._set_next_seq(first + len(entries))
            if position is not None:
                self._save_position(source, position)
        return first

    def _set_next_seq(self, value: int) -> None:
        self._db.execute(
            "UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(value),)
        )

    def _save_position(self, source: str, position: Position) -> None:
        self._db.execute(
            "INSERT INTO sources (path, device, inode, offset, line_number)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET"
            " device = excluded.device, inode = excluded.inode,"
            " offset = excluded.offset, line_number = excluded.line_number",
            (
                source,
                position.device,
                position.inode,
                position.offset,
                position.line_number,
            ),
        )

    def position(self, source: str) -> Position | None:
        """Return where reading of a file stopped in an earlier run, if it was read."""
        row = self._db.execute(
            "SELECT device, inode, offset, line_number FROM sources WHERE path = ?",
            (source,),
        ).fetchone()
        return Position(*row) if row is not None else None

    # --- sending ---------------------------------------------------------------------

    def entries_after(self, seq: int, limit: int) -> list[PendingEntry]:
        """Return up to limit buffered entries with a seq above seq, in seq order."""
        cursor = self._db.execute(
            "SELECT seq, body FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return cursor.fetchall()

    def entries_in(
        self, ranges: Sequence[tuple[int, int]], limit: int
    ) -> list[PendingEntry]:
        """Return up to limit buffered entries inside the inclusive seq ranges."""
        found: list[PendingEntry] = []
        for start, end in ranges:
            cursor = self._db.execute(
                "SELECT seq, body FROM entries WHERE seq BETWEEN ? AND ?"
                " ORDER BY seq LIMIT ?",
                (start, end, limit - len(found)),
            )
            found.extend(cursor.fetchall())
            if len(found) >= limit:
                break
        return found

    def drop_through(self, seq: int) -> int:
        """Delete every entry with a seq at or below seq; return how many went."""
        with self._transaction():
            return self._db.execute(
                "DELETE FROM entries WHERE seq <= ?", (seq,)
            ).rowcount

    def pending(self) -> tuple[int, int | None, int | None]:
        """Return the number of buffered entries and their lowest and highest seq."""
        row = self._db.execute(
            "SELECT count(*), min(seq), max(seq) FROM entries"
        ).fetchone()
        return row[0], row[1], row[2]

    def renumber(self, first_seq: int) -> int:
        """Shift every buffered seq and the counter so the lowest becomes first_seq.

        Used after the server rejects a new epoch whose seqs overlap the old one.
        Returns the shift applied (0 when the buffer is empty or already above).
        """
        with self._transaction():
            low = self._db.execute("SELECT min(seq) FROM entries").fetchone()[0]
            base = low if low is not None else self.next_seq
            shift = first_seq - base
            if shift <= 0:
                return 0
            # Two passes through negative seqs keep the primary key unique meanwhile.
            self._db.execute("UPDATE entries SET seq = -(seq + ?)", (shift,))
            self._db.execute("UPDATE entries SET seq = -seq")
            self._set_next_seq(self.next_seq + shift)
        return shift


def _lock(path: Path) -> IO[bytes]:
    """Take an exclusive lock on path for the life of the returned file."""
    handle = open(path, "a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ShipBufferError(
            f"another tracehub ship is using {path.with_suffix('.sqlite')} (process"
            f" {_holder(path)}); stop it or wait for it to finish"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"
