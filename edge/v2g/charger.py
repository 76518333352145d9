"""One car connection on the charger: supportedAppProtocol first, then the chosen protocol's session.
This is the handler the V2GTP server runs per TCP connection; :class:`EvseConfig` is what the
sessions of one charging point share (identity, PnC, paused sessions, its controller, sign quirks).
Every session has the same contract (``handle(payload_type, payload, now)``), so this module never
asks which protocol it is talking to after supportedAppProtocol.

Messages are routed by V2GTP payload type: 0x8001 carries supportedAppProtocol and the DIN and -2
sessions; a -20 session takes 0x8002 (common messages) and 0x8003 (AC) or 0x8004 (DC) and answers each
request with its own payload type. A payload type the current step cannot take closes the connection."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import exi
from edge.chargingpoint import ChargingPoint, LeasedHardware
from edge.controller import ChargingController
from edge.hardware import ChargerHardware
from edge.logs import bind_log_fields
from edge.trace import EvseTrace, sample_hardware

from . import sap
from .din.session import DinSession
from .iso2.session import Iso2PausedSessions, Iso2Session
from .iso20.session import Iso20PausedSessions, Iso20Session
from .pnc import PlugAndCharge
from .power import SignConvention, SignQuirks
from .quirks import CarQuirkProfile, CarQuirks, mac_from_link_local, peer_host
from .session import ANSWER_LATER as ANSWER_LATER_BYTES
from .session import SessionCore
from .timers import SessionTimers, budget_report
from .v2gtp import ANSWER_LATER, PayloadType, V2gtpMessage

log = logging.getLogger("edge.v2g")

#: protocols with a session implementation here
SESSIONS = ("din", "iso2", "iso20-dc", "iso20-ac")
#: what a charging point offers unless told otherwise (the car's priorities decide among them)
DEFAULT_PROTOCOLS = (sap.ISO20_DC, sap.ISO20_AC, sap.ISO2, sap.DIN)
#: protocols that need a DC power path (not offered by a board whose dc_limits() is None)
DC_ONLY = frozenset({"din", "iso20-dc"})
#: protocols that need an AC power path
AC_ONLY = frozenset({"iso20-ac"})


def parse_protocols(text: str) -> list[sap.Protocol]:
    """``din,iso2,iso20-dc,iso20-ac`` (the priority order offered) as protocols; ValueError naming the
    unknown or unimplemented ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in SESSIONS]
    if wrong or not names:
        raise ValueError(f"unknown protocol(s) {', '.join(wrong) or '(none given)'}: choose from {', '.join(SESSIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a protocol is listed twice in {text!r}")
    return [sap.KNOWN[n] for n in names]


@dataclass
class EvseConfig:
    """What every session on one charging point shares, across connections."""

    evse_id: str = "DE*EDG*E0001*1"
    pnc: PlugAndCharge | None = None  # Contract (PnC) is offered when set, and only over TLS ...
    pnc_without_tls: bool = False  # ... unless a test rig says otherwise (ISO 15118-2 needs TLS for PnC)
    receipt_interval: float | None = None  # PnC: signed MeteringReceipt every this many seconds
    paused: Iso2PausedSessions = field(default_factory=Iso2PausedSessions)
    paused_iso20: Iso20PausedSessions = field(default_factory=Iso20PausedSessions)
    timers: dict[str, SessionTimers] = field(default_factory=dict)  # per protocol, overrides the defaults
    # how long a new connection may stay silent before its supportedAppProtocolReq (no session timers yet)
    setup_timeout: float = SessionTimers().sequence_timeout
    point: ChargingPoint | None = None  # the power lease and watchdog of the charging point (made at first use)
    controller: ChargingController = field(default_factory=ChargingController)  # what a car may get now
    signs: SignConvention = field(default_factory=SignConvention)  # how cars here write discharge values (a quirk)
    sign_quirks: SignQuirks = field(default_factory=SignQuirks)  # -20 cars declared (by EVCCID) to write them otherwise
    trace: EvseTrace | None = None  # every message of this charging point's sessions, recorded (edge.trace)
    quirks: CarQuirks = field(default_factory=CarQuirks)  # profiles matched at connection (MAC OUI, namespace)
    car_mac: bytes | None = None  # the car SLAC matched last on this charging point (the daemon sets it)

    def charging_point(self, hardware: ChargerHardware, name: str = "evse") -> ChargingPoint:
        """The charging point every connection sharing this config drives: one power lease for all
        (``name`` is used when it is made here)."""
        if self.point is None:
            self.point = ChargingPoint(hardware, name)
        elif self.point.hardware is not hardware:
            raise ValueError("an EvseConfig belongs to one charging point: its connections must share its hardware")
        return self.point


