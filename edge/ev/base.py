"""What every simulated car shares, whatever protocol it speaks: the supportedAppProtocol offer, the
battery model, the request/response bookkeeping, the car's own timeouts, and quirks of real cars.

A car is sans-IO: ``start()`` gives the first request (supportedAppProtocolReq), ``handle(response,
now)`` the next one, None once the session (or a paused part of it) is over. A protocol's car gives
its message classes and one ``_on_<Response>`` method per response it expects.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import exi
from edge.v2g import sap
from edge.v2g.physical import from_physical, to_physical
from exi.model.apphand import AppProtocolType, supportedAppProtocolReq

log = logging.getLogger("edge.ev")


class SessionFailed(RuntimeError):
    """The charger answered with a failure code, out of order, or not at all in time."""


@dataclass(frozen=True, slots=True)
class Offer:
    """One entry of the car's supportedAppProtocolReq."""

    namespace: str
    major: int
    minor: int
    schema_id: int
    priority: int

    @classmethod
    def of(cls, protocol: sap.Protocol, schema_id: int, priority: int) -> Offer:
        return cls(protocol.namespace, protocol.major, protocol.minor, schema_id, priority)


#: what Tesla Model 3/Y send (../shared/spec/interop-facts.md): a private namespace first
TESLA_DIN_OFFERS = (Offer("urn:tesla:din:2018:MsgDef", 2, 0, 2, 1), Offer.of(sap.DIN, 1, 2))


@dataclass(frozen=True, slots=True)
class Quirks:
    """Behaviours of real cars (../shared/spec/interop-facts.md) a charger has to survive. Each use is
    recorded in the car's ``notes`` and logged."""

    stop_after_session_setup: bool = False  # Audi Q4: SessionStopReq right after SessionSetup, some sessions
    ignore_cable_check_ongoing: bool = False  # Seres 3: PreCharge after the first CableCheckRes, finished or not
    skip_welding_detection: bool = False  # straight from PowerDelivery Stop to SessionStop
    # -20 BPT: discharge limits (EVMaximumDischargePower, EVSEMaximumDischargeCurrent, ...) sent and read as
    # negative numbers, as cars built on EVerest's ``negative_bidirectional_limits`` do; such a car reads a
    # positive limit from the charger as "no discharge" (the charger has to know which car it has)
    negative_discharge_limits: bool = False


QUIRK_PROFILES: dict[str, Quirks] = {
    "none": Quirks(),
    "audi-q4": Quirks(stop_after_session_setup=True),
    "seres-3": Quirks(ignore_cable_check_ongoing=True),
    "no-welding-detection": Quirks(skip_welding_detection=True),
    "negative-discharge-limits": Quirks(negative_discharge_limits=True),
}


def is_ok(code: object) -> bool:
    return str(code).startswith("OK")


def physical_or_none(p: Any) -> float | None:
    """A DIN/-2 PhysicalValue as a number, None when the element is absent (not 0: an absent limit is no limit)."""
    return None if p is None else from_physical(p)


#: below this the charger's output counts as discharged after PowerDelivery Stop (no welded contactor
#: holds the battery's voltage on it); the DC touch-safe limit
WELDING_SAFE_V = 60.0


@dataclass(frozen=True, slots=True)
class EvseLimits:
    """What the charger said it can give (ChargeParameterDiscoveryRes, updated by the loop responses),
    None where it said nothing (no limit known). Discharge limits are magnitudes."""

    max_current: float | None = None  # A, DC
    max_power: float | None = None  # W
    max_discharge_current: float | None = None  # A, DC bidirectional
    max_discharge_power: float | None = None  # W, bidirectional

    def updated(self, **given: float | None) -> EvseLimits:
        """These limits with the values a later response gives (a value not given keeps the old one)."""
        return dataclasses.replace(self, **{name: v for name, v in given.items() if v is not None})


