"""The ``external`` board adapter: a board's own firmware service, in any language, owns the CP, contactors,
power module, isolation monitor and meter, and talks to edge over a local stream socket in JSON lines.

The board service listens (a Unix socket, the config's ``hardware.socket``); edge connects, and reconnects
after a loss (1 s, doubling to 5 s). Protocol version 1: every message is one JSON object on one line
(UTF-8, at most :data:`MAX_LINE` bytes with its newline), with a ``type``. Unknown fields are ignored,
so later versions can add fields.

Board -> edge::

    {"type": "hello", "protocol": 1, "board": "name",            first, and again when the limits change
     "dc": {"max_voltage": V, "max_current": A, "max_power": W,  null or absent: no DC output
            "min_voltage": V, "min_current": A,                   optional
            "max_discharge_current": A, "max_discharge_power": W},  optional, magnitudes (0: cannot export)
     "ac": {"max_current": A, "nominal_voltage": V, "phases": 1|3,  null or absent: no AC outlet
            "min_current": A, "max_discharge_current": A}}
    {"type": "cp", "state": "A".."F"}                            IEC 61851-1 CP state, on every change
    {"type": "measurement", "voltage": V, "current": A,         any subset; current < 0: export
     "energy_imported_wh": Wh, "energy_exported_wh": Wh}         meter registers since the board started
    {"type": "isolation", "state": "Invalid"|"Valid"|"Warning"|"Fault"}
    {"type": "contactors", "closed": bool}                       the auxiliary contact (what really is)
    {"type": "fault", "active": bool, "code": "...", "text": "..."}   while active, no power (CP taken as F)

edge -> board::

    {"type": "hello", "protocol": 1, "evse": "evse1"}
    {"type": "pwm", "duty": 5.0}                                 CP duty cycle in %
    {"type": "contactors", "closed": bool}                       close only in CP C/D: the board refuses else
    {"type": "dc_target", "voltage": V, "current": A}            current < 0: export
    {"type": "ac_limit", "current": A}                           per phase the car may draw (< 0: feed in)
    {"type": "isolation_check"}                                  start the cable check's measurement
    {"type": "error", "error": "...", "line": N}                 the board's line N was refused (and ignored)

Safety stays with the board: it must open its contactors and stop its power module by itself when the
connection to edge ends or stays silent (edge sends at least a ``pwm`` message every :data:`KEEPALIVE_S`),
and it must refuse to close them outside CP C/D. On edge's side, while no board is connected (or it has not
said hello) the adapter reports CP F, no limits (the sessions offer no energy transfer) and no voltage.

Commands are coalesced: the latest value of each kind is what the board gets, a contactor opening first; a
board reading slowly never makes edge queue without bound, and a board flooding edge with bad lines gets
one error per second at most, and is disconnected beyond :data:`MAX_BAD_LINES` of them in a row.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from edge.hardware import CP_STATES, AcLimits, DcLimits
from edge.logs import RateLimitedLog

log = logging.getLogger("edge.hardware.external")

PROTOCOL_VERSION = 1
MAX_LINE = 4096
KEEPALIVE_S = 1.0
MAX_BAD_LINES = 100
RECONNECT_FIRST_S = 1.0
ERROR_REPLY_INTERVAL_S = 1.0  # at most one error answer per second to a board sending bad lines
RECONNECT_MAX_S = 5.0
ISOLATION_STATES = ("Invalid", "Valid", "Warning", "Fault")


class BoardProtocolError(ValueError):
    """A line from the board that the protocol does not allow (it is answered with an error and ignored)."""


def _number(message: dict[str, Any], key: str, *, minimum: float | None = None) -> float | None:
    if key not in message or message[key] is None:
        return None
    value = message[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BoardProtocolError(f"{key}: expected a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise BoardProtocolError(f"{key}: must be at least {minimum:g}, got {value!r}")
    return float(value)


def _required(message: dict[str, Any], key: str, **kw: Any) -> float:
    value = _number(message, key, **kw)
    if value is None:
        raise BoardProtocolError(f"{key}: required")
    return value


def parse_dc_limits(raw: Any) -> DcLimits | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BoardProtocolError("dc: expected an object or null")
    optional = {k: v for k in ("min_voltage", "min_current", "max_discharge_current", "max_discharge_power")
                if (v := _number(raw, k, minimum=0)) is not None}
    return DcLimits(max_voltage=_required(raw, "max_voltage", minimum=0), max_current=_required(raw, "max_current",
                    minimum=0), max_power=_required(raw, "max_power", minimum=0), **optional)


def parse_ac_limits(raw: Any) -> AcLimits | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BoardProtocolError("ac: expected an object or null")
    optional: dict[str, Any] = {k: v for k in ("nominal_voltage", "min_current", "max_discharge_current")
                                if (v := _number(raw, k, minimum=0)) is not None}
    phases = raw.get("phases", 3)
    if phases not in (1, 3) or isinstance(phases, bool):
        raise BoardProtocolError(f"ac.phases: 1 or 3, got {phases!r}")
    return AcLimits(max_current=_required(raw, "max_current", minimum=0), phases=phases, **optional)


@dataclass
class BoardState:
    """What the board said last (sans-IO: :meth:`receive` takes one line)."""

    connected: bool = False
    hello: bool = False
    board: str = ""
    dc: DcLimits | None = None
    ac: AcLimits | None = None
    cp: str = "F"
    voltage: float = 0.0
    current: float = 0.0
    energy_imported_wh: float = 0.0
    energy_exported_wh: float = 0.0
    isolation: str = "Invalid"
    contactors_closed: bool = False
    fault: str | None = None  # the active fault's "code: text"

    def reset(self) -> None:
        """The connection ended: nothing the board said holds any more (its meter registers excepted)."""
        imported, exported = self.energy_imported_wh, self.energy_exported_wh
        self.__init__()  # type: ignore[misc]
        self.energy_imported_wh, self.energy_exported_wh = imported, exported

    def receive(self, line: bytes) -> str | None:
        """One line from the board; returns what changed worth a log line (None: nothing notable).
        :class:`BoardProtocolError` for a line the protocol does not allow (the state is unchanged)."""
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise BoardProtocolError(f"not JSON: {e}") from None
        if not isinstance(message, dict):
            raise BoardProtocolError("expected a JSON object")
        kind = message.get("type")
        if kind == "hello":
            if message.get("protocol") != PROTOCOL_VERSION:
                raise BoardProtocolError(f"protocol {message.get('protocol')!r} not spoken (edge speaks "
                                         f"{PROTOCOL_VERSION})")
            dc, ac = parse_dc_limits(message.get("dc")), parse_ac_limits(message.get("ac"))
            if dc is None and ac is None:
                raise BoardProtocolError("hello: a board without dc and ac cannot charge anything")
            board = message.get("board", "")
            self.hello, self.dc, self.ac, self.board = True, dc, ac, str(board)[:64]
            return f"board {self.board!r}: DC {dc}, AC {ac}"
        if not self.hello:
            raise BoardProtocolError(f"{kind!r} before hello")
        if kind == "cp":
            state = message.get("state")
            if state not in CP_STATES:
                raise BoardProtocolError(f"cp.state: one of {', '.join(CP_STATES)}, got {state!r}")
            changed = state != self.cp
            self.cp = state
            return f"CP {state}" if changed else None
        if kind == "measurement":
            values = {k: _number(message, k) for k in ("voltage", "current")}
            registers = {k: _number(message, k, minimum=0) for k in ("energy_imported_wh", "energy_exported_wh")}
            for key, value in (values | registers).items():
                if value is not None:
                    setattr(self, key, value)
            return None
        if kind == "isolation":
            state = message.get("state")
            if state not in ISOLATION_STATES:
                raise BoardProtocolError(f"isolation.state: one of {', '.join(ISOLATION_STATES)}, got {state!r}")
            changed = state != self.isolation
            self.isolation = state
            return f"isolation {state}" if changed else None
        if kind == "contactors":
            closed = message.get("closed")
            if not isinstance(closed, bool):
                raise BoardProtocolError(f"contactors.closed: true or false, got {closed!r}")
            changed = closed != self.contactors_closed
            self.contactors_closed = closed
            return f"contactors {'closed' if closed else 'open'}" if changed else None
        if kind == "fault":
            active = message.get("active")
            if not isinstance(active, bool):
                raise BoardProtocolError(f"fault.active: true or false, got {active!r}")
            text = f"{str(message.get('code', ''))[:64]}: {str(message.get('text', ''))[:200]}"
            was = self.fault
            self.fault = text if active else None
            return (f"fault {text}" if active else f"fault cleared ({was})") if (was is None) == active else None
        raise BoardProtocolError(f"unknown message type {kind!r}")


class ExternalBoard:
    """:class:`edge.hardware.ChargerHardware` for a board service behind a local socket. :meth:`run` (a task
    in the EVSE's nursery) keeps the connection; the synchronous methods the sessions call read the last
    state and queue commands (coalesced per kind)."""

    def __init__(self, socket_path: Path, name: str = "evse") -> None:
        self.socket_path, self.name = Path(socket_path), name
        self.state = BoardState()
        self.pwm = 100.0
        self.commanded_closed = False
        self.target_v = self.target_i = 0.0
        self.ac_limit = 0.0
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake = trio.Event()
        self._complaints = RateLimitedLog(log, burst=1, interval=1.0)
        self.bad_lines = 0
        self._last_error_reply = -float("inf")
        self.connections = 0

    # ------------------------------------------------------------------ ChargerHardware
    def update(self, now: float) -> None:
        pass  # the board keeps its own state current; the connection task applies what it says

    def cp_state(self) -> str:
        s = self.state
        if not (s.connected and s.hello) or s.fault is not None:
            return "F"  # no board, or a board fault: nothing may be energised
        return s.cp

    def set_pwm(self, duty_percent: float) -> None:
        if not 0 <= duty_percent <= 100:
            raise ValueError(f"PWM duty cycle must be 0-100 %, got {duty_percent}")
        self.pwm = duty_percent
        self._queue("pwm", {"type": "pwm", "duty": duty_percent})

    def dc_limits(self) -> DcLimits | None:
        return self.state.dc if self.state.connected and self.state.hello else None

    def ac_limits(self) -> AcLimits | None:
        return self.state.ac if self.state.connected and self.state.hello else None

    def set_contactors(self, closed: bool) -> None:
        self.commanded_closed = closed
        self._queue("contactors", {"type": "contactors", "closed": closed})

    def set_dc_target(self, voltage: float, current: float) -> None:
        self.target_v, self.target_i = max(0.0, voltage), current
        self._queue("dc_target", {"type": "dc_target", "voltage": self.target_v, "current": current})

    def set_ac_current_limit(self, current: float) -> None:
        self.ac_limit = current
        self._queue("ac_limit", {"type": "ac_limit", "current": current})

    def present(self) -> tuple[float, float]:
        s = self.state
        return (s.voltage, s.current) if s.connected else (0.0, 0.0)

    def start_isolation_check(self) -> None:
        self._queue("isolation_check", {"type": "isolation_check"})

    def isolation(self) -> str:
        return self.state.isolation if self.state.connected else "Invalid"

    def energy_wh(self) -> float:
        return self.state.energy_imported_wh

    def energy_exported_wh(self) -> float:
        return self.state.energy_exported_wh

    @property
    def closed(self) -> bool:
        """The contactors as the board reports them (what really is, not what was asked)."""
        return self.state.connected and self.state.contactors_closed

    # ------------------------------------------------------------------ the connection
    def _queue(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "contactors" and not message["closed"]:
            self._pending = {"contactors": message, **{k: v for k, v in self._pending.items() if k != "contactors"}}
        else:
            self._pending[kind] = message
        self._wake.set()

    async def flush(self) -> None:
        """Until the commands queued so far were handed to the socket (the daemon's stop waits, bounded, so the
        board hears "contactors open" from edge, not only from the connection ending)."""
        while self._pending and self.state.connected:
            await trio.sleep(0.005)

    def _take_pending(self) -> list[dict[str, Any]]:
        out, self._pending = list(self._pending.values()), {}
        self._wake = trio.Event()
        return out

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until cancelled. ``started`` after the first attempt (the EVSE listens
        without a board: its cars are offered nothing until the board says hello)."""
        wait = RECONNECT_FIRST_S
        first = True
        while True:
            try:
                stream = await trio.open_unix_socket(str(self.socket_path))
            except OSError as e:
                if first:
                    log.warning("%s: board adapter at %s not reachable (%s): retrying", self.name, self.socket_path,
                                e.strerror or e)
            else:
                wait = RECONNECT_FIRST_S
                if first:
                    first = False
                    task_status.started()
                await self._serve(stream)
            if first:
                first = False
                task_status.started()
            await trio.sleep(wait)
            wait = min(wait * 2, RECONNECT_MAX_S)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self.state.reset()
        self.state.connected = True
        log.info("%s: board adapter connected at %s", self.name, self.socket_path)
        # what the board must know at once: who we are and the commands in force (nothing energised after a
        # reconnect unless a session asks again)
        self._pending = {"hello": {"type": "hello", "protocol": PROTOCOL_VERSION, "evse": self.name},
                         "contactors": {"type": "contactors", "closed": False},
                         "pwm": {"type": "pwm", "duty": self.pwm}}
        self.commanded_closed = False
        self._wake.set()
        reason = "closed by the board"
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream)
                reason = await self._reader(stream)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            reason = f"broken: {e}"
        finally:
            self.state.reset()
            log.warning("%s: board adapter connection ended (%s): CP F, no power until it is back", self.name,
                        reason)

    async def _writer(self, stream: trio.SocketStream) -> None:
        while True:
            with trio.move_on_after(KEEPALIVE_S):
                await self._wake.wait()
            messages = self._take_pending() or [{"type": "pwm", "duty": self.pwm}]  # keepalive
            data = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in messages)
            await stream.send_all(data)

    async def _reader(self, stream: trio.SocketStream) -> str:
        buffer = bytearray()
        number = 0
        bad_in_a_row = 0
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return "closed by the board"
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = bytes(buffer[:end]), buffer[end + 1:]
                number += 1
                if not line.strip():
                    continue
                try:
                    note = self.state.receive(line)
                except BoardProtocolError as e:
                    self.bad_lines += 1
                    bad_in_a_row += 1
                    self._complaints.warning("%s: board line %d refused: %s", self.name, number, e)
                    now = trio.current_time()
                    if now - self._last_error_reply >= ERROR_REPLY_INTERVAL_S:  # a flood is not echoed
                        self._last_error_reply = now
                        self._queue("error", {"type": "error", "error": str(e), "line": number})
                    if bad_in_a_row > MAX_BAD_LINES:
                        return f"{bad_in_a_row} bad lines in a row"
                    continue
                bad_in_a_row = 0
                if note is not None:
                    log.info("%s: %s", self.name, note)
            if len(buffer) >= MAX_LINE:
                return f"a line longer than {MAX_LINE} bytes"