@dataclass
class ChargerConnection:
    hardware: ChargerHardware
    protocols: list[sap.Protocol] = field(default_factory=lambda: list(DEFAULT_PROTOCOLS))
    config: EvseConfig = field(default_factory=EvseConfig)
    tls: bool = False  # the connection is TLS-protected (PnC is offered only then)
    tls_version: str | None = None  # "TLSv1.2" / "TLSv1.3" once the handshake is done (server shell)
    vehicle_certificate: bytes | None = None  # -20 over TLS 1.3: the car's leaf (DER), when it sent one
    session: SessionCore | None = None
    protocol: sap.Protocol | None = None
    closing: bool = False
    ended: str | None = None  # why the connection ended, once it has
    peer: str | None = None
    trace_conn: int | None = None  # this connection's id in the charging point's trace
    _asked_again: bool = False  # the request being handled was handed in before (ANSWER_LATER)
    _reported_end: bool = False  # the controller was told this session's end
    _log_key: tuple[bytes, object] | None = None  # (SessionID, EVCCID) the log fields were bound for

    def __post_init__(self) -> None:
        # the session drives the board only through this view: power needs the charging point's lease
        self.power: LeasedHardware = self.config.charging_point(self.hardware).lease()

    def set_peer(self, peer: str) -> None:
        """The server shell names the car's address, for the power log lines."""
        self.power.label = f"{self.power.label} from {peer}"
        self.peer = peer

    @property
    def in_session(self) -> bool:
        """A session is going on (the server never evicts such a connection to admit another)."""
        return self.session is not None and not self.session.done

    def _new_session(self, name: str, signs: SignConvention | None = None) -> SessionCore:
        config = self.config
        common = {"timers": config.timers.get(name), "controller": config.controller, "signs": signs or config.signs}
        if name == "din":
            return DinSession(self.power, **common)
        pnc = config.pnc if (self.tls or config.pnc_without_tls) else None
        if name.startswith("iso20"):
            return Iso20Session(self.power, **common, protocol=name, sign_quirks=config.sign_quirks,
                                evse_id=config.evse_id, pnc=pnc,
                                  receipt_interval=config.receipt_interval, paused_sessions=config.paused_iso20)
        return Iso2Session(self.power, **common, evse_id=config.evse_id, pnc=pnc,
                           receipt_interval=config.receipt_interval, paused_sessions=config.paused)

    def enabled_protocols(self) -> list[sap.Protocol]:
        """What this connection offers in supportedAppProtocol: the configured protocols we have a session
        for, without the DC-only ones on a board without DC."""
        has_dc, has_ac = self.hardware.dc_limits() is not None, self.hardware.ac_limits() is not None
        # [V2G20-2356]: -20 over TLS only with TLS 1.3 (a -2 car on the same port got TLS 1.2)
        iso20_allowed = not self.tls or self.tls_version in (None, "TLSv1.3")
        return [p for p in self.protocols if p.name in SESSIONS and (has_dc or p.name not in DC_ONLY)
                and (has_ac or p.name not in AC_ONLY) and (iso20_allowed or not p.name.startswith("iso20"))]

    def tls_established(self, version: str | None, peer_certificate: bytes | None) -> None:
        """The server shell reports the TLS handshake's outcome before the first message."""
        self.tls, self.tls_version, self.vehicle_certificate = True, version, peer_certificate

    @property
    def idle_timeout(self) -> float:
        """How long the next request may take (V2G_SECC_Sequence_Timeout), which the server enforces: the
        session's timers (-20: 0.5 s after a ChargeLoopRes), before a session the config's setup timeout."""
        if self.session is not None:
            return self.session.sequence_timeout()
        return self.config.setup_timeout

    def handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        trace = self.config.trace.writer(now) if self.config.trace is not None else None
        if trace is None:
            return self._handle(message, now)
        if self.trace_conn is None:
            self.trace_conn = trace.connection_opened(self.peer, now=now, tls=self.tls_version)
        if not self._asked_again:
            trace.v2gtp("rx", message.payload_type, message.payload, now=now, conn=self.trace_conn)
        started = time.perf_counter()
        response = self._handle(message, now)
        self._asked_again = response is ANSWER_LATER
        if self.session is not None and self.session.pending_deviations:  # values outside the schema the car sent
            for request, deviation in self.session.pending_deviations:
                value = deviation.value
                trace.record("deviation", now=now, conn=self.trace_conn, request=request, path=deviation.path,
                             facet=deviation.facet, bit=deviation.bit,
                             value=value if isinstance(value, str | bytes) else int(value)
                             if isinstance(value, int) else str(value))
            self.session.pending_deviations.clear()
        if response is not None and response is not ANSWER_LATER:
            used = time.perf_counter() - started
            session = self.session
            budget = (session.timers.budget(session.last_request)
                      if session is not None and session.timers is not None and session.last_request else None)
            trace.v2gtp("tx", response.payload_type, response.payload, now=now + used, conn=self.trace_conn,
                        used=used, budget=budget)
            if self.power.holds_lease:  # the power this session drives, at its loop rate (plots, power audits)
                point = self.power.point
                trace.hardware(sample_hardware(self.hardware, target_voltage=point.target[0],
                                               target_current=point.target[1], contactors=point.closed),
                               now=now + used)
        return response

    def _handle(self, message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        if self.closing:
            return None
        if self.session is None:
            if message.payload_type != PayloadType.EXI:
                return None
            try:
                req = exi.decode("apphand", message.payload)
            except exi.DecodeError:
                return None
            result = sap.negotiate(req, self.enabled_protocols())
            if result.protocol is None:
                self.closing = True
            else:
                self.protocol = result.protocol
                profile = self._quirk_profile(req)
                self.session = self._new_session(result.protocol.name, profile.signs if profile else None)
                if profile is not None:
                    self.session.notes.append(f"quirk profile {profile.name!r} ({profile.kind} {profile.value}): "
                                              f"{profile.signs}")
            return V2gtpMessage(PayloadType.EXI, exi.encode("apphand", result.response))
        payload_type, out, end = self.session.handle(message.payload_type, message.payload, now)
        if (self.session.session_id, getattr(self.session, "evcc_id", None)) != self._log_key:
            self._bind_log_fields()
        if out == ANSWER_LATER_BYTES and not end:  # the session's backend is still deciding
            return ANSWER_LATER
        if end:  # stopped, paused or failed: its power lease (if it had one) goes with it
            self._session_over("session ended", self._end_reason())
        if out is None:
            return None
        self.closing = end  # after SessionStopRes or a failure response, nothing more is read
        return V2gtpMessage(payload_type, out)

    def _quirk_profile(self, req: object) -> CarQuirkProfile | None:
        """The configured quirk profile this car matches by its MAC's OUI (SLAC's match, else its EUI-64
        link-local address) or an offered namespace; each use is logged."""
        quirks = self.config.quirks
        if not quirks.profiles:
            return None
        namespaces = [str(p.ProtocolNamespace) for p in getattr(req, "AppProtocol", None) or ()]
        mac = self.config.car_mac or mac_from_link_local(peer_host(self.peer))
        profile = quirks.at_connection(mac, namespaces)
        if profile is not None:
            log.info("car %s: quirk profile %r applied (matched by %s %s): %s", self.peer,
                     profile.name, profile.kind, profile.value, profile.signs)
        return profile

    def _bind_log_fields(self) -> None:
        """This connection's task logs with its session's fields from now on (journald: PROTOCOL, SESSION_ID,
        EVCCID; see edge.logs)."""
        session = self.session
        assert session is not None
        evcc = getattr(session, "evcc_id", None)
        self._log_key = (session.session_id, evcc)
        car = session.car()
        bind_log_fields(PROTOCOL=self.protocol.name if self.protocol else None, SESSION_ID=car.session_id,
                        EVCCID=car.evcc_id or None)

    def _end_reason(self) -> str:
        """Why the session ended, in the controller's words (see :data:`edge.controller.END_REASONS`)."""
        session = self.session
        if session is None or session.state not in ("stopped", "paused"):
            return "failed"
        if session.state == "paused":
            return "paused"
        return "stopped_by_charger" if session._stop_told_at is not None else "stopped_by_ev"

    def _session_over(self, reason: str, why: str) -> None:
        """Power off if this connection held the lease, and the controller forgets the car that owned the
        power (its command and script must not meet the next car; a stop request never concerns a later
        session anyway) and tells its listeners why it ended. A stranger's end, or a session that never
        had power, changes neither."""
        owned = self.power.holds_lease or self.power.revoked is not None
        if self.power.revoked is not None and why != "stopped_by_ev":
            why = self.power.revoked_why
        self.power.release(reason)
        if owned and self.session is not None and not self._reported_end:
            self._reported_end = True
            self.config.controller.session_ended(why, self.session.car(), reason)

    def connection_lost(self, reason: str) -> None:
        """The connection ended (the car went away, a timeout, an error): if its session held the power
        lease, no power flows any more; any other connection's end changes nothing. A session that did
        not reach SessionStop is recorded as aborted."""
        aborted = self.session is not None and not self.session.done
        # power off if this connection held the lease
        self._session_over(f"connection ended: {reason}", "communication_lost" if aborted else self._end_reason())
        self.ended = f"aborted: {reason}" if aborted else reason
        trace = self.config.trace
        if trace is not None and trace.current is not None and self.trace_conn is not None:
            trace.current.connection_closed(self.trace_conn, reason)
            # the car that owned the power is gone: its session's file is complete (a paused car comes back)
            if self._reported_end and not (self.session is not None and self.session.state == "paused"):
                trace.end_session(self.ended, energy_wh=self.hardware.energy_wh())
        if self.session is not None and self.session.timers is not None:
            what = self.session.describe()
            log.info("%s session%s %s; response times: %s", self.protocol.name if self.protocol else "?",
                     f" ({what})" if what else "", self.ended, budget_report(self.session.timers, self.session.stats))
