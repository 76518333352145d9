"""systemd integration without libsystemd: the sd_notify datagram protocol (READY=1, STATUS=, WATCHDOG=1,
STOPPING=1) and journald's native protocol (one datagram per record, with the session's fields).

Both are a few lines over a Unix datagram socket (sd_notify(3), systemd.journal-fields(7) and the journal's
native protocol); outside systemd (no NOTIFY_SOCKET, no JOURNAL_STREAM) they do nothing and logging goes
to stderr as usual. A full or absent socket never stops the daemon: a notification that cannot be sent is
dropped (systemd's own client library does the same).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Mapping

import trio

from edge.logs import log_fields

log = logging.getLogger("edge.systemd")

JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: a journal datagram's message is cut here (the socket takes ~200 KiB; a log line this long is a bug anyway)
MAX_JOURNAL_MESSAGE = 64 * 1024


def _unix_address(address: str) -> str | bytes:
    """NOTIFY_SOCKET: a path, or "@name" for Linux's abstract namespace."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address


class SystemdNotifier:
    """sd_notify(3) over the socket systemd names in NOTIFY_SOCKET (None: not under systemd, nothing sent)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self.sent: list[str] = []  # the last few datagrams, for `edge status` and tests
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; False when it could not be sent (logged once per kind)."""
        if self._sock is None or self.address is None:
            return False
        text = "\n".join(assignments)
        try:
            self._sock.sendto(text.encode(), _unix_address(self.address))
        except OSError as e:
            log.debug("sd_notify %r not sent: %s", text[:40], e)
            return False
        self.sent = [*self.sent[-19:], text]
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd expects (WatchdogSec=, via WATCHDOG_USEC) when it is meant for this process
    (WATCHDOG_PID absent or ours); None when there is no watchdog."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


async def feed_watchdog(notifier: SystemdNotifier, period: float, alive: Callable[[], bool]) -> None:
    """WATCHDOG=1 every half period while ``alive()`` (the daemon's main loop turned recently): a daemon whose
    loop is stuck stops feeding and systemd restarts it after ``period``."""
    while True:
        if alive():
            notifier.watchdog()
        else:
            log.warning("main loop stalled: the systemd watchdog is not fed")
        await trio.sleep(period / 2)


# ------------------------------------------------------------------------------------------------ journald


def journal_stream_connected(environ: Mapping[str, str] | None = None, stream: object = None) -> bool:
    """stderr is systemd's journal stream (JOURNAL_STREAM names its device and inode): log natively instead."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        fileno = (stream or sys.stderr).fileno()  # type: ignore[attr-defined]
        st = os.fstat(fileno)
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def journal_fields(record: logging.LogRecord, message: str, identifier: str = "edge") -> dict[str, str]:
    """A log record as journal fields: MESSAGE, PRIORITY and the code location, plus the fields of the session
    it belongs to (EVSE, SESSION_ID, EVCCID, PROTOCOL; see :func:`edge.logs.log_fields`)."""
    fields = {"MESSAGE": message[:MAX_JOURNAL_MESSAGE], "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
              "SYSLOG_IDENTIFIER": identifier, "LOGGER": record.name, "CODE_FILE": record.pathname,
              "CODE_LINE": str(record.lineno), "CODE_FUNC": record.funcName}
    for key, value in log_fields().items():
        fields[key] = str(value)
    return fields


def encode_journal_fields(fields: Mapping[str, str]) -> bytes:
    """The journal's native datagram: ``KEY=value`` lines; a value with a newline as KEY, newline, 64-bit
    little-endian length, the bytes, newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Log records straight to journald, each with its session's fields (``journalctl EVSE=2``)."""

    def __init__(self, address: str = JOURNAL_SOCKET, identifier: str = "edge") -> None:
        super().__init__()
        self.address, self.identifier = address, identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            datagram = encode_journal_fields(journal_fields(record, self.format(record), self.identifier))
            self._sock.sendto(datagram, self.address)
        except BlockingIOError:
            pass  # journald is behind: a dropped line, never a stalled charger
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
