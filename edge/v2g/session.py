"""The one session contract and loop every protocol shares (:class:`SessionCore`), and what DIN SPEC 70121
and ISO 15118-2 share besides (:class:`V2gSession`: the V2G_Message envelope and failure responses).

Every session core has the same shape: ``handle(payload_type, payload, now)`` -> the response's payload
type, the response (None: close without answering) and whether the session is over. The loop is written
once here: decode (each protocol's :meth:`SessionCore._decode`), the checks before a handler (session
over, SessionID, sequence: ``NEXT``), the power-lease refusal, encode, the response time against its
budget, power-off at the end. Each protocol gives its message modules, its sequence table ``NEXT`` (the
state a handler leads to is checked to be a key of it) and its handlers; :mod:`edge.v2g.dc` adds the DC
ones of DIN and -2, :mod:`edge.v2g.power` makes every power decision, :mod:`edge.controller` says what
the car may get. Randomness (SessionID, GenChallenge) comes from ``random``, injectable for tests."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import exi
from edge.chargingpoint import PowerLeaseRefused
from edge.controller import CarSession, ChargingController, PowerCommand
from edge.hardware import ChargerHardware
from edge.v2g.physical import to_physical
from edge.v2g.power import PowerRefused, PowerStage, SignConvention
from edge.v2g.timers import SessionTimers, note_response_time
from edge.v2g.v2gtp import PayloadType


class Paused(Protocol):
    """What every protocol's paused session keeps at least."""

    @property
    def session_id(self) -> bytes: ...
    @property
    def evcc_id(self) -> Any: ...


P = TypeVar("P", bound=Paused)

#: paused sessions one charging point keeps (a car resumes within minutes; more is a stranger's flood)
PAUSED_SESSIONS_KEPT = 8
#: a car's schema deviations: how many kinds are logged per session, how many wait for the trace at most
MAX_LOGGED_DEVIATIONS = 16
MAX_PENDING_DEVIATIONS = 64

log = logging.getLogger("edge.v2g")


def _short(value: object) -> object:
    """A deviating value as the log shows it (a long string or byte string cut)."""
    if isinstance(value, bytes | str) and len(value) > 40:
        return value[:40] + (b"..." if isinstance(value, bytes) else "...")
    return value


@dataclass
class PausedSessions(Generic[P]):
    """The paused sessions of one charging point; outlives the TCP connections. A car resumes with its
    SessionID and the same EVCCID; the oldest is forgotten beyond ``limit``."""

    sessions: dict[bytes, P] = field(default_factory=dict)
    limit: int = PAUSED_SESSIONS_KEPT

    def store(self, paused: P) -> None:
        self.sessions.pop(paused.session_id, None)
        self.sessions[paused.session_id] = paused
        while len(self.sessions) > self.limit:
            del self.sessions[next(iter(self.sessions))]

    def take(self, session_id: bytes | None, evcc_id: Any) -> P | None:
        found = self.sessions.get(session_id or b"")
        if found is None or found.evcc_id != evcc_id:
            return None
        del self.sessions[found.session_id]
        return found


@dataclass
class ReceiptSchedule:
    """When a Plug & Charge car is asked for a signed meter reading (-2 MeteringReceipt, V2G2-691; -20
    MeteringConfirmation): every ``interval`` seconds of charging, one request outstanding at a time."""

    interval: float | None = None
    due_at: float | None = None
    pending: bool = False

    def charging_started(self, now: float) -> None:
        if self.interval is not None and self.due_at is None:  # the first one interval into the charge
            self.due_at = now + self.interval

    def required(self, now: float, contract: bool) -> bool:
        """Ask now? (only for a contract-authorised session; marks the request outstanding)"""
        if not contract or self.due_at is None or self.pending or now < self.due_at:
            return False
        self.pending = True
        return True

    def received(self, now: float) -> None:
        assert self.interval is not None
        self.pending, self.due_at = False, now + self.interval


class AnswerLater(Exception):
    """A handler cannot answer yet (its backend is still deciding) in a message that has no Ongoing (-2
    CertificateInstallationReq): the connection waits and hands the same request in again; the handler
    bounds the wait (the car's own timeout is close)."""


