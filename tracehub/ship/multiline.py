"""Joining the lines of multi-line log entries, such as Java stack traces, with no I/O.

A line that no format recognises joins the open entry when it looks like the rest
of a multi-line message. Such a line starts with white space, "at ", "Caused by:",
"Suppressed:" or "...", or it is the header of a Java exception, such as
"java.io.IOException: message". Any other line starts an entry of its own. Blank
lines are skipped. An entry stops growing at ``max_bytes`` of message or
``max_lines`` lines, and the lines after that start a new entry marked
``continued`` that keeps the level, time and fields of the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from tracehub.ship.lines import Line
from tracehub.ship.parsers import LineParser, Parsed, parse_raw

CONTINUATION_RE = re.compile(
    r"\s|at\s|Caused by:|Suppressed:|\.\.\."
    r"|(?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*(?:Exception|Error|Throwable)(?::|$)"
)
DEFAULT_MAX_ENTRY_LINES = 1000


@dataclass(slots=True)
class LogEntry:
    """One log entry read from a file: its parsed first line and the lines joined."""

    parsed: Parsed
    line_number: int  # line number of the first line in its file
    end: int  # byte offset just after the entry's last line
    last_line_number: int = 0
    lines: list[str] = field(default_factory=list)
    size: int = 0  # bytes of the joined message in UTF-8
    cut_bytes: int = 0
    invalid_utf8: bool = False
    continued: bool = False

    @property
    def message(self) -> str:
        """The first line's message with the joined lines below it."""
        return "\n".join([self.parsed.message, *self.lines])

    def add_line_flags(self, line: Line) -> None:
        self.cut_bytes += line.cut_bytes
        self.invalid_utf8 = self.invalid_utf8 or line.invalid_utf8
        self.end = line.end
        self.last_line_number = line.number


class Joiner:
    """Turns Lines into LogEntries, keeping the open entry until a line ends it."""

    def __init__(
        self,
        parser: LineParser,
        max_bytes: int,
        max_lines: int = DEFAULT_MAX_ENTRY_LINES,
    ) -> None:
        self.parser = parser
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self._open: LogEntry | None = None

    @property
    def has_open_entry(self) -> bool:
        return self._open is not None

    def feed(self, line: Line) -> list[LogEntry]:
        """Consume one line and return the entries it completes (zero or one)."""
        if not line.text.strip():
            return []
        parsed = self.parser.parse(line.text)
        if (
            parsed is None
            and self._open is not None
            and CONTINUATION_RE.match(line.text)
        ):
            return self._continue(self._open, line)
        done = self.flush()
        self._open = self._start(parsed or parse_raw(line.text), line)
        return done

    def flush(self) -> list[LogEntry]:
        """Return the open entry, if any, as complete."""
        entry, self._open = self._open, None
        return [entry] if entry is not None else []

    def _start(self, parsed: Parsed, line: Line, continued: bool = False) -> LogEntry:
        entry = LogEntry(parsed, line.number, line.end, continued=continued)
        entry.size = len(parsed.message.encode("utf-8"))
        entry.add_line_flags(line)
        return entry

    def _continue(self, entry: LogEntry, line: Line) -> list[LogEntry]:
        size = len(line.text.encode("utf-8")) + 1
        if entry.size + size > self.max_bytes or len(entry.lines) + 1 >= self.max_lines:
            head = replace(
                entry.parsed, message=line.text, fields=dict(entry.parsed.fields)
            )
            self._open = self._start(head, line, continued=True)
            return [entry]
        entry.lines.append(line.text)
        entry.size += size
        entry.add_line_flags(line)
        return []
