"""What every session core shares (:class:`SessionCore`: the checks before a handler, the power-lease
refusal, budgets and power-off after it; -20 uses it too), and what DIN SPEC 70121 and ISO 15118-2 share
besides (:class:`V2gSession`: the V2G_Message loop and failure responses). Each protocol's module gives
its message modules, its sequence table (``NEXT``) and its handlers; :mod:`edge.v2g.dc` adds the DC ones."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import exi
from edge.chargingpoint import PowerLeaseRefused
from edge.hardware import ChargerHardware
from edge.v2g.physical import to_physical
from edge.v2g.timers import SessionTimers, note_response_time


class SessionCore:
    """What every session core does around a request, whatever its protocol: the checks before its
    handler (session over, SessionID, sequence) and the power lease refusal in one place
    (:meth:`_respond`); after the response, the time it took against its budget and, when the session
    is over, the power off (:meth:`_finish`)."""

    NEXT: ClassVar[dict[str, set[str]]]
    hardware: ChargerHardware
    timers: SessionTimers | None
    stats: dict[str, list[float]]
    notes: list[str]
    state: str
    session_id: bytes
    done: bool
    _failed: Callable[[str, str], Any]  # each protocol's response of the right type carrying a failure code

    def _respond(self, name: str, session_id: bytes | None, failed_as: str, handler: Callable[[Any], Any],
                 request: Any) -> tuple[Any, bool]:
        """The response to request ``name`` and whether the session ends: refused when the session is over
        (stopped, paused or failed, whatever the state says), for a foreign SessionID or out of sequence;
        else ``handler(request)``, whose power commands may be refused by the charging point's lease
        (another session owns the power, or the watchdog took it back): answered FAILED. ``failed_as`` is
        what the protocol's ``_failed`` takes (the response name for DIN/-2, the request for -20)."""
        if self.done:
            return self._failed(failed_as, "FAILED_SequenceError"), True
        if name != "SessionSetupReq" and session_id != self.session_id:
            return self._failed(failed_as, "FAILED_UnknownSession"), True
        if name not in self.NEXT[self.state]:
            return self._failed(failed_as, "FAILED_SequenceError"), True
        try:
            res, end, self.state = handler(request)
        except PowerLeaseRefused as e:
            self.notes.append(str(e))
            return self._failed(failed_as, "FAILED"), True
        return res, end

    def _finish(self, request: str, started: float, end: bool) -> None:
        used = time.perf_counter() - started
        self.stats.setdefault(request, []).append(used)
        note_response_time(self.timers, request, used)
        self.done = end
        if end:
            self.power_off()

    def power_off(self) -> None:
        """No power flows any more (session over, failed, or the car gone)."""
        self.hardware.set_contactors(False)
        self.hardware.set_dc_target(0, 0)
        self.hardware.set_ac_current_limit(0)


@dataclass
class V2gSession(SessionCore):
    PROTO: ClassVar[str]
    B: ClassVar[ModuleType]  # the protocol's MsgBody model module
    T: ClassVar[ModuleType]  # its MsgDataTypes model module
    MESSAGE: ClassVar[type]
    BODY: ClassVar[type]
    HEADER: ClassVar[type]
    NEXT: ClassVar[dict[str, set[str]]]  # which requests may follow each request (from "start")
    DEFAULT_TIMERS: ClassVar[SessionTimers]

    hardware: ChargerHardware
    state: str = "start"
    session_id: bytes = field(default_factory=lambda: os.urandom(8))
    done: bool = False
    timers: SessionTimers | None = None
    phase_started: dict[str, float] = field(default_factory=dict)  # first request of a timed phase
    stats: dict[str, list[float]] = field(default_factory=dict)  # request -> response times used (s)
    notes: list[str] = field(default_factory=list)  # what went wrong that the response code alone does not say
    _now: float = 0.0
    header: Any = None  # the request's header (its Signature, for PnC)
    response_signature: Any = None  # a handler's signature for the response header (PnC)

    def __post_init__(self) -> None:
        if self.timers is None:
            self.timers = self.DEFAULT_TIMERS
        self._requests = sorted({n for allowed in self.NEXT.values() for n in allowed})

    def handle(self, payload: bytes, now: float) -> tuple[bytes | None, bool]:
        """One request in, the response out and whether the session is over; None: close silently."""
        t0 = time.perf_counter()
        try:
            msg = exi.decode(self.PROTO, payload)
        except exi.DecodeError:
            self.done = True
            return None, True
        body = msg.Body
        name = next((n for n in self._requests if getattr(body, n, None) is not None), None) if body else None
        if name is None:
            self.done = True
            return None, True
        self.hardware.update(now)
        self._now = now
        self.header, self.response_signature = msg.Header, None
        res_name = name[:-3] + "Res"
        res, end = self._respond(name, msg.Header.SessionID, res_name, getattr(self, "_" + name), getattr(body, name))
        header = self.HEADER(self.session_id)
        if self.response_signature is not None:
            header.Signature = self.response_signature
        out = exi.encode(self.PROTO, self.MESSAGE(header, self.BODY(**{res_name: res})))
        self._finish(name, t0, end)
        return out, end

    # ------------------------------------------------------------------ helpers
    def pv(self, x: float, unit: str) -> Any:
        return to_physical(self.T.PhysicalValueType, x, unit)

    def _status(self, code: str = "EVSE_Ready") -> Any:
        return self.T.DC_EVSEStatusType(EVSEIsolationStatus=self.hardware.isolation(), EVSEStatusCode=code,
                                        NotificationMaxDelay=0, EVSENotification="None")

    def _evse_parameter(self) -> Any:
        lim, pv = self.hardware.dc_limits(), self.pv
        return self.T.DC_EVSEChargeParameterType(
            self._status(), pv(lim.max_current, "A"), pv(lim.max_power, "W"), pv(lim.max_voltage, "V"),
            pv(lim.min_current, "A"), pv(lim.min_voltage, "V"), None, pv(1, "A"), None)

    def _overdue(self, phase: str, limit: float) -> bool:
        """True once ``phase`` has lasted longer than ``limit`` (measured from its first request)."""
        started = self.phase_started.setdefault(phase, self._now)
        return self._now - started > limit

    def _failed(self, res_name: str, code: str) -> Any:
        """A response of the right type with every required element, carrying a failure code."""
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