#: what :meth:`SessionCore.handle` returns for "not yet" (never a valid EXI response)
ANSWER_LATER = b""


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded request as the loop sees it."""

    name: str  # the message's own name ("DC_ChargeLoopReq")
    step: str  # its name in the NEXT table (-20: "ChargeLoopReq" for AC_ and DC_ alike)
    session_id: bytes | None
    message: Any  # what the handler gets
    payload_type: int  # the response goes back with this payload type


@dataclass
class SessionCore:
    """The loop and checks every protocol shares (see the module docstring)."""

    NEXT: ClassVar[dict[str, set[str]]]
    DEFAULT_TIMERS: ClassVar[SessionTimers]
    #: states after which -20's short charge-loop sequence timeout applies
    LOOP_STATES: ClassVar[frozenset[str]] = frozenset()
    SESSION_ID_BYTES: ClassVar[int] = 8

    hardware: ChargerHardware
    timers: SessionTimers | None = None
    controller: ChargingController = field(default_factory=ChargingController)
    signs: SignConvention = field(default_factory=SignConvention)  # how this car writes discharge values (a quirk)
    random: Callable[[int], bytes] = os.urandom  # SessionID, GenChallenge
    state: str = "start"
    session_id: bytes = b""
    done: bool = False
    stats: dict[str, list[float]] = field(default_factory=dict)  # request -> response times used (s)
    notes: list[str] = field(default_factory=list)  # what went wrong that the response code alone does not say
    phase_started: dict[str, float] = field(default_factory=dict)  # first request of a timed phase
    _now: float = 0.0
    _told_revision: int = -1  # the controller revision the car was last told about
    _stop_told_at: float | None = None  # when the car was first told to stop on the charger's behalf
    raw_request: bytes = b""  # the EXI of the request being handled
    last_request: str = ""  # the name of the request answered last (its budget goes into the trace)
    # values the car sent outside the schema's facets that the EXI bits carried (exi.Deviation): the request's,
    # the ones not yet taken into the trace, and which (path, facet) were logged (once per session each)
    request_deviations: list[Any] = field(default_factory=list)
    pending_deviations: list[Any] = field(default_factory=list)
    _logged_deviations: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.timers is None:
            self.timers = self.DEFAULT_TIMERS
        if not self.session_id:
            self.session_id = self._new_session_id()
        self.power = PowerStage(self.hardware, self.signs, notes=self.notes)
        self._born_revision = self.controller.revision  # stop requests from before this session are not its own

    def _new_session_id(self) -> bytes:
        session_id = self.random(self.SESSION_ID_BYTES)
        while not any(session_id):  # all zeros means "no session" in a SessionSetupReq
            session_id = self.random(self.SESSION_ID_BYTES)
        return session_id

    # ------------------------------------------------------------------ the loop
    def handle(self, payload_type: int, payload: bytes, now: float) -> tuple[int, bytes | None, bool]:
        """One request in; the response's payload type, the response (None: close silently) and
        whether the session is over."""
        t0 = time.perf_counter()
        self.request_deviations = []
        request = self._decode(payload_type, payload)
        if request is None:  # nothing this session can answer in: close
            self.done = True
            self.power_off()
            return payload_type, None, True
        if self.request_deviations:
            self._note_deviations(request.name)
        self.hardware.update(now)
        self._now = now
        self.raw_request = payload  # a backend may need the request as the car sent it
        try:
            res, end = self._respond(request)
        except AnswerLater:
            return request.payload_type, ANSWER_LATER, False
        out = self._encode(request, res)
        self._finish(request.name, t0, end)
        return request.payload_type, out, end

    def _note_deviations(self, request: str) -> None:
        """A car's values outside the schema's facets are accepted where the bits carried them (the handlers
        answer what matters, e.g. a GenChallenge of the wrong length is simply not ours); each kind is logged
        once per session with the EVCCID, and every one goes into the trace."""
        car = self.car()
        for deviation in self.request_deviations:
            self.pending_deviations.append((request, deviation))
            key = (deviation.path, deviation.facet)
            if key in self._logged_deviations or len(self._logged_deviations) >= MAX_LOGGED_DEVIATIONS:
                continue
            self._logged_deviations.add(key)
            log.warning("car %s (%s) sent %s: %s outside the schema (%s, value %r); accepted",
                        car.evcc_id or "?", car.protocol, request, deviation.path, deviation.facet,
                        _short(deviation.value))
        del self.pending_deviations[:-MAX_PENDING_DEVIATIONS]  # nobody drains them without a trace: stay bounded

    def _respond(self, request: Request) -> tuple[Any, bool]:
        """The response and whether the session ends: refused when the session is over (stopped, paused or
        failed, whatever the state says), for a foreign SessionID or out of sequence; else the handler's,
        whose power commands may be refused by the charging point's lease (another session owns the
        power, or the watchdog took it back) or by the board: answered FAILED."""
        name = request.name
        if self.done:
            return self._failed(name, "FAILED_SequenceError"), True
        if name != "SessionSetupReq" and request.session_id != self.session_id:
            return self._failed(name, "FAILED_UnknownSession"), True
        if request.step not in self.NEXT[self.state]:
            return self._failed(name, "FAILED_SequenceError"), True
        unknown = next((d for d in self.request_deviations if d.facet.startswith("enumeration")), None)
        if unknown is not None:  # a value no handler can interpret (exi.UnknownEnumValue): refused, not guessed at
            self.notes.append(f"{name}: {unknown.path} carries enumeration index {unknown.value}, which the "
                              "schema does not define")
            return self._failed(name, "FAILED"), True
        try:
            res, end, state = getattr(self, "_" + request.step)(request.message)
        except (PowerLeaseRefused, PowerRefused) as e:
            self.notes.append(str(e))
            return self._failed(name, "FAILED"), True
        if not end and state not in self.NEXT:  # a handler bug, never a state the next request cannot leave
            raise AssertionError(f"{type(self).__name__}: {request.step} led to {state!r}, not a NEXT state")
        self.state = state
        return res, end

    def _finish(self, request: str, started: float, end: bool) -> None:
        used = time.perf_counter() - started
        self.last_request = request
        self.stats.setdefault(request, []).append(used)
        assert self.timers is not None
        note_response_time(self.timers, request, used)
        self.done = end
        if end:
            self.power_off()

    def car(self) -> CarSession:
        """This session as the controller's events name it."""
        evcc = getattr(self, "evcc_id", "")
        proto = getattr(self, "protocol", "") or getattr(self, "PROTO", "")
        return CarSession(self.session_id.hex().upper(), proto,
                          evcc.hex().upper() if isinstance(evcc, bytes) else str(evcc))

    def sequence_timeout(self) -> float:
        """How long the next request may take (V2G_SECC_Sequence_Timeout); -20: 0.5 s after a ChargeLoopRes."""
        assert self.timers is not None
        if self.state in self.LOOP_STATES and self.timers.charge_loop_sequence_timeout is not None:
            return self.timers.charge_loop_sequence_timeout
        return self.timers.sequence_timeout

    def power_off(self) -> None:
        """No power flows any more (session over, failed, or the car gone)."""
        self.power.off()

    def describe(self) -> str:
        """What was negotiated, for the session's log line ("" when there is nothing beyond the protocol)."""
        return ""

    # ------------------------------------------------------------------ what the controller says
    def command(self) -> PowerCommand:
        return self.controller.command(self._now)

    def controller_changed(self) -> bool:
        """The controller changed its mind since the car was last told (call :meth:`told` once it is)."""
        return self.controller.revision != self._told_revision

    def charger_stop(self) -> str | None:
        """Why the charger wants this session's charge to end (None: it does not)."""
        return self.controller.stop_for(self._born_revision)

    def told(self) -> None:
        self._told_revision = self.controller.revision

    def notification_delay(self, notification: str) -> int:
        """NotificationMaxDelay for ``notification`` (whole seconds; 0 when there is nothing to act on)."""
        assert self.timers is not None
        return 0 if notification in ("None", "MeteringConfirmation") else round(self.timers.notification_max_delay)

    def stop_ignored(self) -> bool:
        """The car was told to stop (on the charger's behalf) and is still in the loop after
        NotificationMaxDelay: the session is ended with FAILED (the current is already 0)."""
        assert self.timers is not None
        if self._stop_told_at is None:
            self._stop_told_at = self._now
            return False
        if self._now - self._stop_told_at > self.timers.notification_max_delay:
            self.notes.append(f"the car ignored the charger's stop for {self._now - self._stop_told_at:.1f} s: "
                              "session ended")
            return True
        return False

    def _overdue(self, phase: str, limit: float) -> bool:
        """True once ``phase`` has lasted longer than ``limit`` (measured from its first request)."""
        started = self.phase_started.setdefault(phase, self._now)
        return self._now - started > limit

    def _fail(self, request: str, code: str) -> tuple[Any, bool, str]:
        """A handler's answer that ends the session with ``code`` (the state stays where it was)."""
        return self._failed(request, code), True, self.state

    # ------------------------------------------------------------------ per protocol
    def _decode(self, payload_type: int, payload: bytes) -> Request | None:
        raise NotImplementedError

    def _encode(self, request: Request, response: Any) -> bytes:
        raise NotImplementedError

    def _failed(self, request: str, code: str) -> Any:
        """A response to ``request`` of the right type with every required element, carrying ``code``."""
        raise NotImplementedError


