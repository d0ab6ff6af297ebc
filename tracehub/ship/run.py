"""Assembling one ship run: the buffer, the readers, the HTTP client and the loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tracehub.ship.buffer import ShipBuffer, buffer_path
from tracehub.ship.lines import DEFAULT_MAX_LINE_BYTES
from tracehub.ship.multiline import Joiner
from tracehub.ship.parsers import LineParser
from tracehub.ship.reader import FileReader, Reader, StdinReader, source_key
from tracehub.ship.sender import Sender
from tracehub.ship.shipper import ProgressView, ShipOptions, Shipper, ShipStats
from tracehub.ship.timestamps import TimeRules

log = logging.getLogger(__name__)

STDIN = "-"


@dataclass(frozen=True, slots=True)
class ParseOptions:
    """Line parsing settings: the format, the timestamp rules, the line size limit."""

    log_format: str = "auto"
    rules: TimeRules = field(default_factory=TimeRules)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


def open_readers(
    paths: Sequence[str], follow: bool, parse: ParseOptions, buffer: ShipBuffer
) -> list[Reader]:
    """Open a reader per path, each resuming at the position saved in the buffer.

    Raises OSError for a file that cannot be opened (without --follow, also
    FileNotFoundError for a missing one); readers opened before it are closed.
    """

    def new_joiner() -> Joiner:
        return Joiner(LineParser(parse.log_format, parse.rules), parse.max_line_bytes)

    readers: list[Reader] = []
    try:
        for path in paths:
            if path == STDIN:
                readers.append(StdinReader(new_joiner, parse.max_line_bytes))
                continue
            saved = buffer.position(source_key(path))
            readers.append(
                FileReader(
                    path,
                    follow=follow,
                    saved=saved,
                    new_joiner=new_joiner,
                    max_line_bytes=parse.max_line_bytes,
                )
            )
    except OSError:
        close_all(readers)
        raise
    return readers


def close_all(readers: Sequence[Reader]) -> None:
    for reader in readers:
        reader.close()


async def ship_paths(
    paths: Sequence[str],
    options: ShipOptions,
    parse: ParseOptions,
    url: str,
    home: Path,
    progress: ProgressView | None = None,
    on_start: Callable[[Shipper], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ShipStats:
    """Ship paths (``-`` is standard input) to the server at url until all is durable.

    ``on_start`` receives the Shipper before it runs, so a caller can stop it.
    ``headers`` go with every request, such as the Authorization bearer token.
    """
    buffer = ShipBuffer(buffer_path(home, options.service))
    try:
        readers = open_readers(paths, options.follow, parse, buffer)
        try:
            async with httpx.AsyncClient(headers=headers) as client:
                sender = Sender(client, url, options.service, buffer.epoch)
                shipper = Shipper(options, readers, buffer, sender, progress)
                if on_start is not None:
                    on_start(shipper)
                return await shipper.run()
        finally:
            close_all(readers)
    finally:
        buffer.close()
