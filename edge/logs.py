"""Logging that a peer cannot flood: a datagram or connection storm becomes a few lines, not megabytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds for one kind of event; the rest are counted and
    reported in the next line that gets through ("... and 6700 more like it since, not logged"). Sans-IO: ``clock`` is
    injectable (tests use fake time)."""

    def __init__(self, logger: logging.Logger, *, burst: int = 5, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.burst, self.interval, self.clock = logger, burst, interval, clock
        self._window_start = -float("inf")
        self._in_window = 0
        self.suppressed = 0  # not yet reported
        self.total_suppressed = 0

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log unless this window's burst is used up; True if the line was written."""
        now = self.clock()
        if now - self._window_start >= self.interval:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            self.total_suppressed += 1
            return False
        self._in_window += 1
        if self.suppressed:
            msg += f" (and {self.suppressed} more like it since, not logged)"
            self.suppressed = 0
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def info(self, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def flush(self, what: str) -> None:
        """Report what was suppressed and not yet reported (e.g. when the server stops)."""
        if self.suppressed:
            self.logger.info("%d more %s were not logged", self.suppressed, what)
            self.suppressed = 0