@dataclass
class V2gSession(SessionCore):
    """DIN SPEC 70121 and ISO 15118-2: one V2G_Message envelope, payload type 0x8001."""

    PROTO: ClassVar[str]
    B: ClassVar[ModuleType]  # the protocol's MsgBody model module
    T: ClassVar[ModuleType]  # its MsgDataTypes model module
    MESSAGE: ClassVar[type]
    BODY: ClassVar[type]
    HEADER: ClassVar[type]

    header: Any = None  # the request's header (its Signature, for PnC)
    response_signature: Any = None  # a handler's signature for the response header (PnC)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._requests = sorted({n for allowed in self.NEXT.values() for n in allowed})

    def _decode(self, payload_type: int, payload: bytes) -> Request | None:
        if payload_type != PayloadType.EXI:
            return None
        try:
            msg = exi.decode(self.PROTO, payload, deviations=self.request_deviations)
        except exi.DecodeError:
            return None
        body = msg.Body
        name = next((n for n in self._requests if getattr(body, n, None) is not None), None) if body else None
        if name is None:
            return None
        self.header, self.response_signature = msg.Header, None
        return Request(name, name, msg.Header.SessionID, getattr(body, name), PayloadType.EXI)

    def _encode(self, request: Request, response: Any) -> bytes:
        header = self.HEADER(self.session_id)
        if self.response_signature is not None:
            header.Signature = self.response_signature
        return exi.encode(self.PROTO, self.MESSAGE(header, self.BODY(**{request.name[:-3] + "Res": response})))

    # ------------------------------------------------------------------ helpers
    def pv(self, x: float, unit: str) -> Any:
        return to_physical(self.T.PhysicalValueType, x, unit)

    def _status(self, code: str = "EVSE_Ready", notification: str = "None") -> Any:
        return self.T.DC_EVSEStatusType(EVSEIsolationStatus=self.hardware.isolation(), EVSEStatusCode=code,
                                        NotificationMaxDelay=self.notification_delay(notification),
                                        EVSENotification=notification)

    def _evse_parameter(self) -> Any:
        lim, pv = self.power.dc_limits(), self.pv
        return self.T.DC_EVSEChargeParameterType(
            self._status(), pv(lim.max_current, "A"), pv(lim.max_power, "W"), pv(lim.max_voltage, "V"),
            pv(lim.min_current, "A"), pv(lim.min_voltage, "V"), None, pv(1, "A"), None)

    def _failed(self, request: str, code: str) -> Any:
        res_name = request[:-3] + "Res"
        res = getattr(self.B, res_name + "Type")()
        res.ResponseCode = code
        for fname, default in (("DC_EVSEStatus", self._status("EVSE_Shutdown")), ("EVSEProcessing", "Finished"),
                               ("EVSEPresentVoltage", self.pv(0, "V")), ("EVSEPresentCurrent", self.pv(0, "A")),
                               ("EVSECurrentLimitAchieved", False), ("EVSEVoltageLimitAchieved", False),
                               ("EVSEPowerLimitAchieved", False)):
            if hasattr(res, fname) and getattr(res, fname) is None:
                setattr(res, fname, default)
        self._complete_failed(res_name, res)
        return res

    def _complete_failed(self, res_name: str, res: Any) -> None:
        """Protocol-specific required elements of a failure response."""
