"""Reading log files and standard input into LogEntries, following files like tail -F.

Readers are polled: each ``poll`` reads what is there now, at most
``MAX_CHUNKS_PER_POLL`` chunks, and does not wait for more data. A follower
notices that its path now names another file (rotation by rename) or that its
file shrank (truncation) when it reaches the end of what it has. It finishes the
old file before it opens the new one, and reads a truncated file again from its
start.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from tracehub.ship.buffer import Position
from tracehub.ship.lines import LineSplitter
from tracehub.ship.multiline import Joiner, LogEntry

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_CHUNKS_PER_POLL = 64
# An open multi-line entry is complete once no line came for this long (seconds).
MULTILINE_FLUSH_S = 1.0
STDIN_QUEUE_CHUNKS = 64

JoinerFactory = Callable[[], Joiner]


@dataclass(slots=True)
class ReadBatch:
    """Entries read in one poll, all from one file, and the read position after them."""

    entries: list[LogEntry]
    position: Position | None  # None for standard input and for an empty batch


class Reader(Protocol):
    """A source of LogEntries: a file or standard input."""

    key: str  # the buffer's key for the source: an absolute path, or "-"
    label: str | None  # the file name sent with each entry; None for standard input
    done: bool
    size: int | None

    @property
    def read_bytes(self) -> int: ...

    def poll(self, max_entries: int) -> ReadBatch: ...

    def close(self) -> None: ...


class EntryPipeline:
    """Turns the bytes of one stream into lines, then into entries."""

    def __init__(
        self, joiner: Joiner, max_line_bytes: int, offset: int = 0, line_number: int = 0
    ) -> None:
        self.splitter = LineSplitter(max_line_bytes, offset, line_number)
        self.joiner = joiner
        self._last_line_at = time.monotonic()

    @property
    def position(self) -> int:
        return self.splitter.position

    def feed(self, data: bytes) -> list[LogEntry]:
        entries: list[LogEntry] = []
        for line in self.splitter.feed(data):
            entries += self.joiner.feed(line)
            self._last_line_at = time.monotonic()
        return entries

    def finish(self) -> list[LogEntry]:
        """Complete the last line and the open entry, at the end of the stream."""
        entries: list[LogEntry] = []
        for line in self.splitter.finish():
            entries += self.joiner.feed(line)
        return entries + self.joiner.flush()

    def flush_if_idle(self) -> list[LogEntry]:
        """Complete the open entry once no line came for MULTILINE_FLUSH_S."""
        if not self.joiner.has_open_entry:
            return []
        if time.monotonic() - self._last_line_at < MULTILINE_FLUSH_S:
            return []
        return self.joiner.flush()


def source_key(path: str) -> str:
    """Return the key under which the buffer saves the read position of a path."""
    return os.path.abspath(path)


def batch_of(entries: list[LogEntry], identity: tuple[int, int] | None) -> ReadBatch:
    """Return a ReadBatch whose position is just after the last entry."""
    if not entries or identity is None:
        return ReadBatch(entries, None)
    last = entries[-1]
    return ReadBatch(
        entries, Position(identity[0], identity[1], last.end, last.last_line_number)
    )


class FileReader:
    """Reads one file from a saved position; with follow, keeps reading like tail -F."""

    def __init__(
        self,
        path: str,
        *,
        follow: bool,
        saved: Position | None,
        new_joiner: JoinerFactory,
        max_line_bytes: int,
    ) -> None:
        self.label: str | None = path
        self.key = source_key(path)
        self.follow = follow
        self.done = False
        self.size: int | None = None
        self._new_joiner = new_joiner
        self._max_line_bytes = max_line_bytes
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._pipeline: EntryPipeline | None = None
        self._replaced = False
        self._waiting = False
        self._open(saved)

    @property
    def read_bytes(self) -> int:
        return self._pipeline.position if self._pipeline is not None else 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, saved: Position | None) -> None:
        """Open the path; without follow a missing file raises FileNotFoundError."""
        try:
            fd = os.open(self.key, os.O_RDONLY)
        except FileNotFoundError:
            if not self.follow:
                raise
            if not self._waiting:
                log.info("waiting for %s to be created", self.label)
                self._waiting = True
            return
        stat = os.fstat(fd)
        self._identity = (stat.st_dev, stat.st_ino)
        offset, line_number = self._resume_point(stat, saved)
        os.lseek(fd, offset, os.SEEK_SET)
        self._fd = fd
        self.size = stat.st_size
        self._waiting = False
        self._replaced = False
        self._pipeline = EntryPipeline(
            self._new_joiner(), self._max_line_bytes, offset, line_number
        )
        log.info("reading %s (inode %d) from byte %d", self.label, stat.st_ino, offset)

    def _resume_point(
        self, stat: os.stat_result, saved: Position | None
    ) -> tuple[int, int]:
        if saved is None:
            return 0, 0
        if (stat.st_dev, stat.st_ino) != (saved.device, saved.inode):
            # NOTE: the unread rest of the old file, rotated while ship was not
            # running, is not looked for under its new name.
            log.warning(
                "%s is another file than the one read before (inode %d, was %d);"
                " reading it from the start",
                self.label,
                stat.st_ino,
                saved.inode,
            )
            return 0, 0
        if stat.st_size < saved.offset:
            log.warning(
                "%s has %d bytes, fewer than the %d read before, so it was truncated;"
                " reading it from the start",
                self.label,
                stat.st_size,
                saved.offset,
            )
            return 0, 0
        return saved.offset, saved.line_number

    def poll(self, max_entries: int) -> ReadBatch:
        """Read what the file has now, stopping after about max_entries entries."""
        if self._fd is None:
            self._open(None)
            if self._fd is None:
                return ReadBatch([], None)
        assert self._pipeline is not None
        identity = self._identity
        entries: list[LogEntry] = []
        for _ in range(MAX_CHUNKS_PER_POLL):
            if len(entries) >= max_entries:
                break
            chunk = os.read(self._fd, CHUNK_BYTES)
            if not chunk:
                entries += self._at_end(self._pipeline)
                break
            entries += self._pipeline.feed(chunk)
        return batch_of(entries, identity)

    def _at_end(self, pipeline: EntryPipeline) -> list[LogEntry]:
        """Handle the end of the data: finish, switch files, restart or flush."""
        assert self._fd is not None
        stat = os.fstat(self._fd)
        self.size = stat.st_size
        if not self.follow:
            self.done = True
            return pipeline.finish()
        if self._replaced:
            # The old file was read to its end once more after the new one appeared.
            # NOTE: lines a writer appends to the old file after this are not read.
            log.info(
                "%s was rotated; finished the old file at byte %d",
                self.label,
                pipeline.position,
            )
            self.close()
            return pipeline.finish()
        if stat.st_size < pipeline.position:
            log.info(
                "%s was truncated to %d bytes; reading it from the start",
                self.label,
                stat.st_size,
            )
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._pipeline = EntryPipeline(self._new_joiner(), self._max_line_bytes)
            return pipeline.finish()
        self._replaced = self._path_replaced()
        return pipeline.flush_if_idle()

    def _path_replaced(self) -> bool:
        """Tell whether the path now names another file than the one open."""
        try:
            stat = os.stat(self.key)
        except FileNotFoundError:
            return False  # renamed away and not created again yet: keep the old one
        return (stat.st_dev, stat.st_ino) != self._identity


class StdinReader:
    """Reads standard input through a thread, so polling does not wait for input."""

    def __init__(
        self, new_joiner: JoinerFactory, max_line_bytes: int, fd: int = 0
    ) -> None:
        self.key = "-"
        self.label: str | None = None
        self.done = False
        self.size: int | None = None
        self._fd = fd
        self._pipeline = EntryPipeline(new_joiner(), max_line_bytes)
        self._chunks: queue.Queue[bytes | None] = queue.Queue(
            maxsize=STDIN_QUEUE_CHUNKS
        )
        thread = threading.Thread(
            target=self._pump, name="tracehub-ship-stdin", daemon=True
        )
        thread.start()

    @property
    def read_bytes(self) -> int:
        return self._pipeline.position

    def close(self) -> None:
        """Leave the daemon thread; it ends with the process."""

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self._fd, CHUNK_BYTES)
            except OSError as exc:
                log.error(
                    "reading standard input failed: %s; treating it as ended", exc
                )
                data = b""
            self._chunks.put(data or None)
            if not data:
                return

    def poll(self, max_entries: int) -> ReadBatch:
        """Take what the thread has read so far, stopping after about max_entries."""
        entries: list[LogEntry] = []
        for _ in range(MAX_CHUNKS_PER_POLL):
            if len(entries) >= max_entries or self.done:
                break
            try:
                chunk = self._chunks.get_nowait()
            except queue.Empty:
                entries += self._pipeline.flush_if_idle()
                break
            if chunk is None:
                self.done = True
                entries += self._pipeline.finish()
            else:
                entries += self._pipeline.feed(chunk)
        return ReadBatch(entries, None)
