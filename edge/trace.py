"""Session traces: everything one EVSE's charging session said and did, in one file, cheap to write and
decoded only when read (``edge trace list`` / ``edge trace show``).

File format (version 1)
-----------------------
A trace file is a CBOR sequence (RFC 8742): CBOR items one after the other, no framing, no index. Each
item is one record, a CBOR map with text keys. Two keys are in every record:

``k``  record kind (text, below)
``t``  seconds since the trace's start (float), on the recording process's monotonic clock

The first record is the header. It is the only one that carries clock readings: ``wall`` (epoch seconds,
UTC) and ``mono`` (the monotonic clock) at ``t = 0``. A record's wall time is ``wall + t``: the wall clock
is read once, so records keep their order and spacing when NTP steps the clock mid-session, and each record
is 9 bytes shorter. Fields that are absent were not known (None is never written). Kinds and their fields
(``dir`` is always the charger's view: ``rx`` received by the charger, ``tx`` sent by it):

===========  ==========================================================================================
header       ``v`` format version (1), ``evse`` EVSE id, ``iface`` interface, ``sw`` software version,
             ``session`` the file's session label, ``wall``, ``mono``; ``meta`` (map) anything else
v2gtp        ``dir``, ``pt`` V2GTP payload type (int), ``data`` the payload without the 8-byte V2GTP
             header (bytes), ``conn`` connection id, ``peer`` "[addr]:port"; on a response ``used`` (s the
             charger took to answer) and ``budget`` (s it may take)
sdp          ``req`` the request datagram, ``res`` the response datagram (with V2GTP headers), ``peer``
slac         ``dir``, ``frame`` the whole Ethernet frame (bytes)
tls          ``line`` one NSS key-log line, ``conn``: only recorded when enabled (they decrypt the session)
wire         ``dir``, ``peer``, ``data``: the bytes of a TLS connection as they crossed the socket (TLS records,
             handshake included), recorded with the key-log lines so a capture can be rebuilt and decrypted
ocpp         ``dir``, ``text`` the WebSocket text frame
hardware     ``values``: map of measurements and setpoints (present_voltage, present_current, power,
             target_voltage, target_current, soc, contactors, energy_wh, ...)
state        ``state`` a session/EVSE state it entered, ``note`` text (either or both)
connection   ``event`` "open" or "close", ``conn``, ``peer``, ``tls`` version, ``reason`` (close)
end          ``outcome`` how the session ended, ``energy_wh`` if known: the last record of a closed trace
===========  ==========================================================================================

Readers skip keys and kinds they do not know (later versions add, never change, fields).

Crash safety: each record is encoded whole and handed to the OS in one ``write()`` on a file opened for
appending, so a crash of the process leaves at most the last record partly written, and
:func:`read_trace` returns every complete record before it (and says where the file was cut). By default
every record is written at once (no buffering in the process; a process crash loses nothing); records are
never fsync'ed one by one: an fsync on an SD card or eMMC takes milliseconds, in the trio thread the
charge loops of every EVSE share. After a power loss the OS may have lost its last seconds of writes; call
:meth:`SessionTraceWriter.sync` from a worker thread for a checkpoint where that matters.

Writing never breaks charging: a write error (disk full, I/O error) is logged once and the trace stops
(records dropped); a file reaching ``max_file_bytes`` gets one note and stops growing. Memory use is
bounded: the writer keeps counters only, the buffered policy at most ``buffer_limit`` bytes.

Files and rotation: one file per session (:class:`EvseTrace` opens it at the session's first record and
closes it at its end), named ``<evse>-<YYYYmmddTHHMMSSZ>-<session>.cbor`` (start in UTC), so that names sort
by EVSE and start. :class:`TraceDirectory` deletes the oldest files beyond a total size and those older
than an age whenever a trace is opened, never a file being written.

Decoding happens when a trace is read: :class:`V2gDecoder` follows each connection's supportedAppProtocol
exchange (the response's SchemaID names the car's offer, whose namespace names the protocol) to decode
payload type 0x8001 as apphand, DIN SPEC 70121 or ISO 15118-2; 0x8002-0x8006 are the ISO 15118-20 schemas.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

import cbor2

if TYPE_CHECKING:
    from edge.hardware import ChargerHardware

log = logging.getLogger("edge.trace")

FORMAT_VERSION = 1
SUFFIX = ".cbor"
#: where the daemon keeps its traces (``edge trace list`` looks here unless told otherwise)
DEFAULT_TRACE_DIR = Path("/var/lib/edge/traces")
KINDS = ("header", "v2gtp", "sdp", "slac", "tls", "wire", "ocpp", "hardware", "state", "connection", "deviation",
         "end")
DIRECTIONS = frozenset({"rx", "tx"})

#: a file stops growing here unless told otherwise (a -20 charge loop writes ~2 MB an hour)
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
#: the buffered flush policy writes once this much has collected (and on close)
DEFAULT_BUFFER_LIMIT = 64 * 1024
#: a file written to this recently is never pruned: it may be another process's open trace
RECENT_WRITE_S = 60.0


def software_version() -> str:
    """This package's version, for the header."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge")
    except PackageNotFoundError:
        return "unknown"


# =========================================================================== writing


