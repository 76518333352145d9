"""Logging that a peer cannot flood: a datagram or connection storm becomes a few lines, not megabytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import MappingProxyType

#: the fields of what the current task works for (EVSE, SESSION_ID, EVCCID, PROTOCOL): trio gives each task a
#: copy of its parent's context, so an EVSE's tasks carry EVSE and each connection's task its session's fields
_LOG_FIELDS: ContextVar[Mapping[str, str]] = ContextVar("edge_log_fields", default=MappingProxyType({}))


def log_fields() -> Mapping[str, str]:
    """The current task's log fields (journald gets them as fields, stderr lines as a prefix)."""
    return _LOG_FIELDS.get()


def bind_log_fields(**fields: object) -> None:
    """Add fields for the rest of the current task and the tasks it starts (None removes one)."""
    merged = dict(_LOG_FIELDS.get())
    for key, value in fields.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    _LOG_FIELDS.set(MappingProxyType(merged))


class LogFieldsFilter(logging.Filter):
    """Puts the task's fields on each record as ``%(fields)s`` ("[EVSE=2 PROTOCOL=iso2] ", or "")."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _LOG_FIELDS.get()
        record.fields = "[" + " ".join(f"{k}={v}" for k, v in fields.items()) + "] " if fields else ""
        return True


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
