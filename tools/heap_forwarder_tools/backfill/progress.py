"""What a running backfill shows: a progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

BAR_WIDTH = 24
TERMINAL_INTERVAL_SECONDS = 0.2
LOG_INTERVAL_SECONDS = 15.0


@dataclass(frozen=True)
class Status:
    files_done: int
    files_total: int
    lines: int
    enqueued: int
    backlog: int  # events, as last estimated from the queue's depth
    bytes_done: int  # of the files as stored
    bytes_total: int
    seconds_left: float | None  # None: not known yet


def duration(seconds: float) -> str:
    """``11 h 7 min``, ``4 min 10 s``, ``12 s``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _line(status: Status) -> str:
    left = "?" if status.seconds_left is None else duration(status.seconds_left)
    return (
        f"files {status.files_done}/{status.files_total}, lines {status.lines:,}, "
        f"enqueued {status.enqueued:,}, backlog ~{status.backlog:,}, about {left} left"
    )


class Progress:
    """``show(status)`` as often as wanted: drawn at most every ``interval`` seconds."""

    def __init__(self, out: TextIO, clock: Callable[[], float], *, terminal: bool | None = None) -> None:
        self.out = out
        self.clock = clock
        self.terminal = out.isatty() if terminal is None else terminal
        self.interval = TERMINAL_INTERVAL_SECONDS if self.terminal else LOG_INTERVAL_SECONDS
        self._last: float | None = None
        self._drawn = False

    def show(self, status: Status, *, force: bool = False) -> None:
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        if self.terminal:
            fraction = status.bytes_done / status.bytes_total if status.bytes_total else 1.0
            filled = min(BAR_WIDTH, int(fraction * BAR_WIDTH))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = f"[{bar}] {fraction:4.0%} {_line(status)}"
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.out.write("\r" + text[:width].ljust(width))
            self._drawn = True
        else:
            self.out.write(f"backfill: {_line(status)}\n")
        self.out.flush()

    def close(self) -> None:
        """End the bar's line, so that what is printed next starts on its own."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False
