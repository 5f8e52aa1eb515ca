"""Progress and the final summary of an import or export, on stderr.

On a terminal one line is redrawn (count, rate, current folder) at most ten times a
second; otherwise a plain line is printed every ``interval`` seconds, so that logs of
long runs show progress without a flood. Problems (a malformed message skipped) are
always printed, one line each, and counted in the summary. The clock is injected.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    verb: str = "imported"
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    interval: float = 5.0
    tty: bool | None = None
    quiet: bool = False
    done: int = 0
    skipped: int = 0
    duplicates: int = 0
    bytes: int = 0
    folders: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    folder: str = ""
    total: int | None = None

    def __post_init__(self) -> None:
        if self.tty is None:
            self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = self.clock()
        self._last = self.started

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _line(self) -> str:
        total = f"/{self.total}" if self.total else ""
        return (f"{self.done}{total} {'message' if self.done == 1 and not total else 'messages'} {self.verb}, "
                f"{self.skipped} skipped, "
                f"{self.rate():.0f}/s, {self.bytes / 1048576:.1f} MiB"
                + (f" [{self.folder}]" if self.folder else ""))

    def _tick(self) -> None:
        if self.quiet:
            return
        now = self.clock()
        if self.tty:
            if now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r\x1b[K" + self._line())
                self.stream.flush()
        elif now - self._last >= self.interval:
            self._last = now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def enter(self, folder: str) -> None:
        self.folder = folder
        self.folders.add(folder)

    def ok(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        self._tick()

    def duplicate(self) -> None:
        self.duplicates += 1
        self._tick()

    def problem(self, where: str, reason: str) -> None:
        self.skipped += 1
        message = f"skipped {where}: {reason}"
        self.problems.append(message)
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[K")
        self.stream.write(message + "\n")
        self.stream.flush()

    def summary(self) -> str:
        elapsed = self.clock() - self.started
        text = (f"{_count(self.done, 'message')} {self.verb} in {_count(len(self.folders), 'folder')} "
                f"({self.bytes / 1048576:.1f} MiB) in {elapsed:.1f}s, {self.rate():.0f} messages/s; "
                f"{self.skipped} skipped")
        if self.duplicates:
            text += f"; {self.duplicates} already present"
        return text

    def finish(self) -> str:
        text = self.summary()
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        return text


def _count(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
