"""Progress of long work: log lines always, and on a terminal one status line kept at the bottom.

``Progress(total, unit)`` takes log lines (``say``) and status updates (``update(done, best=...)``).
Log lines go to the stream as they are, so a redirected log stays clean; when the stream is a
terminal, a status line (done of total, elapsed, estimated time left, best so far) is redrawn under
them with a carriage return. ``quiet`` drops the log lines too (errors still reach the user through
the command's exit status and error line).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    s = int(round(max(seconds, 0.0)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class Progress:
    """Log lines plus, on a terminal, a live status line of ``done`` of ``total`` ``unit``."""

    total: int | None = None
    unit: str = "trials"
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    live: bool | None = None
    """Draw the status line (default: when the stream is a terminal)."""
    _start: float = 0.0
    _status: str = ""
    _first_done: int | None = None

    def __post_init__(self) -> None:
        self._start = time.perf_counter()
        if self.live is None:
            self.live = bool(getattr(self.stream, "isatty", lambda: False)()) and not self.quiet

    def say(self, line: str) -> None:
        """One log line (above the status line on a terminal)."""
        if self.quiet:
            return
        if self.live and self._status:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        if self.live and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def status_text(self, done: int, best: str = "", total: int | None = None) -> str:
        """``[12/30 trials] 3m10s elapsed, about 4m left; best ...`` (the time left from the pace so far)."""
        total = self.total if total is None else total
        elapsed = time.perf_counter() - self._start
        if self._first_done is None:
            self._first_done = done
        text = f"[{done}/{total} {self.unit}]" if total else f"[{done} {self.unit}]"
        text += f" {duration(elapsed)} elapsed"
        made = done - self._first_done
        if total and made > 0 and done < total:
            text += f", about {duration(elapsed / made * (total - done))} left"
        return text + (f"; best {best}" if best else "")

    def update(self, done: int, best: str = "", total: int | None = None) -> None:
        """Redraw the status line (a no-op off a terminal)."""
        text = self.status_text(done, best, total)
        if not self.live:
            return
        self._status = text
        self.stream.write("\r\033[K" + text)
        self.stream.flush()

    def close(self) -> None:
        """End the status line so the next output starts on a fresh line."""
        if self.live and self._status:
            self.stream.write("\n")
            self.stream.flush()
        self._status = ""