@dataclass
class SimulatedCar:
    PROTOCOL: ClassVar[sap.Protocol]
    MESSAGE: ClassVar[type]
    BODY: ClassVar[type]
    HEADER: ClassVar[type]
    MSG_BODY: ClassVar[ModuleType]  # the protocol's MsgBody model module (request types)
    MSG_TYPES: ClassVar[ModuleType]  # its MsgDataTypes model module (PhysicalValueType, ...)
    DEFAULT_OFFERS: ClassVar[tuple[Offer, ...]]
    #: the car's wait for each response, by request (V2G_EVCC_Msg_Timeout); others DEFAULT_TIMEOUT
    TIMEOUTS: ClassVar[dict[str, float]] = {}
    DEFAULT_TIMEOUT: ClassVar[float] = 2.0
    #: requests of the charge loop: the next one follows after the loop period, not at once
    LOOP_REQUESTS: ClassVar[frozenset[str]] = frozenset({"CurrentDemandReq", "ChargingStatusReq"})
    #: how long the car waits for the charger in a phase (V2G_EVCC_*_Timeout), by phase name. No standard
    #: bounds welding detection: a charger's output falls below 60 V within seconds once its current is off,
    #: so 20 s gives a slow one room while a car facing a welded contactor (or an output that never
    #: discharges) gives up instead of asking on forever (one did: 2,560 requests in 110 s)
    PHASE_LIMITS: ClassVar[dict[str, float]] = {"ongoing": 60.0, "cable check": 40.0, "pre-charge": 7.0,
                                                "welding detection": 20.0}

    evcc_id: bytes = bytes.fromhex("02aabbccddee")
    capacity_wh: float = 60_000.0
    soc: float = 40.0
    target_soc: float = 42.0
    battery_voltage: float = 380.0
    max_voltage: float = 420.0
    max_current: float = 125.0
    offers: tuple[Offer, ...] = ()  # empty: DEFAULT_OFFERS
    quirks: Quirks = Quirks()
    session_id: bytes = b"\x00"  # what real cars send in SessionSetupReq; the charger's once assigned
    log: list[str] = field(default_factory=list)  # every request sent, by name
    notes: list[str] = field(default_factory=list)  # quirks used, charger notifications honoured
    energy_wh: float = 0.0  # imported into the battery
    energy_exported_wh: float = 0.0  # taken from the battery (bidirectional power transfer)
    soc_start: float | None = None  # the SoC when the car first started (set by start())
    stopped_cleanly: bool = False  # SessionStop answered and nothing failed on the way
    failure: str | None = None  # what went wrong although the session could still be ended (welding detection)
    last_request: Any = None  # the last request sent and the last response read, decoded (message logs)
    last_response: Any = None
    paused: bool = False  # the session was paused; resume() before the next connection
    _last: str = ""
    _last_time: float | None = None
    _negotiated: bool = False
    _phase_started: dict[str, float] = field(default_factory=dict)
    _evse: EvseLimits = EvseLimits()

    # ------------------------------------------------------------------ the sans-IO interface
    def start(self) -> bytes:
        """The first request of a connection: the supportedAppProtocolReq."""
        if self.soc_start is None:
            self.soc_start = self.soc
        self._negotiated = False
        self._last = "supportedAppProtocolReq"
        offer = [AppProtocolType(o.namespace, o.major, o.minor, o.schema_id, o.priority)
                 for o in self.offers or self.DEFAULT_OFFERS]
        self.last_request = supportedAppProtocolReq(offer)
        return exi.encode("apphand", self.last_request)

    def handle(self, payload: bytes, now: float) -> bytes | None:
        """The charger's response to the last request in; the next request out (None: done)."""
        if not self._negotiated:
            self.last_response = self._decode("apphand", payload)
            return self._on_app_protocol(self.last_response)
        msg = self.last_response = self._decode(self.protocol.name, payload)
        name = self._last[:-3] + "Res"
        res = getattr(msg.Body, name, None) if msg.Body is not None else None
        if res is None:
            raise SessionFailed(f"expected {name}, got {self._body_name(msg.Body)}")
        if not self._accepts(name, res.ResponseCode):
            raise SessionFailed(f"{name} failed: {res.ResponseCode}")
        return getattr(self, "_on_" + name)(res, msg, now)

    @property
    def protocol(self) -> sap.Protocol:
        """The protocol (SAP namespace) this car speaks."""
        return self.PROTOCOL

    @property
    def in_charge_loop(self) -> bool:
        return self._last in self.LOOP_REQUESTS

    def response_timeout(self) -> float:
        """How long the car waits for the response to its last request."""
        return self.TIMEOUTS.get(self._last, self.DEFAULT_TIMEOUT)

    def resume(self) -> None:
        """Ready for the connection that resumes a paused session (protocols that can pause)."""
        raise RuntimeError(f"a {self.protocol.name} session cannot be paused and resumed")

    def summary(self) -> dict[str, Any]:
        """What the car did, JSON-able; also valid mid-session (an interrupted run prints it)."""
        start = self.soc if self.soc_start is None else self.soc_start
        return {"protocol": self.protocol.name, "messages": len(self.log), "energy_wh": round(self.energy_wh, 3),
                "energy_imported_wh": round(self.energy_wh, 3),
                "energy_exported_wh": round(self.energy_exported_wh, 3), "soc": round(self.soc, 3),
                "soc_start": round(start, 3), "soc_end": round(self.soc, 3), "stopped_cleanly": self.stopped_cleanly,
                "failure": self.failure, "notes": list(self.notes)}

    # ------------------------------------------------------------------ for the protocols
    def _session_setup(self) -> bytes:
        raise NotImplementedError

    def _accepts(self, res_name: str, code: object) -> bool:
        return is_ok(code)

    def _on_app_protocol(self, res: Any) -> bytes:
        chosen = next((o for o in self.offers or self.DEFAULT_OFFERS if o.schema_id == res.SchemaID), None)
        if not is_ok(res.ResponseCode) or chosen is None or chosen.namespace != self.protocol.namespace:
            raise SessionFailed(f"{self.protocol.name} not agreed: {res.ResponseCode} schema {res.SchemaID}")
        self._negotiated = True
        return self._session_setup()

    def _send(self, name: str, req: object, signature: object = None) -> bytes:
        self._last = name
        self.log.append(name)
        self.last_request = req
        header = self.HEADER(self.session_id)
        if signature is not None:
            header.Signature = signature
        return exi.encode(self.protocol.name, self.MESSAGE(header, self.BODY(**{name: req})))

    def _start_metering(self, now: float) -> None:
        """Energy flows from ``now`` on (PowerDelivery Start answered)."""
        self._last_time = now

    def _take_energy(self, power_w: float, now: float) -> None:
        """The battery model: ``power_w`` flowed since the last call (import positive, export negative); SoC
        rises with the energy imported and falls with the energy exported."""
        dt = now - (self._last_time if self._last_time is not None else now)
        self._last_time = now
        wh = power_w * max(0.0, dt) / 3600
        if wh >= 0:
            self.energy_wh += wh
        else:
            self.energy_exported_wh -= wh
        self.soc = min(100.0, max(0.0, self.soc + 100 * wh / self.capacity_wh))

    def _session_stopped(self) -> None:
        """SessionStopRes read: a clean stop unless something failed on the way."""
        self.stopped_cleanly = self.failure is None

    def _fail_softly(self, failure: str) -> None:
        """Something went wrong that the car still ends the session properly after (SessionStop)."""
        self.failure = failure
        self._note(f"failure: {failure}")

    # ------------------------------------------------------------------ what the charger can give
    def _learn_evse_limits(self, **given: float | None) -> None:
        """The charger's limits (:class:`EvseLimits` names) from a ChargeParameterDiscoveryRes or a loop
        response; None: not given there (the last known value stands)."""
        self._evse = self._evse.updated(**given)

    def _dc_target_current(self, voltage: float, wanted: float | None = None) -> float:
        """The current the car asks for at ``voltage``: what it wants (its maximum unless said), never
        above the charger's maximum current, nor its maximum power at that voltage."""
        current = self.max_current if wanted is None else min(wanted, self.max_current)
        if self._evse.max_current is not None:
            current = min(current, self._evse.max_current)
        if self._evse.max_power is not None and voltage > 0:
            current = min(current, self._evse.max_power / voltage)
        return max(0.0, current)

    def _quirk(self, name: str) -> bool:
        """Is quirk ``name`` on? A use is noted (the charger's logs can be read against it)."""
        on = bool(getattr(self.quirks, name))
        if on:
            self._note(f"quirk {name}")
        return on

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.info("car: %s", text)

    def _note_once(self, text: str) -> None:
        """A note for something that may recur every loop cycle: recorded the first time only."""
        if text not in self.notes:
            self._note(text)

    def _within(self, phase: str, now: float, seen: str) -> None:
        """The car gives up on a phase (cable check, pre-charge, Ongoing answers) after its limit;
        ``seen``: what the charger last said, for the failure message."""
        if self._expired(phase, now):
            raise SessionFailed(f"{phase} not finished within {self.PHASE_LIMITS[phase]:g} s: {seen}")

    def _expired(self, phase: str, now: float) -> bool:
        """Has ``phase`` (started at its first check) outlasted its limit?"""
        started = self._phase_started.setdefault(phase, now)
        return now - started > self.PHASE_LIMITS[phase]

    def _output_discharged(self, present_v: float, now: float) -> bool:
        """Welding detection: may the car go on to SessionStop? Yes once the charger's output is below
        WELDING_SAFE_V, and also after the phase limit, with the failure recorded (a welded contactor or
        an output that does not discharge: the car ends the session rather than ask forever)."""
        if present_v <= WELDING_SAFE_V:
            self._end_phase("welding detection")
            return True
        if self._expired("welding detection", now):
            self._end_phase("welding detection")
            self._fail_softly(f"welding detection: the output still at {present_v:g} V after "
                              f"{self.PHASE_LIMITS['welding detection']:g} s (welded contactor or not "
                              f"discharged; {WELDING_SAFE_V:g} V expected)")
            return True
        return False

    def _end_phase(self, phase: str) -> None:
        self._phase_started.pop(phase, None)

    # ------------------------------------------------------------------ DC steps DIN and -2 share
    def _cable_check(self, now: float, seen: str = "no CableCheckRes yet") -> bytes:
        self._within("cable check", now, seen)
        return self._send("CableCheckReq", self.MSG_BODY.CableCheckReqType(self._status()))

    def _on_CableCheckRes(self, res: Any, msg: Any, now: float) -> bytes:
        if res.EVSEProcessing == "Ongoing" and not self._quirk("ignore_cable_check_ongoing"):
            status = getattr(res.DC_EVSEStatus, "EVSEIsolationStatus", None)
            return self._cable_check(now, f"EVSEProcessing Ongoing, isolation {status or 'not given'}")
        self._end_phase("cable check")
        return self._pre_charge(now)

    def _pre_charge(self, now: float, seen: str = "no PreChargeRes yet") -> bytes:
        """Ask for the battery's voltage at 1 A until the charger's output is within 20 V of it."""
        self._within("pre-charge", now, seen)
        pv = self._pv
        return self._send("PreChargeReq", self.MSG_BODY.PreChargeReqType(
            self._status(), pv(self.battery_voltage, "V"), pv(1, "A")))

    def _on_PreChargeRes(self, res: Any, msg: Any, now: float) -> bytes:
        present = from_physical(res.EVSEPresentVoltage)
        if abs(present - self.battery_voltage) >= 20:
            return self._pre_charge(now, f"EVSEPresentVoltage {present:g} V, target {self.battery_voltage:g} V")
        self._end_phase("pre-charge")
        return self._start_charging(now)

    def _pv(self, x: float, unit: str) -> Any:
        return to_physical(self.MSG_TYPES.PhysicalValueType, x, unit)

    def _status(self) -> Any:
        raise NotImplementedError

    def _start_charging(self, now: float) -> bytes:
        """Pre-charge done: the protocol's PowerDeliveryReq that closes the contactors."""
        raise NotImplementedError

    @staticmethod
    def _decode(proto: str, payload: bytes) -> Any:
        try:
            return exi.decode(proto, payload)
        except exi.DecodeError as e:
            raise SessionFailed(f"the charger sent undecodable {proto} EXI: {e}") from None

    @staticmethod
    def _body_name(body: Any) -> str:
        if body is None:
            return "an empty body"
        names = [n for n in getattr(body, "__slots__", ()) if getattr(body, n, None) is not None]
        return names[0] if names else "an empty body"
