"""Splitting a byte stream into text lines, with no I/O.

A line ends at LF, CRLF or a bare CR. Bytes that are not valid UTF-8 become U+FFFD.
A line longer than ``max_bytes`` keeps its first ``max_bytes`` bytes (less a
multi-byte character cut in two), and the rest is counted in ``Line.cut_bytes``, so
memory stays bounded whatever the input.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

DEFAULT_MAX_LINE_BYTES = 64 * 1024
LINE_BREAK_RE = re.compile(rb"[\r\n]")
CR = 0x0D
LF = 0x0A
REPLACEMENT_UTF8 = "\ufffd".encode()


@dataclass(frozen=True, slots=True)
class Line:
    """One line of input and where it sits in its file."""

    text: str
    number: int  # 1-based line number in the file
    start: int  # byte offset of the line's first byte
    end: int  # byte offset just after its line break
    cut_bytes: int = 0  # bytes dropped beyond the line size limit
    invalid_utf8: bool = False


class LineSplitter:
    """Splits bytes fed in chunks into Lines, keeping an unfinished line for later."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_LINE_BYTES, offset: int = 0, number: int = 0
    ) -> None:
        if max_bytes < 4:
            raise ValueError(
                f"the line size limit must be at least 4 bytes, got {max_bytes}"
            )
        self.max_bytes = max_bytes
        self.position = offset  # byte offset of the next byte fed
        self._line_start = offset
        self._number = number
        self._pending = bytearray()
        self._cut = 0
        self._after_cr = False  # the last byte fed was a CR that may start a CRLF

    @property
    def has_partial_line(self) -> bool:
        """True when bytes of a line without its line break are held."""
        return bool(self._pending) or self._cut > 0 or self._after_cr

    def feed(self, data: bytes) -> list[Line]:
        """Consume a chunk and return the lines it completes."""
        lines: list[Line] = []
        index = 0
        if self._after_cr and data:
            self._after_cr = False
            index = 1 if data[0] == LF else 0
            lines.append(self._emit(self.position + index))
        while index < len(data):
            match = LINE_BREAK_RE.search(data, index)
            if match is None:
                self._append(data[index:])
                break
            brk = match.start()
            self._append(data[index:brk])
            if data[brk] == LF:
                index = brk + 1
            elif brk + 1 == len(data):  # a CR at the end: wait for a possible LF
                self._after_cr = True
                index = brk + 1
                break
            else:
                index = brk + 2 if data[brk + 1] == LF else brk + 1
            lines.append(self._emit(self.position + index))
        self.position += len(data)
        return lines

    def finish(self) -> list[Line]:
        """Return the last line when the input ended without a line break."""
        if not self.has_partial_line:
            return []
        self._after_cr = False
        return [self._emit(self.position)]

    def _append(self, piece: bytes) -> None:
        room = self.max_bytes - len(self._pending)
        if len(piece) > room:
            self._cut += len(piece) - room
            piece = piece[:room]
        self._pending += piece

    def _emit(self, end: int) -> Line:
        raw = bytes(self._pending)
        cut = self._cut
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # A cut line may end inside a multi-byte character, which final=False keeps
        # out of the text instead of turning it into U+FFFD.
        text = decoder.decode(raw, final=cut == 0)
        if cut:
            cut += len(decoder.getstate()[0])
        invalid = text.count("\ufffd") != raw.count(REPLACEMENT_UTF8)
        self._number += 1
        line = Line(text, self._number, self._line_start, end, cut, invalid)
        self._line_start = end
        self._pending.clear()
        self._cut = 0
        return line
