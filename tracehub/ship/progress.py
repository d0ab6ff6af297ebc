"""The progress display of ``tracehub ship``: bytes read and entries made durable."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rich.console import Console
from rich.filesize import decimal
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tracehub.ship.reader import Reader
from tracehub.ship.shipper import ProgressView, ShipStats


class RichProgress(ProgressView):
    """One bar per file for the bytes read, and one for the entries made durable."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._files: dict[str, TaskID] = {}
        self._durable = self._progress.add_task("durable", total=None, detail="")
        self._started = False

    def update(self, readers: Sequence[Reader], stats: ShipStats) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        for reader in readers:
            task = self._files.get(reader.key)
            if task is None:
                task = self._progress.add_task(
                    reader.label or "standard input", detail=""
                )
                self._files[reader.key] = task
            read = reader.read_bytes
            size = max(reader.size, read) if reader.size is not None else None
            detail = (
                f"{decimal(read)} of {decimal(size)}"
                if size is not None
                else decimal(read)
            )
            self._progress.update(task, completed=read, total=size, detail=detail)
        durable = max(0, stats.recorded - stats.buffered)
        detail = f"{durable} of {stats.recorded} entries, {stats.buffered} buffered"
        self._progress.update(
            self._durable,
            completed=durable,
            total=stats.recorded or None,
            detail=detail,
        )

    def close(self) -> None:
        if self._started:
            self._progress.stop()


def log_through(console: Console) -> None:
    """Send log records through console, so they print above a live progress display."""
    root = logging.getLogger()
    level = root.level
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(
        RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S")
    )
    root.setLevel(level)