class SessionTraceWriter:
    """One trace file, opened for appending; the header is written at once. Every record method takes its
    values and ``now`` (the caller's monotonic clock, the one ``clock`` reads when ``now`` is omitted) and
    writes one record. Never raises once open: see the module docstring."""

    def __init__(self, path: Path, *, evse: str, interface: str = "", session: str = "",
                 now: float | None = None, wall: float | None = None, software: str | None = None,
                 meta: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.monotonic,
                 flush_every_record: bool = True, buffer_limit: int = DEFAULT_BUFFER_LIMIT,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.path = Path(path)
        self.evse = evse
        self.session = session
        self.clock = clock
        self.started_mono = clock() if now is None else now
        self.started_wall = time.time() if wall is None else wall
        self.flush_every_record = flush_every_record
        self.buffer_limit = buffer_limit
        self.max_file_bytes = max_file_bytes
        self.records = 0
        self.bytes_written = 0  # encoded so far (buffered ones included)
        self.v2g_messages = 0
        self.last_record_at = self.started_mono
        self.failed: str | None = None  # why records are being dropped
        self._encode_failed = False  # a record could not be encoded (logged once)
        self.closed = False
        self._next_conn = 1
        self._buffer = bytearray()
        # unbuffered: one os.write per record, so a crash never leaves a record split across two writes
        self._file: IO[bytes] | None = open(self.path, "ab", buffering=0)
        header = {"k": "header", "t": 0.0, "v": FORMAT_VERSION, "evse": evse, "iface": interface,
                  "sw": software or software_version(), "session": session, "wall": self.started_wall,
                  "mono": self.started_mono}
        if meta:
            header["meta"] = dict(meta)
        self._append(cbor2.dumps(header))

    # ------------------------------------------------------------------ the record kinds
    def v2gtp(self, direction: str, payload_type: int, payload: bytes, *, now: float | None = None,
              conn: int | None = None, peer: str | None = None, used: float | None = None,
              budget: float | None = None) -> None:
        """One V2GTP message (``payload`` without its header): ``rx`` a request, ``tx`` a response with the
        time the charger took (``used``) and its budget when known."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}: rx or tx")
        record: dict[str, Any] = {"k": "v2gtp", "t": self._t(now), "dir": direction, "pt": payload_type,
                                  "data": bytes(payload)}
        if conn is not None:
            record["conn"] = conn
        if peer is not None:
            record["peer"] = peer
        if used is not None:
            record["used"] = used
        if budget is not None:
            record["budget"] = budget
        self.v2g_messages += 1
        self._write(record)

    def sdp(self, request: bytes, response: bytes | None, *, now: float | None = None,
            peer: str | None = None) -> None:
        """One SDP exchange: the request datagram and our answer (None: we stayed silent)."""
        self._write(_without_none({"k": "sdp", "t": self._t(now), "req": bytes(request),
                                   "res": None if response is None else bytes(response), "peer": peer}))

    def slac(self, direction: str, frame: bytes, *, now: float | None = None) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}: rx or tx")
        self._write({"k": "slac", "t": self._t(now), "dir": direction, "frame": bytes(frame)})

    def tls_key(self, line: str, *, now: float | None = None, conn: int | None = None) -> None:
        """One NSS key-log line (record only when TLS decryption of traces is wanted: it is a secret)."""
        self._write(_without_none({"k": "tls", "t": self._t(now), "line": line.rstrip("\n"), "conn": conn}))

    def wire(self, direction: str, data: bytes, *, peer: str, now: float | None = None) -> None:
        """Bytes of a TLS connection as they crossed the socket (with its key-log lines they decrypt)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}: rx or tx")
        self._write({"k": "wire", "t": self._t(now), "dir": direction, "peer": peer, "data": bytes(data)})

    def ocpp(self, direction: str, text: str, *, now: float | None = None) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}: rx or tx")
        self._write({"k": "ocpp", "t": self._t(now), "dir": direction, "text": text})

    def hardware(self, values: Mapping[str, Any], *, now: float | None = None) -> None:
        """Measurements and setpoints (numbers, booleans, short texts), e.g. from :func:`sample_hardware`."""
        self._write({"k": "hardware", "t": self._t(now), "values": dict(values)})

    def state(self, state: str | None = None, note: str | None = None, *, now: float | None = None) -> None:
        self._write(_without_none({"k": "state", "t": self._t(now), "state": state, "note": note}))

    def connection_opened(self, peer: str | None = None, *, now: float | None = None,
                          tls: str | None = None) -> int:
        """A TCP/TLS connection began: its id for the records of its messages."""
        conn = self._next_conn
        self._next_conn += 1
        self._write(_without_none({"k": "connection", "t": self._t(now), "event": "open", "conn": conn,
                                   "peer": peer, "tls": tls}))
        return conn

    def connection_closed(self, conn: int | None, reason: str, *, now: float | None = None) -> None:
        self._write(_without_none({"k": "connection", "t": self._t(now), "event": "close", "conn": conn,
                                   "reason": reason}))

    def record(self, kind: str, *, now: float | None = None, **fields: Any) -> None:
        """A record of any kind (a later kind, or one of the above written generically)."""
        self._write(_without_none({"k": kind, "t": self._t(now), **fields}))

    # ------------------------------------------------------------------ the file
    def close(self, outcome: str = "closed", *, now: float | None = None, energy_wh: float | None = None) -> None:
        """Write the ``end`` record, flush and close (again: nothing)."""
        if self.closed:
            return
        self._write(_without_none({"k": "end", "t": self._t(now), "outcome": outcome, "energy_wh": energy_wh}),
                    final=True)
        self.flush()
        self.closed = True
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self._fail(e)
            self._file = None

    def flush(self) -> None:
        """Hand buffered records to the OS (the default policy buffers nothing)."""
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            self._write_out(data)

    def sync(self) -> None:
        """Flush, then fsync: blocks for the device's time. In trio, call it from a worker thread, and only with
        the default policy (flush_every_record: no buffer a thread could race on)."""
        self.flush()
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            except OSError as e:
                self._fail(e)

    def __enter__(self) -> SessionTraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("closed" if exc[0] is None else "failed")

    # ------------------------------------------------------------------ internals
    def _t(self, now: float | None) -> float:
        now = self.clock() if now is None else now
        self.last_record_at = now
        return now - self.started_mono

    def _write(self, record: dict[str, Any], final: bool = False) -> None:
        if self.closed or self._file is None or (self.failed is not None and not final):
            return
        try:
            data = cbor2.dumps(record)
        except (cbor2.CBOREncodeError, ValueError, TypeError) as e:  # a value CBOR cannot hold: a bug of the caller's
            if not self._encode_failed:  # ... which must not stop the charge loop, nor flood the log
                self._encode_failed = True
                log.warning("%s: a %s record cannot be encoded (%s); dropped", self.path, record.get("k"), e)
            return
        if self.bytes_written + len(data) > self.max_file_bytes and not final:
            # one note says why the rest is missing (the file may overshoot the limit by its size)
            self.failed = f"trace size limit of {self.max_file_bytes} bytes reached"
            log.warning("%s: %s; later records dropped", self.path, self.failed)
            self._append(cbor2.dumps({"k": "state", "t": record["t"], "note": self.failed}))
            return
        self._append(data)

    def _append(self, data: bytes) -> None:
        self.records += 1
        self.bytes_written += len(data)
        if self.flush_every_record:
            self._write_out(data)
        else:
            self._buffer += data
            if len(self._buffer) >= self.buffer_limit:
                self.flush()

    def _write_out(self, data: bytes) -> None:
        if self._file is None:
            return
        view = memoryview(data)
        try:
            while view:  # a regular file takes it all in one write unless the disk is full
                written = self._file.write(view)
                if not written:
                    raise OSError("write wrote nothing")
                view = view[written:]
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self.failed = f"write failed: {e}"
        log.warning("%s: %s; the trace stops here", self.path, self.failed)
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass


def _without_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+]+")
_NAME = re.compile(r"^(?P<evse>.+)-(?P<start>\d{8}T\d{6}Z)-(?P<session>[A-Za-z0-9_]+)\.cbor$")


def trace_file_name(evse: str, wall: float, session: str) -> str:
    """``evse1-20261204T101500Z-3fa2c1.cbor``: EVSE id (characters a file name cannot hold become _),
    start in UTC, session label."""
    start = datetime.fromtimestamp(wall, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{_UNSAFE.sub('_', evse) or 'evse'}-{start}-{_UNSAFE.sub('_', session) or 'session'}{SUFFIX}"


def parse_trace_name(name: str) -> tuple[str, float, str] | None:
    """(EVSE id as in the name, start as epoch seconds, session label), or None for another file's name."""
    m = _NAME.match(name)
    if m is None:
        return None
    try:
        start = datetime.strptime(m["start"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return m["evse"], start, m["session"]


@dataclass
class TraceDirectory:
    """Where one daemon's traces live, and its limits: beyond ``max_bytes_total`` the oldest traces go,
    and any older (last written) than ``max_age_days``; checked whenever a trace is opened. A trace being
    written (opened here, or written by anyone in the last minute) is never deleted. A file stops growing
    at ``max_file_bytes`` (default: a quarter of the total, at most 64 MiB)."""

    path: Path
    max_bytes_total: int = 512 * 1024 * 1024
    max_age_days: float = 30.0
    max_file_bytes: int | None = None
    flush_every_record: bool = True
    clock: Callable[[], float] = time.monotonic  # the time base of every ``now`` given to the writers
    wall_clock: Callable[[], float] = time.time
    _open: dict[Path, SessionTraceWriter] = field(default_factory=dict)

    def open(self, evse: str, interface: str = "", *, now: float | None = None, session: str | None = None,
             meta: Mapping[str, Any] | None = None) -> SessionTraceWriter:
        """A new trace file (OSError if the directory cannot take one); the old ones are pruned first."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.prune()
        wall = self.wall_clock()
        label = session or secrets.token_hex(3)
        path = self.path / trace_file_name(evse, wall, label)
        while path.exists():  # the same EVSE, second and label: take another label
            label = secrets.token_hex(3)
            path = self.path / trace_file_name(evse, wall, label)
        per_file = self.max_file_bytes or min(DEFAULT_MAX_FILE_BYTES, max(self.max_bytes_total // 4, 4096))
        writer = SessionTraceWriter(path, evse=evse, interface=interface, session=label, now=now, wall=wall,
                                    meta=meta, clock=self.clock, flush_every_record=self.flush_every_record,
                                    max_file_bytes=per_file)
        self._open[path] = writer
        return writer

    def open_writers(self) -> list[SessionTraceWriter]:
        """The traces opened here and not closed yet (e.g. for OCPP frames, which concern every EVSE)."""
        self._open = {p: w for p, w in self._open.items() if not w.closed}
        return list(self._open.values())

    def traces(self) -> list[Path]:
        """The trace files here, oldest start first (files whose name is not a trace's are not ours)."""
        return _trace_files(self.path)

    def prune(self) -> list[Path]:
        """Delete traces beyond the age and size limits, oldest first; returns what was deleted."""
        being_written = {w.path for w in self.open_writers()}
        now_wall = self.wall_clock()
        files = []
        for path in self.traces():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            files.append((path, st.st_size, st.st_mtime))
        total = sum(size for _, size, _ in files)
        deleted = []
        for path, size, mtime in files:  # oldest start first
            if path in being_written or now_wall - mtime < RECENT_WRITE_S:
                continue
            too_old = now_wall - mtime > self.max_age_days * 86400
            if not too_old and total <= self.max_bytes_total:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot delete the old trace %s: %s", path, e)
                continue
            total -= size
            deleted.append(path)
        if deleted:
            log.info("deleted %d old trace(s) in %s (limits: %d bytes, %g days)", len(deleted), self.path,
                     self.max_bytes_total, self.max_age_days)
        return deleted


def _trace_files(directory: Path) -> list[Path]:
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = parse_trace_name(entry.name)
        if parsed is not None and entry.is_file():
            found.append((parsed[1], entry.name, Path(entry.path)))
    return [path for _, _, path in sorted(found)]


@dataclass
class EvseTrace:
    """The trace of one EVSE's session going on: :meth:`writer` opens the file at the session's first
    record (SLAC, SDP or the first connection) and :meth:`end_session` closes it. A trace left silent for
    ``idle_rollover`` seconds (a car that did SDP and never came back) is closed when the next record comes,
    which then starts a new one. Opening failures are logged and give None (nothing is recorded)."""

    directory: TraceDirectory
    evse: str
    interface: str = ""
    keylog: bool = False  # record TLS key-log lines (they decrypt the session: only when asked)
    keylog_file: Path | None = None  # where the EVSE's TLS context writes them (the lines are copied from there)
    idle_rollover: float = 600.0
    current: SessionTraceWriter | None = None
    retry_after: float = 60.0  # after a failed open, the next attempt (a directory scan) waits this long
    _failed_at: float | None = None

    def writer(self, now: float | None = None) -> SessionTraceWriter | None:
        now = self.directory.clock() if now is None else now
        current = self.current
        if current is not None and not current.closed and now - current.last_record_at > self.idle_rollover:
            current.close("idle", now=current.last_record_at)
        if current is None or current.closed:
            self.current = None
            if self._failed_at is not None and now - self._failed_at < self.retry_after:
                return None  # not a directory scan per charge-loop message while the disk is full
            try:
                self.current = self.directory.open(self.evse, self.interface, now=now)
            except OSError as e:
                if self._failed_at is None:
                    log.warning("cannot open a trace for EVSE %s in %s: %s", self.evse, self.directory.path, e)
                self._failed_at = now
                return None
            self._failed_at = None
        return self.current

    def end_session(self, outcome: str, *, now: float | None = None, energy_wh: float | None = None) -> Path | None:
        """The session is over: its file gets the ``end`` record and is closed; returns its path."""
        current, self.current = self.current, None
        if current is None:
            return None
        current.close(outcome, now=now, energy_wh=energy_wh)
        return current.path


def sample_hardware(hardware: ChargerHardware, **extra: Any) -> dict[str, Any]:
    """A ``hardware`` record's values from a board (what every board can say) plus ``extra`` (setpoints,
    contactors, SoC: what the caller knows)."""
    voltage, current = hardware.present()
    values: dict[str, Any] = {"present_voltage": round(voltage, 3), "present_current": round(current, 3),
                              "power": round(voltage * current, 1), "cp": hardware.cp_state(),
                              "isolation": hardware.isolation(), "energy_wh": round(hardware.energy_wh(), 3),
                              "energy_exported_wh": round(hardware.energy_exported_wh(), 3)}
    values.update(extra)
    return values


class KeyLogTail:
    """The lines an ``ssl`` key-log file (``SSLContext.keylog_filename``) gained since the last call, for
    ``tls`` records right after a handshake. Reads at most ``limit`` bytes per call."""

    def __init__(self, path: Path, limit: int = 65536) -> None:
        self.path = Path(path)
        self.limit = limit
        try:
            self.offset = self.path.stat().st_size  # older sessions' keys are not this trace's
        except FileNotFoundError:
            self.offset = 0

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.limit)
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        return [line for line in complete.decode("ascii", "replace").splitlines() if line and line[0] != "#"]


# =========================================================================== reading


@dataclass(frozen=True, slots=True)
class TraceRecord:
    kind: str
    t: float  # seconds since the trace's start
    fields: dict[str, Any]  # every key but k and t
    offset: int  # where the record begins in the file
    wall: float | None = None  # epoch seconds (None without a header)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


class TraceReader(Iterator[TraceRecord]):
    """The records of one trace file, read as they are iterated. Never raises for the file's content:
    when the file ends inside a record (a crash, or a trace still being written) iteration stops and
    ``truncated_at`` is that record's offset; a record that cannot be decoded before the end (corruption)
    stops it too, with ``error`` naming its offset (and a warning logged): nothing after it can be framed.
    OSError if the file cannot be opened."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] | None = None
        self.truncated_at: int | None = None
        self.error: str | None = None
        self.size = self.path.stat().st_size
        self._records = self._read()

    def __iter__(self) -> TraceReader:
        return self

    def __next__(self) -> TraceRecord:
        return next(self._records)

    @property
    def complete(self) -> bool:
        return self.truncated_at is None and self.error is None

    def _read(self) -> Iterator[TraceRecord]:
        with open(self.path, "rb") as f:
            decoder = cbor2.CBORDecoder(f)
            wall: float | None = None
            while True:
                offset = f.tell()
                if not f.read(1):
                    return
                f.seek(offset)
                try:
                    item = decoder.decode()
                except cbor2.CBORDecodeEOF:
                    self.truncated_at = offset
                    return
                except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError,
                        MemoryError) as e:  # whatever a corrupt byte makes of the decoder
                    self._corrupt(offset, str(e) or type(e).__name__)
                    return
                kind, t = (item.get("k"), item.get("t")) if isinstance(item, dict) else (None, None)
                if not isinstance(kind, str) or not isinstance(t, int | float) or isinstance(t, bool):
                    self._corrupt(offset, f"not a trace record: {str(item)[:60]}")
                    return
                fields = {k: v for k, v in item.items() if k not in ("k", "t")}
                if kind == "header" and self.header is None:
                    self.header = fields
                    wall = fields.get("wall") if isinstance(fields.get("wall"), int | float) else None
                yield TraceRecord(kind, float(t), fields, offset, None if wall is None else wall + t)

    def _corrupt(self, offset: int, why: str) -> None:
        self.error = f"corrupt record at byte {offset} of {self.size}: {why}"
        log.warning("%s: %s; the records after it are not read", self.path, self.error)


def read_trace(path: Path | str) -> TraceReader:
    """Iterate over a trace's complete records; see :class:`TraceReader` for a cut or corrupt file."""
    return TraceReader(Path(path))


# =========================================================================== decoding V2G messages

#: V2GTP payload type -> EXI codec (0x8001 depends on the connection's supportedAppProtocol exchange)
ISO20_SCHEMAS = {0x8002: "iso20-common", 0x8003: "iso20-ac", 0x8004: "iso20-dc", 0x8005: "iso20-acdp",
                 0x8006: "iso20-wpt"}
SAP_PAYLOAD_TYPE = 0x8001
#: 0x8001 on a connection whose supportedAppProtocol exchange is not in the trace: tried in this order
GUESSES = ("apphand", "iso2", "din")


@dataclass(frozen=True, slots=True)
class DecodedV2g:
    protocol: str | None  # the EXI codec used ("apphand", "din", "iso2", "iso20-dc", ...)
    name: str | None  # "CurrentDemandReq", "supportedAppProtocolRes", ...
    message: Any = None  # what exi.decode returned (V2G_Message, a -20 root, an apphand root)
    body: Any = None  # the message element itself (DIN/-2: the Body's one child)
    error: str | None = None  # why it could not be decoded
    guessed: bool = False  # the protocol was guessed (no supportedAppProtocol exchange on this connection)
    deviations: tuple[Any, ...] = ()  # exi.Deviation: values outside the schema's facets that the car sent


def _message_name(protocol: str, message: Any) -> tuple[str | None, Any]:
    if protocol in ("din", "iso2"):
        body = getattr(message, "Body", None)
        for slot in getattr(body, "__slots__", ()):
            value = getattr(body, slot, None)
            if value is not None:
                return slot, value
        return None, None
    return type(message).__name__.removesuffix("Type"), message


def decode_v2g(record: TraceRecord, protocol: str | None = None) -> DecodedV2g:
    """Decode a ``v2gtp`` record's payload. 0x8001 is decoded as ``protocol`` (apphand, din or iso2; None:
    guessed, see :data:`GUESSES`), 0x8002-0x8006 as their -20 schema. Never raises."""
    payload_type, payload = record.get("pt"), record.get("data")
    if not isinstance(payload, bytes) or not isinstance(payload_type, int):
        return DecodedV2g(None, None, error="no payload or payload type in the record")
    if payload_type in ISO20_SCHEMAS:
        candidates: tuple[str, ...] = (ISO20_SCHEMAS[payload_type],)
    elif payload_type == SAP_PAYLOAD_TYPE:
        candidates = (protocol,) if protocol is not None else GUESSES
    else:
        return DecodedV2g(None, None, error=f"payload type {payload_type:#06x} is not EXI")
    import exi

    error = ""
    for strict in (True, False):  # a guess is only taken leniently when no protocol decodes strictly
        for candidate in candidates:
            found: list[Any] = []
            try:
                message = exi.decode(candidate, payload, strict=strict, deviations=found)
            except Exception as e:  # a codec bug on odd input must not stop the rest of the trace being shown
                error = error or f"{candidate}: {e}"
                continue
            name, body = _message_name(candidate, message)
            if name is None:
                error = f"{candidate}: an empty body"
                continue
            return DecodedV2g(candidate, name, message, body, guessed=protocol is None and len(candidates) > 1,
                              deviations=tuple(found))
    return DecodedV2g(candidates[0] if len(candidates) == 1 else None, None, error=error)


@dataclass
class V2gDecoder:
    """Decodes the ``v2gtp`` records of one trace in order, knowing each connection's protocol from its
    supportedAppProtocol exchange (the car's offers by SchemaID, then the response's SchemaID). A
    connection's first message is supportedAppProtocolReq; one whose exchange the trace does not have (it
    began mid-connection) has its 0x8001 messages decoded by guessing."""

    offers: dict[int | None, dict[int, str]] = field(default_factory=dict)  # conn -> SchemaID -> namespace
    protocols: dict[int | None, str] = field(default_factory=dict)  # conn -> protocol negotiated (our label)
    seen: set[int | None] = field(default_factory=set)  # connections with a message so far

    def connection_opened(self, conn: int | None) -> None:
        """A ``connection`` open record: what was known of an earlier connection of that id is not this one's."""
        self.offers.pop(conn, None)
        self.protocols.pop(conn, None)
        self.seen.discard(conn)

    def decode(self, record: TraceRecord) -> DecodedV2g:
        conn = record.get("conn")
        if record.get("pt") != SAP_PAYLOAD_TYPE:
            self.seen.add(conn)
            return decode_v2g(record)
        if conn in self.protocols:
            protocol = self.protocols[conn]
            decoded = decode_v2g(record, protocol if protocol in ("din", "iso2") else None)  # -20: not on 0x8001
        elif conn in self.offers or conn not in self.seen:  # the supportedAppProtocol exchange
            decoded = decode_v2g(record, "apphand")
            if decoded.error is not None and conn not in self.offers:
                decoded = decode_v2g(record, None)
        else:
            decoded = decode_v2g(record, None)
        self.seen.add(conn)
        if decoded.name == "supportedAppProtocolReq":
            self.offers[conn] = {o.SchemaID: o.ProtocolNamespace for o in decoded.message.AppProtocol or ()}
        elif decoded.name == "supportedAppProtocolRes":
            self._negotiated(conn, decoded.message)
        return decoded

    def _negotiated(self, conn: int | None, response: Any) -> None:
        if not str(response.ResponseCode).startswith("OK"):
            return
        name = _protocol_name(self.offers.get(conn, {}).get(response.SchemaID, ""))
        if name is not None:
            self.protocols[conn] = name

    def protocol_of(self, conn: int | None) -> str | None:
        """The protocol negotiated on ``conn`` (our label: din, iso2, iso20-dc, ...), once seen."""
        return self.protocols.get(conn)


def _protocol_name(namespace: str) -> str | None:
    """Our label of a supportedAppProtocol namespace (None for one we do not know)."""
    from edge.v2g.sap import KNOWN

    return next((p.name for p in KNOWN.values() if p.namespace == namespace), None)


#: the elements a timeline line shows, in this order (found at any depth of the message, lists aside)
KEY_FIELDS = ("ResponseCode", "EVSEProcessing", "EVProcessing", "ChargeProgress", "SelectedPaymentOption",
              "EVTargetVoltage", "EVTargetCurrent", "EVTargetEnergyRequest", "EVRESSSOC", "PresentSOC",
              "EVPresentVoltage", "EVSEPresentVoltage", "EVSEPresentCurrent", "EVSETargetActivePower",
              "EVSEPresentActivePower", "EVSENotification", "EVSEStatusCode")
_UNITS = (("Voltage", "V"), ("Current", "A"), ("Power", "W"))


def _value_text(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = {f.name for f in dataclasses.fields(value)}
        if {"Multiplier", "Unit", "Value"} <= names:  # DIN/-2 PhysicalValue
            number = (value.Value or 0) * 10.0 ** (value.Multiplier or 0)
            return f"{number:g} {value.Unit or ''}".rstrip()
        if names == {"Exponent", "Value"}:  # -20 RationalNumber: the unit is in the element's name
            number = (value.Value or 0) * 10.0 ** (value.Exponent or 0)
            unit = next((u for word, u in _UNITS if word in name), "")
            return f"{number:g} {unit}".rstrip()
    return str(value)


def key_fields(decoded: DecodedV2g) -> dict[str, str]:
    """The elements of :data:`KEY_FIELDS` the message has, as text ("EVSEPresentVoltage": "400 V"); the
    offers and the negotiated SchemaID for supportedAppProtocol."""
    body = decoded.body
    if body is None:
        return {}
    if decoded.name == "supportedAppProtocolReq":
        return {"offers": ",".join(f"{_protocol_name(o.ProtocolNamespace) or o.ProtocolNamespace}:{o.SchemaID}"
                                   for o in body.AppProtocol or ())}
    if decoded.name == "supportedAppProtocolRes":
        return _without_none({"ResponseCode": str(body.ResponseCode),
                              "SchemaID": None if body.SchemaID is None else str(body.SchemaID)})
    found: dict[str, Any] = {}
    _collect(body, found, 0)
    out = {}
    for name in KEY_FIELDS:
        if name in found:
            text = _value_text(name, found[name])
            if name == "EVSENotification" and text == "None":
                continue
            out[name] = text
    return out


def _collect(value: Any, found: dict[str, Any], depth: int) -> None:
    if depth > 5 or not dataclasses.is_dataclass(value) or isinstance(value, type):
        return
    for f in dataclasses.fields(value):
        if f.name in ("Header", "Signature"):
            continue
        item = getattr(value, f.name)
        if item is None or isinstance(item, list):
            continue
        if f.name in KEY_FIELDS and f.name not in found:
            found[f.name] = item
        _collect(item, found, depth + 1)


def _default_budget(protocol: str | None, response: str | None) -> float | None:
    """The standard budget of the request a response answers, when the trace did not record one."""
    if protocol is None or response is None or not response.endswith("Res") or protocol == "apphand":
        return None
    from edge.v2g import timers

    table = timers.DIN if protocol == "din" else timers.ISO2 if protocol == "iso2" else timers.ISO20
    return table.budget(response[:-3] + "Req")


# =========================================================================== other kinds, summaries


def describe_slac(frame: bytes) -> str:
    """The SLAC message's name (SlacParmReq, ...) or why the frame is not one."""
    from slac.messages import SlacFrameError, decode_frame

    try:
        return type(decode_frame(frame).message).__name__
    except SlacFrameError as e:
        return f"? ({e})"


def describe_sdp(request: bytes | None, response: bytes | None) -> str:
    from edge.v2g.sdp import SECURITY_TLS, SdpResponse, parse_request
    from edge.v2g.v2gtp import V2gtpError

    parts = []
    try:
        req = parse_request(request or b"")
        parts.append(f"request security={'tls' if req.security == SECURITY_TLS else 'none'}")
    except (V2gtpError, ValueError, IndexError) as e:
        parts.append(f"request ? ({e})")
    if response is None:
        parts.append("no response")
    else:
        try:
            res = SdpResponse.decode(response)
            import ipaddress

            parts.append(f"response [{ipaddress.IPv6Address(res.address)}]:{res.port} "
                         f"security={'tls' if res.security == SECURITY_TLS else 'none'}")
        except (V2gtpError, ValueError) as e:
            parts.append(f"response ? ({e})")
    return ", ".join(parts)


@dataclass
class OcppNames:
    """OCPP-J frames named: a CALLRESULT/CALLERROR by the action of the CALL it answers."""

    actions: dict[str, str] = field(default_factory=dict)

    def describe(self, text: str) -> tuple[str, str]:
        """(name, detail): ("CALL BootNotification", payload JSON), ("CALLRESULT BootNotification", ...)."""
        try:
            frame = json.loads(text)
        except ValueError as e:
            return "?", f"not JSON: {e}"
        if not isinstance(frame, list) or len(frame) < 3:
            return "?", "not an OCPP-J frame"
        kind, message_id = frame[0], str(frame[1])
        if kind == 2 and len(frame) >= 4:
            if len(self.actions) > 1000:  # calls never answered must not grow this without end
                self.actions.clear()
            self.actions[message_id] = str(frame[2])
            return f"CALL {frame[2]}", json.dumps(frame[3], separators=(",", ":"))
        action = self.actions.pop(message_id, "?")
        if kind == 3:
            return f"CALLRESULT {action}", json.dumps(frame[2], separators=(",", ":"))
        if kind == 4:
            return f"CALLERROR {action}", " ".join(str(x) for x in frame[2:4])
        return "?", f"message type {kind!r}"


@dataclass
class TraceSummary:
    path: Path
    evse: str | None = None
    start: float | None = None  # epoch seconds
    duration: float = 0.0
    protocol: str | None = None
    messages: int = 0
    energy_wh: float | None = None
    outcome: str = "-"
    records: int = 0
    truncated_at: int | None = None
    error: str | None = None
    slowest: tuple[str, float, float] | None = None  # the response that used most of its budget: name, used s, budget s


def summarize_trace(path: Path) -> TraceSummary:
    """What ``edge trace list`` shows of one file (it reads every record, decodes only supportedAppProtocol)."""
    reader = read_trace(path)
    summary = TraceSummary(Path(path))
    decoder = V2gDecoder()
    energy: list[float] = []
    last_close = None
    iso20_seen = False  # -20 messages without a supportedAppProtocol exchange in the trace
    worst: tuple[float, TraceRecord, str | None] | None = None
    for record in reader:
        summary.records += 1
        summary.duration = max(summary.duration, record.t)
        if record.kind == "v2gtp":
            summary.messages += 1
            used, budget = record.get("used"), record.get("budget")
            if (isinstance(used, float) and isinstance(budget, int | float) and budget > 0
                    and (worst is None or used / budget > worst[0])):
                worst = (used / budget, record, summary.protocol)
            if summary.protocol is None and record.get("pt") == SAP_PAYLOAD_TYPE:
                decoder.decode(record)  # only until the protocol is known
                summary.protocol = decoder.protocol_of(record.get("conn"))
            elif record.get("pt") in ISO20_SCHEMAS:
                iso20_seen = True
        elif record.kind == "hardware":
            value = record.get("values", {}).get("energy_wh") if isinstance(record.get("values"), dict) else None
            if isinstance(value, int | float):
                energy.append(float(value))
        elif record.kind == "connection" and record.get("event") == "close":
            last_close = record.get("reason")
        elif record.kind == "end":
            summary.outcome = str(record.get("outcome", "-"))
            if isinstance(record.get("energy_wh"), int | float):
                summary.energy_wh = float(record.get("energy_wh"))
    header = reader.header or {}
    summary.evse = header.get("evse")
    summary.start = header.get("wall")
    if summary.protocol is None and iso20_seen:
        summary.protocol = "iso20"
    if summary.energy_wh is None and len(energy) >= 2:
        summary.energy_wh = energy[-1] - energy[0]
    if summary.outcome == "-":
        summary.outcome = "cut (no end record)" if reader.truncated_at is not None else (last_close or "-")
    summary.truncated_at, summary.error = reader.truncated_at, reader.error
    if worst is not None:
        _, record, protocol = worst
        name = decode_v2g(record, protocol if protocol in ("din", "iso2") else None).name or "?"
        summary.slowest = (name, float(record.get("used")), float(record.get("budget")))
    return summary


# =========================================================================== the command line's output


def _utc(wall: float | None) -> str:
    if wall is None or not math.isfinite(wall):
        return "?"
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def list_lines(paths: Iterable[Path]) -> Iterator[str]:
    """One line per trace: start, EVSE, protocol, duration, V2G messages, energy, outcome, file."""
    for path in paths:
        try:
            s = summarize_trace(path)
        except OSError as e:
            yield f"{path}: {e.strerror or e}"
            continue
        energy = "-" if s.energy_wh is None else f"{s.energy_wh / 1000:.2f} kWh"
        outcome = s.outcome + (" (corrupt)" if s.error else "")
        yield (f"{_utc(s.start)}  {s.evse or '?':<16} {s.protocol or '-':<9} {s.duration:8.1f} s "
               f"{s.messages:6d} msgs {energy:>10}  {outcome:<28} {path.name}")


def _hex(data: bytes, full: bool, limit: int = 48) -> str:
    return data.hex() if full or len(data) <= limit else f"{data[:limit].hex()}... ({len(data)} bytes)"


@dataclass
class TimelineRenderer:
    """Turns a trace's records into timeline lines (``show``) or JSON objects (``show --json``)."""

    full: bool = False
    v2g: V2gDecoder = field(default_factory=V2gDecoder)
    ocpp: OcppNames = field(default_factory=OcppNames)

    def describe(self, record: TraceRecord) -> dict[str, Any]:
        """The record decoded: direction, protocol, name, fields (text), timing, error; xml with ``full``."""
        kind, out = record.kind, {"dir": record.get("dir", "")}
        if kind == "v2gtp":
            decoded = self.v2g.decode(record)
            out.update(protocol=decoded.protocol or f"{record.get('pt', 0):#06x}", name=decoded.name,
                       fields=key_fields(decoded))
            if decoded.guessed:
                out["guessed"] = True
            if decoded.deviations:  # decoded leniently: what the car sent outside the schema
                out["fields"]["deviations"] = "; ".join(str(d) for d in decoded.deviations)
            if decoded.error is not None:
                out["error"] = decoded.error
                out["fields"] = {"payload": _hex(record.get("data") or b"", self.full)}
            used = record.get("used")
            budget = record.get("budget")
            if used is not None and budget is None:
                budget = _default_budget(decoded.protocol, decoded.name)
            if used is not None:
                out["used"] = used
            if budget is not None and used is not None:
                out["budget"] = budget
            if self.full and decoded.message is not None:
                import exi

                try:
                    out["xml"] = exi.to_xml(decoded.message, decoded.protocol)
                except Exception as e:  # showing the rest of the trace matters more than this message's XML
                    out["xml_error"] = str(e)
        elif kind == "ocpp":
            name, detail = self.ocpp.describe(str(record.get("text", "")))
            out.update(protocol="ocpp", name=name, fields={"payload": detail})
            if self.full:
                out["text"] = record.get("text")
        elif kind == "slac":
            frame = record.get("frame") or b""
            out.update(protocol="slac", name=describe_slac(frame), fields={})
            if self.full:
                out["fields"] = {"frame": frame.hex()}
        elif kind == "sdp":
            out.update(protocol="sdp", name="SECCDiscovery",
                       fields={"": describe_sdp(record.get("req"), record.get("res"))})
        elif kind == "tls":
            line = str(record.get("line", ""))
            out.update(protocol="tls", name="key log", fields={"label": line.split(" ", 1)[0]})
            if self.full:
                out["fields"]["line"] = line
        elif kind == "hardware":
            values = record.get("values") if isinstance(record.get("values"), dict) else {}
            out.update(protocol="hardware", name="sample", fields={k: str(v) for k, v in values.items()})
        elif kind == "connection":
            if record.get("event") == "open":
                self.v2g.connection_opened(record.get("conn"))
            out.update(protocol="connection", name=record.get("event"),
                       fields={k: str(record.get(k)) for k in ("conn", "peer", "tls", "reason") if k in record.fields})
        elif kind == "header":
            out.update(protocol="trace", name="header",
                       fields={k: str(record.get(k)) for k in ("evse", "iface", "sw", "session") if k in record.fields})
            out["fields"]["start"] = _utc(record.get("wall"))
        else:  # state, end and kinds of later versions
            fields = {k: str(v) for k, v in record.fields.items() if k != "state" and not isinstance(v, bytes)}
            name = record.get("state") or {"state": "note", "end": "session end"}.get(kind, kind)
            out.update(protocol=kind, name=name, fields=fields)
        return out

    def line(self, record: TraceRecord) -> str:
        d = self.describe(record)
        fields = " ".join(f"{k}={v}" if k else str(v) for k, v in d.get("fields", {}).items())
        conn = f"#{record.get('conn')}" if record.kind == "v2gtp" and record.get("conn") is not None else ""
        text = f"{record.t:10.3f} {d['dir'] or '--':2} {d['protocol']:<12} {(d.get('name') or '?') + conn:<32} {fields}"
        if "used" in d:
            budget = f" / {d['budget'] * 1e3:.0f} ms" if "budget" in d else ""
            over = " OVER BUDGET" if "budget" in d and d["used"] > d["budget"] else ""
            text += f"  [{d['used'] * 1e3:.2f} ms{budget}{over}]"
        if d.get("guessed"):
            text += "  (protocol guessed)"
        if "error" in d:
            text += f"  undecodable: {d['error']}"
        text = text.rstrip()
        if "xml" in d:
            text += "\n" + _indent(d["xml"].rstrip())
        elif "xml_error" in d:
            text += f"\n{' ' * 14}(no XML: {d['xml_error']})"
        if "text" in d:
            text += "\n" + _indent(str(d["text"]))
        return text

    def json_object(self, record: TraceRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": record.offset, "t": record.t, "wall": record.wall, "kind": record.kind}
        out.update({k: _jsonable(v) for k, v in record.fields.items()})
        d = self.describe(record)
        out.update({k: d[k] for k in ("protocol", "name", "fields", "error", "guessed", "xml", "xml_error")
                    if k in d and record.kind not in ("header", "hardware", "state", "end", "connection")})
        if "budget" in d and "budget" not in out:
            out["budget"] = d["budget"]
        return out


def _indent(text: str) -> str:
    return "\n".join(" " * 14 + line for line in text.splitlines())


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def show(path: Path, out: TextIO, *, full: bool = False, as_json: bool = False) -> TraceReader:
    """Write the timeline (or JSON lines) of one trace to ``out``; the reader says whether it was complete."""
    reader = read_trace(path)
    renderer = TimelineRenderer(full=full)
    for record in reader:
        if as_json:
            out.write(json.dumps(renderer.json_object(record)) + "\n")
        else:
            out.write(renderer.line(record) + "\n")
    return reader
