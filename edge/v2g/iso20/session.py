"""ISO 15118-20 DC charger session, sans-IO: Scheduled control mode, EIM and Plug & Charge, metering
confirmation, schedule renegotiation, pause and resume.

``Iso20DcSession.handle(payload_type, payload, now) -> (response payload type, response | None, ended)``.
Which request may follow which is the table ``NEXT``: the whole protocol in one place. A state is the
last request, qualified where the next step depends on what it said.

Why not :class:`edge.v2g.session.V2gSession`: -20 has no V2G_Message envelope. Each message is its
own root element in one of two schemas (CommonMessages, payload type 0x8002; DC, 0x8004), the header
carries a TimeStamp, the ResponseCodes have three classes (OK_*, WARNING_*: the session goes on,
FAILED*: it ends) and the DC messages carry no DC_EVSEStatus. The loop is the same idea (decode, SessionID
and sequence checks, dispatch, encode, stats) and the same safety rules hold: no pre-charge before the
isolation check says Valid or Warning, no power after a failure, a stop or a lost car.

Certificate installation: AuthorizationSetupRes says CertificateInstallationService=true when the
PlugAndCharge answers -20 installations (``installs_certificates("iso20")``); CertificateInstallationReq
then goes to it with the request's header signature (by the OEM provisioning key) and its answer, header
signature by the CPS included, goes back to the car. WARNING_* answers leave the session going (on to
AuthorizationReq), FAILED_* end it.

Plug & Charge ([V2G20-2209] ff.): AuthorizationSetupRes offers PnC with a fresh 16-byte GenChallenge
when a :class:`~edge.v2g.pnc.PlugAndCharge` is configured (the charger decides when: over TLS);
AuthorizationReq then carries PnC_AReqAuthorizationMode (that GenChallenge, the contract chain) signed
in the header with the contract key. The chain is judged as "iso20" (WARNING_Certificate* codes), the
signature over PnC_AReqAuthorizationMode (FAILED_SignatureError ends the session), then the backend.
A WARNING_* answer ends nothing: the car may try again (e.g. EIM) or stop; no power flows before a
positive AuthorizationRes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography import x509
from cryptography.x509.oid import NameOID

import exi
from edge.hardware import ChargerHardware
from edge.v2g.pnc import ContractChain, PlugAndCharge
from edge.v2g.session import SessionCore
from edge.v2g.timers import ISO20 as ISO20_TIMERS
from edge.v2g.timers import SessionTimers
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model.iso20_commontypes import responseCodeType

from .messages import (
    COMMON_NS,
    CONNECTOR_DC_EXTENDED,
    CONTROL_MODE_SCHEDULED,
    MOBILITY_NEEDS_BY_EVCC,
    NO_SESSION,
    PAYLOAD_TYPES,
    PRICING_NONE,
    REQUESTS,
    SCHEMA_OF_PAYLOAD_TYPE,
    SERVICE_DC,
    from_rational,
    header,
    rational,
    request_name,
    response_class,
)

_STOP = "SessionStopReq"
NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"AuthorizationSetupReq", _STOP},
    "AuthorizationSetupReq": {"AuthorizationReq", _STOP},
    # AuthorizationSetupRes offered CertificateInstallationService: a contract may be installed first, as
    # often as the car likes (one chain each, [V2G20-2493] NOTE 2); a WARNING_* answer ends nothing either
    "AuthorizationSetupReq:install": {"CertificateInstallationReq", "AuthorizationReq", _STOP},
    "CertificateInstallationReq": {"CertificateInstallationReq", "AuthorizationReq", _STOP},
    "CertificateInstallationReq:Ongoing": {"CertificateInstallationReq", _STOP},
    "AuthorizationReq:Ongoing": {"AuthorizationReq", _STOP},
    # a WARNING_* answer ([V2G20-2226]): the car may try again (another service, other credentials) or stop
    "AuthorizationReq:refused": {"AuthorizationReq", _STOP},
    "AuthorizationReq": {"ServiceDiscoveryReq", _STOP},
    "ServiceDiscoveryReq": {"ServiceDetailReq", "ServiceSelectionReq", _STOP},
    "ServiceDetailReq": {"ServiceDetailReq", "ServiceSelectionReq", _STOP},
    "ServiceSelectionReq": {"DC_ChargeParameterDiscoveryReq", _STOP},
    "DC_ChargeParameterDiscoveryReq": {"ScheduleExchangeReq", _STOP},
    # PowerDelivery here only to stop (a car that will not charge now); Start needs cable check and pre-charge
    "ScheduleExchangeReq": {"DC_CableCheckReq", "PowerDeliveryReq", _STOP},
    # pre-charge only once the isolation check has finished (a car that pre-charges earlier is refused)
    "DC_CableCheckReq:Ongoing": {"DC_CableCheckReq", _STOP},
    "DC_CableCheckReq": {"DC_PreChargeReq", _STOP},
    "DC_PreChargeReq": {"DC_PreChargeReq", "PowerDeliveryReq", _STOP},
    # the car is still working out its power profile (EVProcessing=Ongoing): PowerDelivery again
    "PowerDeliveryReq:EVOngoing": {"PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Start": {"DC_ChargeLoopReq", "PowerDeliveryReq", _STOP},
    "DC_ChargeLoopReq": {"DC_ChargeLoopReq", "MeteringConfirmationReq", "PowerDeliveryReq", _STOP},
    "MeteringConfirmationReq": {"DC_ChargeLoopReq", "PowerDeliveryReq", _STOP},
    # schedule renegotiation: a new ScheduleExchange, then straight back to PowerDelivery Start
    "PowerDeliveryReq:ScheduleRenegotiation": {"ScheduleExchangeReq", _STOP},
    "ScheduleExchangeReq:renegotiated": {"PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Stop": {"DC_WeldingDetectionReq", _STOP},
    "DC_WeldingDetectionReq": {"DC_WeldingDetectionReq", _STOP},
}
#: where PowerDelivery may say what (the table lets PowerDeliveryReq in; its ChargeProgress decides);
#: Stop may come wherever PowerDeliveryReq may
_PROGRESS_FROM = {
    "Start": {"DC_PreChargeReq", "PowerDeliveryReq:EVOngoing", "ScheduleExchangeReq:renegotiated"},
    "ScheduleRenegotiation": {"PowerDeliveryReq:Start", "DC_ChargeLoopReq", "MeteringConfirmationReq"},
}

_CODES = frozenset(c.value for c in responseCodeType)
#: what the car may pick in AuthorizationReq, in our order of preference
AUTH_PNC, AUTH_EIM = "PnC", "EIM"
#: the energy transfer services of Table 204 (AC, DC, WPT, DC_ACDP and their BPT variants); others are VAS
ENERGY_SERVICE_IDS = frozenset(range(1, 8))
SCHEDULE_ID = 1
SCHEDULE_DURATION_S = 86_400  # one entry for a day: the charger's limit until the CSMS's profiles join
PRE_CHARGE_MAX_CURRENT = 2.0  # A (IEC 61851-23: pre-charge current stays at or below 2 A)
#: the DC parameter sets offered (Table 207): ParameterSetID -> parameters. Dynamic mode joins here later.
DC_PARAMETER_SETS: dict[int, dict[str, int]] = {
    1: {"Connector": CONNECTOR_DC_EXTENDED, "ControlMode": CONTROL_MODE_SCHEDULED,
        "MobilityNeedsMode": MOBILITY_NEEDS_BY_EVCC, "Pricing": PRICING_NONE},
}

Handled = tuple[Any, bool, str]  # (response without header, session ends, next state)


def emaid_of_leaf(leaf: bytes | None) -> str:
    """The EMAID a -20 contract leaf carries in its CN ("" when it cannot be read: the chain check refuses it)."""
    try:
        names = x509.load_der_x509_certificate(leaf or b"").subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    return str(names[0].value) if names else ""


@dataclass(frozen=True, slots=True)
class Iso20PausedSession:
    """What a paused -20 session keeps until the car resumes it (SessionSetupReq with its SessionID)."""

    session_id: bytes
    evcc_id: str
    auth_service: str
    service: tuple[int, int]  # (ServiceID, ParameterSetID) selected


@dataclass
class Iso20PausedSessions:
    """The paused -20 sessions of one charging point; outlives the TCP connections."""

    sessions: dict[bytes, Iso20PausedSession] = field(default_factory=dict)

    def store(self, paused: Iso20PausedSession) -> None:
        self.sessions[paused.session_id] = paused

    def take(self, session_id: bytes | None, evcc_id: str) -> Iso20PausedSession | None:
        found = self.sessions.get(session_id or b"")
        if found is None or found.evcc_id != evcc_id:
            return None
        del self.sessions[found.session_id]
        return found


@dataclass(frozen=True, slots=True)
class EvDcLimits:
    """What the car said in DC_ChargeParameterDiscoveryReq."""

    max_power: float
    max_current: float
    max_voltage: float
    min_voltage: float


@dataclass
class Iso20DcSession(SessionCore):
    PROTO: ClassVar[str] = "iso20-dc"
    NEXT: ClassVar[dict[str, set[str]]] = NEXT
    DEFAULT_TIMERS: ClassVar[SessionTimers] = ISO20_TIMERS

    hardware: ChargerHardware
    timers: SessionTimers | None = None
    evse_id: str = "DE*EDG*E0001*1"
    meter_id: str = "edge-sim"
    pnc: PlugAndCharge | None = None  # offers PnC when set
    receipt_interval: float | None = None  # PnC: ask for a signed MeteringConfirmation this often (s)
    paused_sessions: Iso20PausedSessions | None = None  # pause/resume, when the charging point keeps them
    free_service: bool = False  # ServiceList FreeService of the DC service
    wall_clock: Callable[[], float] = time.time  # header TimeStamps, certificate validity
    state: str = "start"
    session_id: bytes = field(default_factory=lambda: os.urandom(8))
    done: bool = False
    stop_requested: bool = False  # set by the charger (CSMS stop, fault): the next ChargeLoopRes says Terminate
    # what happened, for the caller and the tests
    evcc_id: str = ""
    resumed: bool = False
    auth_service: str | None = None
    contract: ContractChain | None = None
    selected: tuple[int, int] | None = None  # (ServiceID, ParameterSetID)
    ev_limits: EvDcLimits | None = None
    schedule_power: float | None = None  # W, the schedule agreed in ScheduleExchange
    receipts: int = 0
    renegotiations: int = 0
    ev_clock_offset: float | None = None  # the car's TimeStamp minus our clock (cars' clocks drift: noted, not refused)
    stats: dict[str, list[float]] = field(default_factory=dict)  # request -> response times used (s)
    phase_started: dict[str, float] = field(default_factory=dict)  # first request of a timed phase
    notes: list[str] = field(default_factory=list)
    request_header: ct.MessageHeaderType | None = None  # the request's header (its Signature, for PnC)
    _now: float = 0.0
    _offered_auth: list[str] = field(default_factory=list)
    _gen_challenge: bytes | None = None
    _pnc_request: cm.PnC_AReqAuthorizationModeType | None = None  # the one checked, while the backend decides
    _paused: Iso20PausedSession | None = None  # the paused session this one resumed
    _renegotiating: bool = False
    _receipt_due_at: float | None = None
    _receipt_pending: bool = False
    _last_meter: ct.MeterInfoType | None = None

    def __post_init__(self) -> None:
        if self.timers is None:
            self.timers = self.DEFAULT_TIMERS
        while self.session_id == NO_SESSION:  # all zeros means "no session" in SessionSetupReq
            self.session_id = os.urandom(8)

    # ------------------------------------------------------------------ the loop
    def handle(self, payload_type: int, payload: bytes, now: float) -> tuple[int, bytes | None, bool]:
        """One request in; the response's payload type, the response (None: close silently) and
        whether the session is over."""
        t0 = time.perf_counter()
        schema = SCHEMA_OF_PAYLOAD_TYPE.get(payload_type)
        if schema is None:  # AC, WPT, ... or SAP again: nothing this session can answer in
            return self._close(payload_type)
        try:
            msg = exi.decode(schema, payload)
        except exi.DecodeError:
            return self._close(payload_type)
        name = request_name(msg)
        if name is None or REQUESTS[name] != schema or msg.Header is None:
            return self._close(payload_type)
        self.hardware.update(now)
        self._now, self.request_header = now, msg.Header
        if msg.Header.TimeStamp is not None:
            self.ev_clock_offset = msg.Header.TimeStamp - self.wall_clock()
        res, end = self._respond(name, msg.Header.SessionID, name, getattr(self, "_" + name), msg)
        signature = res.Header.Signature if res.Header is not None else None  # a signed response keeps its signature
        res.Header = header(self.session_id, self.wall_clock(), signature)
        out = exi.encode(schema, res)
        self._finish(name, t0, end)
        return PAYLOAD_TYPES[schema], out, end

    def sequence_timeout(self) -> float:
        """How long the next request may take (V2G_SECC_Sequence_Timeout): 0.5 s after a ChargeLoopRes."""
        assert self.timers is not None
        if self.state == "DC_ChargeLoopReq" and self.timers.charge_loop_sequence_timeout is not None:
            return self.timers.charge_loop_sequence_timeout
        return self.timers.sequence_timeout

    def request_stop(self) -> None:
        """The charger wants to end the charge: the next ChargeLoopRes tells the car (Terminate)."""
        self.stop_requested = True

    def _close(self, payload_type: int) -> tuple[int, bytes | None, bool]:
        self.done = True
        self.power_off()
        return payload_type, None, True

    # ------------------------------------------------------------------ helpers
    def _failed(self, request: str, code: str) -> Any:
        """A response of the right type with every element the schema requires, carrying ``code``."""
        res = response_class(request)(ResponseCode=code)
        lim = self.hardware.dc_limits()
        defaults: dict[str, Callable[[], Any]] = {
            "EVSEProcessing": lambda: "Finished",
            "EVSEID": lambda: self.evse_id,
            "ServiceRenegotiationSupported": lambda: False,
            "EnergyTransferServiceList": self._energy_services,
            "ServiceID": lambda: 0,
            "ServiceParameterList": lambda: self._parameter_list(),
            "AuthorizationServices": lambda: [AUTH_EIM],
            "CertificateInstallationService": lambda: False,
            "EIM_ASResAuthorizationMode": cm.EIM_ASResAuthorizationModeType,
            "DC_CPDResEnergyTransferMode": self._evse_dc_parameters,
            "Scheduled_SEResControlMode": lambda: self._scheduled_control_mode(lim.max_power if lim else 0.0),
            "EVSEPresentVoltage": lambda: rational(0),
            "EVSEPresentCurrent": lambda: rational(0),
            "EVSEPowerLimitAchieved": lambda: False,
            "EVSECurrentLimitAchieved": lambda: False,
            "EVSEVoltageLimitAchieved": lambda: False,
            "Scheduled_DC_CLResControlMode": dc.Scheduled_DC_CLResControlModeType,
            "EVSECheckOutStatus": lambda: "Completed",
            # CertificateInstallationRes (never offered): placeholders of the sizes the schema fixes
            "CPSCertificateChain": lambda: cm.CertificateChainType(Certificate=b"\x00"),
            "SignedInstallationData": lambda: cm.SignedInstallationDataType(
                Id="id1", ContractCertificateChain=cm.ContractCertificateChainType(
                    Certificate=b"\x00", SubCertificates=cm.SubCertificatesType([b"\x00"])),
                ECDHCurve="SECP521", DHPublicKey=bytes(133), SECP521_EncryptedPrivateKey=bytes(94)),
            "RemainingContractCertificateChains": lambda: 0,
        }
        for name, make in defaults.items():
            if hasattr(res, name) and getattr(res, name) in (None, []):  # lists default to empty, not None
                setattr(res, name, make())
        return res

    def _fail(self, request: str, code: str) -> Handled:
        return self._failed(request, code), True, self.state

    def _overdue(self, phase: str, limit: float) -> bool:
        """True once ``phase`` has lasted longer than ``limit`` (measured from its first request)."""
        started = self.phase_started.setdefault(phase, self._now)
        return self._now - started > limit

    def _iso20_code(self, code: str) -> str:
        """A decision's code as a -20 ResponseCode ("Ongoing" passes): a code from another protocol is a bug
        somewhere else, answered with FAILED rather than a message that cannot be encoded."""
        if code in _CODES or code == "Ongoing":
            return code
        self.notes.append(f"{code!r} is no ISO 15118-20 ResponseCode; answered FAILED")
        return "FAILED"

    def _energy_services(self) -> cm.ServiceListType:
        return cm.ServiceListType([cm.ServiceType(ServiceID=SERVICE_DC, FreeService=self.free_service)])

    def _parameter_list(self) -> cm.ServiceParameterListType:
        offered = DC_PARAMETER_SETS
        if self._paused is not None:  # a resumed session keeps its parameter set
            offered = {k: v for k, v in offered.items() if k == self._paused.service[1]}
        return cm.ServiceParameterListType([
            cm.ParameterSetType(set_id, [cm.ParameterType(Name=n, intValue=v) for n, v in params.items()])
            for set_id, params in offered.items()])

    def _evse_dc_parameters(self) -> dc.DC_CPDResEnergyTransferModeType:
        lim = self.hardware.dc_limits()
        assert lim is not None, "a -20 DC session runs only on a board with DC"
        return dc.DC_CPDResEnergyTransferModeType(
            EVSEMaximumChargePower=rational(lim.max_power),
            EVSEMinimumChargePower=rational(lim.min_current * lim.min_voltage),
            EVSEMaximumChargeCurrent=rational(lim.max_current), EVSEMinimumChargeCurrent=rational(lim.min_current),
            EVSEMaximumVoltage=rational(lim.max_voltage), EVSEMinimumVoltage=rational(lim.min_voltage))

    def _scheduled_control_mode(self, power: float) -> cm.Scheduled_SEResControlModeType:
        """One schedule: ``power`` for a day. It carries a flat one-level price schedule: [V2G20-2176] asks
        for one, EVerest's testers agreed to ignore that, and Josev's EV refuses a ChargingSchedule without."""
        anchor = int(self.wall_clock())
        power_schedule = cm.PowerScheduleType(
            TimeAnchor=anchor, PowerScheduleEntries=cm.PowerScheduleEntryListType(
                [cm.PowerScheduleEntryType(Duration=SCHEDULE_DURATION_S, Power=rational(power))]))
        prices = cm.PriceLevelScheduleType(
            Id="price1", TimeAnchor=anchor, PriceScheduleID=1, NumberOfPriceLevels=1,
            PriceLevelScheduleEntries=cm.PriceLevelScheduleEntryListType(
                [cm.PriceLevelScheduleEntryType(Duration=SCHEDULE_DURATION_S, PriceLevel=0)]))
        schedule = cm.ChargingScheduleType(PowerSchedule=power_schedule, PriceLevelSchedule=prices)
        return cm.Scheduled_SEResControlModeType([cm.ScheduleTupleType(ScheduleTupleID=SCHEDULE_ID,
                                                                       ChargingSchedule=schedule)])

    def _max_voltage(self) -> float:
        """The highest output voltage allowed: the charger's, and never above what the car said it takes."""
        lim = self.hardware.dc_limits()
        assert lim is not None
        return min(lim.max_voltage, self.ev_limits.max_voltage) if self.ev_limits else lim.max_voltage

    def _control_mode(self) -> int | None:
        if self.selected is None:
            return None
        return DC_PARAMETER_SETS[self.selected[1]]["ControlMode"]

    def _meter(self) -> ct.MeterInfoType:
        self._last_meter = ct.MeterInfoType(MeterID=self.meter_id,
                                            ChargedEnergyReadingWh=round(self.hardware.energy_wh()),
                                            MeterTimestamp=int(self.wall_clock()))
        return self._last_meter

    def _receipt_required(self) -> bool:
        """PnC only: ask for a signed MeteringConfirmation every ``receipt_interval`` seconds."""
        if self.auth_service != AUTH_PNC or self._receipt_due_at is None or self._receipt_pending:
            return False
        if self._now < self._receipt_due_at:
            return False
        self._receipt_pending = True
        return True

    # ------------------------------------------------------------------ session, authorization, services
    def _SessionSetupReq(self, msg: cm.SessionSetupReqType) -> Handled:
        assert self.request_header is not None
        self.evcc_id = msg.EVCCID or ""
        paused = None
        if self.paused_sessions is not None and self.request_header.SessionID != NO_SESSION:
            paused = self.paused_sessions.take(self.request_header.SessionID, self.evcc_id)
        if paused is None:
            return cm.SessionSetupResType(ResponseCode="OK_NewSessionEstablished", EVSEID=self.evse_id), False, \
                "SessionSetupReq"
        # the same SessionID again joins the paused session: the same authorization and service
        self.session_id, self.resumed, self._paused = paused.session_id, True, paused
        return cm.SessionSetupResType(ResponseCode="OK_OldSessionJoined", EVSEID=self.evse_id), False, \
            "SessionSetupReq"

    def _AuthorizationSetupReq(self, msg: cm.AuthorizationSetupReqType) -> Handled:
        offered = [AUTH_PNC, AUTH_EIM] if self.pnc is not None else [AUTH_EIM]
        if self._paused is not None:
            offered = [s for s in offered if s == self._paused.auth_service] or offered
        self._offered_auth = offered
        installs = self._installs_certificates()
        res = cm.AuthorizationSetupResType(ResponseCode="OK", AuthorizationServices=list(offered),
                                           CertificateInstallationService=installs)
        if AUTH_PNC in offered:  # the schema has room for one mode's parameters: PnC's challenge when offered
            self._gen_challenge = os.urandom(16)
            res.PnC_ASResAuthorizationMode = cm.PnC_ASResAuthorizationModeType(GenChallenge=self._gen_challenge)
        else:
            res.EIM_ASResAuthorizationMode = cm.EIM_ASResAuthorizationModeType()
        return res, False, "AuthorizationSetupReq:install" if installs else "AuthorizationSetupReq"

    def _installs_certificates(self) -> bool:
        """Offer CertificateInstallationService only when the PlugAndCharge answers -20 installations."""
        return self.pnc is not None and self.pnc.installs_certificates("iso20")

    def _CertificateInstallationReq(self, msg: cm.CertificateInstallationReqType) -> Handled:
        """Pass the request and its signature on; the answer (signed by the CPS) goes back as it is."""
        assert self.pnc is not None and self.request_header is not None and self.timers is not None
        answer = self.pnc.install_certificate("iso20", msg, self.request_header.Signature)
        code = self._iso20_code(answer.response_code)
        if code == "Ongoing":  # the backend is still deciding: OK, Ongoing, with placeholder contents
            if self._overdue("certificate installation", self.timers.ongoing):
                return self._fail("CertificateInstallationReq", "FAILED")
            res = self._failed("CertificateInstallationReq", "OK")
            res.EVSEProcessing = "Ongoing"
            return res, False, "CertificateInstallationReq:Ongoing"
        self.phase_started.pop("certificate installation", None)
        if code.startswith("FAILED"):  # e.g. FAILED_SignatureError: the request was not the OEM key's
            return self._fail("CertificateInstallationReq", code)
        if code.startswith("WARNING"):  # e.g. an OEM chain that does not verify: the car may go on with EIM
            self.notes.append(f"certificate installation refused: {code}")
            return self._failed("CertificateInstallationReq", code), False, "CertificateInstallationReq"
        if answer.body is None:  # "OK" without a contract to send
            return self._fail("CertificateInstallationReq", "FAILED")
        res = answer.body
        res.ResponseCode = code
        res.Header = ct.MessageHeaderType(Signature=answer.signature)  # SessionID and TimeStamp follow in handle()
        return res, False, "CertificateInstallationReq"

    def _AuthorizationReq(self, msg: cm.AuthorizationReqType) -> Handled:
        selected = str(msg.SelectedAuthorizationService)
        if selected not in self._offered_auth:
            code = "WARNING_AuthorizationSelectionInvalid"
        elif selected == AUTH_EIM:
            code = "OK" if msg.EIM_AReqAuthorizationMode is not None else "WARNING_AuthorizationSelectionInvalid"
        else:
            code = self._iso20_code(self._check_contract_authorization(msg))
        if code == "Ongoing":
            if self._overdue("authorization", self.timers.ongoing):  # type: ignore[union-attr]
                return self._fail("AuthorizationReq", "FAILED")
            return cm.AuthorizationResType(ResponseCode="OK", EVSEProcessing="Ongoing"), False, \
                "AuthorizationReq:Ongoing"
        if code.startswith("FAILED"):
            return self._fail("AuthorizationReq", code)
        res = cm.AuthorizationResType(ResponseCode=code, EVSEProcessing="Finished")
        if code.startswith("WARNING"):
            self.notes.append(f"{selected} authorization refused: {code}")
            return res, False, "AuthorizationReq:refused"
        self.auth_service = selected
        return res, False, "AuthorizationReq"

    def _check_contract_authorization(self, msg: cm.AuthorizationReqType) -> str:
        """The challenge this session issued, a valid contract chain, the signature with its key, the backend."""
        assert self.pnc is not None and self.request_header is not None
        mode = msg.PnC_AReqAuthorizationMode
        if mode is None:
            return "WARNING_AuthorizationSelectionInvalid"
        if self.state == "AuthorizationReq:Ongoing" and mode == self._pnc_request:  # the backend is deciding
            assert self.contract is not None
            return self.pnc.authorize("iso20", self.contract)
        if self._gen_challenge is None or mode.GenChallenge != self._gen_challenge:
            return "WARNING_ChallengeInvalid"
        chain = mode.ContractCertificateChain
        subs = tuple(chain.SubCertificates.Certificate) if chain is not None and chain.SubCertificates else ()
        leaf = chain.Certificate if chain is not None else None
        self.contract = ContractChain(leaf or b"", subs, emaid_of_leaf(leaf))
        code = self.pnc.check_contract("iso20", self.contract, self.wall_clock())
        if code != "OK":
            return code
        if not mode.Id or self.request_header.Signature is None:
            return "FAILED_SignatureError"
        signed = [exi.Fragment(COMMON_NS, "PnC_AReqAuthorizationMode", mode)]
        code = self.pnc.check_signature("iso20", self.request_header.Signature, signed, self.contract)
        if code != "OK":
            return code
        self._pnc_request = mode
        return self.pnc.authorize("iso20", self.contract)

    def _ServiceDiscoveryReq(self, msg: cm.ServiceDiscoveryReqType) -> Handled:
        # no value-added services yet: SupportedServiceIDs (the car's VAS filter) changes nothing
        res = cm.ServiceDiscoveryResType(ResponseCode="OK", ServiceRenegotiationSupported=False,
                                         EnergyTransferServiceList=self._energy_services())
        return res, False, "ServiceDiscoveryReq"

    def _ServiceDetailReq(self, msg: cm.ServiceDetailReqType) -> Handled:
        if msg.ServiceID != SERVICE_DC:
            res = self._failed("ServiceDetailReq", "FAILED_ServiceIDInvalid")
            res.ServiceID = msg.ServiceID
            return res, True, self.state
        return cm.ServiceDetailResType(ResponseCode="OK", ServiceID=SERVICE_DC,
                                       ServiceParameterList=self._parameter_list()), False, "ServiceDetailReq"

    def _ServiceSelectionReq(self, msg: cm.ServiceSelectionReqType) -> Handled:
        chosen = msg.SelectedEnergyTransferService
        if chosen is None or chosen.ServiceID not in ENERGY_SERVICE_IDS:  # e.g. a value-added service's ID
            return self._fail("ServiceSelectionReq", "FAILED_NoEnergyTransferServiceSelected")
        offered = {(SERVICE_DC, set_id) for set_id in DC_PARAMETER_SETS}
        if self._paused is not None:
            offered = {self._paused.service}
        vas = msg.SelectedVASList.SelectedService if msg.SelectedVASList else []
        if (chosen.ServiceID, chosen.ParameterSetID) not in offered or vas:  # no VAS offered
            return self._fail("ServiceSelectionReq", "FAILED_ServiceSelectionInvalid")
        self.selected = (chosen.ServiceID, chosen.ParameterSetID)
        return cm.ServiceSelectionResType(ResponseCode="OK"), False, "ServiceSelectionReq"

    # ------------------------------------------------------------------ charge parameters, schedule
    def _DC_ChargeParameterDiscoveryReq(self, msg: dc.DC_ChargeParameterDiscoveryReqType) -> Handled:
        p, lim = msg.DC_CPDReqEnergyTransferMode, self.hardware.dc_limits()
        if p is None or lim is None:  # BPT parameters for the plain DC service, or no DC here
            return self._fail("DC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        ev = EvDcLimits(from_rational(p.EVMaximumChargePower), from_rational(p.EVMaximumChargeCurrent),
                        from_rational(p.EVMaximumVoltage), from_rational(p.EVMinimumVoltage))
        if ev.max_voltage < lim.min_voltage or ev.min_voltage > lim.max_voltage or ev.max_current <= 0 \
                or ev.max_power <= 0:
            return self._fail("DC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        self.ev_limits = ev
        res = dc.DC_ChargeParameterDiscoveryResType(ResponseCode="OK",
                                                    DC_CPDResEnergyTransferMode=self._evse_dc_parameters())
        return res, False, "DC_ChargeParameterDiscoveryReq"

    def _ScheduleExchangeReq(self, msg: cm.ScheduleExchangeReqType) -> Handled:
        if self._control_mode() != CONTROL_MODE_SCHEDULED or msg.Scheduled_SEReqControlMode is None:
            return self._fail("ScheduleExchangeReq", "FAILED")  # not the control mode agreed in ServiceSelection
        lim = self.hardware.dc_limits()
        assert lim is not None and self.ev_limits is not None
        self.schedule_power = min(lim.max_power, self.ev_limits.max_power)
        res = cm.ScheduleExchangeResType(ResponseCode="OK", EVSEProcessing="Finished",
                                         Scheduled_SEResControlMode=self._scheduled_control_mode(self.schedule_power))
        return res, False, "ScheduleExchangeReq:renegotiated" if self._renegotiating else "ScheduleExchangeReq"

    # ------------------------------------------------------------------ DC: isolation, pre-charge, power
    def _DC_CableCheckReq(self, msg: dc.DC_CableCheckReqType) -> Handled:
        assert self.timers is not None
        self.hardware.start_isolation_check()
        isolation = self.hardware.isolation()
        done = isolation in ("Valid", "Warning")  # a warning still allows charging (IEC 61851-23)
        if isolation == "Fault":
            self.hardware.set_dc_target(0, 0)
            return self._fail("DC_CableCheckReq", "FAILED")
        if not done and self._overdue("cable check", self.timers.cable_check):
            return self._fail("DC_CableCheckReq", "FAILED")
        if done:
            self.hardware.set_dc_target(0, 0)
        res = dc.DC_CableCheckResType(ResponseCode="OK", EVSEProcessing="Finished" if done else "Ongoing")
        return res, False, "DC_CableCheckReq" if done else "DC_CableCheckReq:Ongoing"

    def _DC_PreChargeReq(self, msg: dc.DC_PreChargeReqType) -> Handled:
        assert self.timers is not None
        lim = self.hardware.dc_limits()
        # the table ensures the isolation check came first; the board has the last word
        if self.hardware.isolation() not in ("Valid", "Warning") or lim is None:
            return self._fail("DC_PreChargeReq", "FAILED")
        if self._overdue("pre-charge", self.timers.pre_charge):
            return self._fail("DC_PreChargeReq", "FAILED")
        self.hardware.set_dc_target(min(from_rational(msg.EVTargetVoltage), self._max_voltage()),
                                    min(PRE_CHARGE_MAX_CURRENT, lim.max_current))
        v, _ = self.hardware.present()
        return dc.DC_PreChargeResType(ResponseCode="OK", EVSEPresentVoltage=rational(v)), False, "DC_PreChargeReq"

    def _PowerDeliveryReq(self, msg: cm.PowerDeliveryReqType) -> Handled:
        progress = str(msg.ChargeProgress)
        if progress == "Standby":  # not offered: the car goes on (Start) or stops
            return cm.PowerDeliveryResType(ResponseCode="WARNING_StandbyNotAllowed"), False, self.state
        if progress in _PROGRESS_FROM and self.state not in _PROGRESS_FROM[progress]:
            return self._fail("PowerDeliveryReq", "FAILED_SequenceError")
        ok = cm.PowerDeliveryResType(ResponseCode="OK")
        if progress == "Stop":  # power off (the output discharges for the welding check)
            self.power_off()
            return ok, False, "PowerDeliveryReq:Stop"
        if progress == "ScheduleRenegotiation":  # no current until the new schedule is agreed; the voltage holds
            self.hardware.set_dc_target(self.hardware.present()[0], 0)
            self.renegotiations += 1
            self._renegotiating = True
            return ok, False, "PowerDeliveryReq:ScheduleRenegotiation"
        if str(msg.EVProcessing) == "Ongoing":  # Start announced, the car's power profile not ready yet
            return ok, False, "PowerDeliveryReq:EVOngoing"
        code = self._check_power_profile(msg.EVPowerProfile)
        if code != "OK":
            return self._fail("PowerDeliveryReq", code)
        self.hardware.set_contactors(True)
        self._renegotiating = False
        if self.receipt_interval is not None and self._receipt_due_at is None:  # first receipt one interval in
            self._receipt_due_at = self._now + self.receipt_interval
        return ok, False, "PowerDeliveryReq:Start"

    def _check_power_profile(self, profile: cm.EVPowerProfileType | None) -> str:
        """The car's plan must name the offered schedule and stay within its power, charging only."""
        if profile is None:  # optional in practice: the schedule then stands as offered
            return "OK"
        if profile.Scheduled_EVPPTControlMode is None:
            return "FAILED_EVPowerProfileInvalid"
        if profile.Scheduled_EVPPTControlMode.SelectedScheduleTupleID != SCHEDULE_ID:
            return "FAILED_ScheduleSelectionInvalid"
        entries = profile.EVPowerProfileEntries.EVPowerProfileEntry if profile.EVPowerProfileEntries else []
        limit = (self.schedule_power or 0.0) * 1.001
        if any(not 0 <= from_rational(e.Power) <= limit for e in entries):
            return "FAILED_EVPowerProfileInvalid"
        return "OK"

    def _DC_ChargeLoopReq(self, msg: dc.DC_ChargeLoopReqType) -> Handled:
        mode, lim = msg.Scheduled_DC_CLReqControlMode, self.hardware.dc_limits()
        if mode is None or lim is None:  # not the control mode agreed
            return self._fail("DC_ChargeLoopReq", "FAILED")
        tv, ti = from_rational(mode.EVTargetVoltage), from_rational(mode.EVTargetCurrent)
        power_limit = min(lim.max_power, self.schedule_power or lim.max_power)
        if mode.EVMaximumChargePower is not None:
            power_limit = min(power_limit, from_rational(mode.EVMaximumChargePower))
        current_limit = lim.max_current
        if mode.EVMaximumChargeCurrent is not None:
            current_limit = min(current_limit, from_rational(mode.EVMaximumChargeCurrent))
        voltage = min(tv, self._max_voltage())
        current = min(ti, current_limit, power_limit / voltage if voltage > 0 else current_limit)
        self.hardware.set_dc_target(voltage, max(0.0, current))
        v, i = self.hardware.present()
        status, meter = None, None
        if self.stop_requested:
            status = ct.EVSEStatusType(NotificationMaxDelay=0, EVSENotification="Terminate")
        elif self._receipt_required():
            status = ct.EVSEStatusType(NotificationMaxDelay=0, EVSENotification="MeteringConfirmation")
            meter = self._meter()
        if meter is None and msg.MeterInfoRequested:
            meter = self._meter()
        res = dc.DC_ChargeLoopResType(
            ResponseCode="OK", EVSEStatus=status, MeterInfo=meter, EVSEPresentCurrent=rational(i),
            EVSEPresentVoltage=rational(v), EVSEPowerLimitAchieved=tv * ti > power_limit,
            EVSECurrentLimitAchieved=ti > current_limit, EVSEVoltageLimitAchieved=tv > lim.max_voltage,
            Scheduled_DC_CLResControlMode=dc.Scheduled_DC_CLResControlModeType(
                EVSEMaximumChargePower=rational(power_limit), EVSEMaximumChargeCurrent=rational(current_limit),
                EVSEMaximumVoltage=rational(lim.max_voltage)))
        return res, False, "DC_ChargeLoopReq"

    def _MeteringConfirmationReq(self, msg: cm.MeteringConfirmationReqType) -> Handled:
        assert self.request_header is not None
        if not self._receipt_pending or self.pnc is None or self.contract is None:
            return self._fail("MeteringConfirmationReq", "FAILED_SequenceError")
        data, sent = msg.SignedMeteringData, self._last_meter
        matches = (data is not None and sent is not None and data.SessionID == self.session_id
                   and data.MeterInfo is not None and data.MeterInfo.MeterID == sent.MeterID
                   and data.MeterInfo.ChargedEnergyReadingWh == sent.ChargedEnergyReadingWh)
        code = "FAILED_MeteringSignatureNotValid"
        if matches and data.Id and self.request_header.Signature is not None:
            signed = [exi.Fragment(COMMON_NS, "SignedMeteringData", data)]
            if self.pnc.check_signature("iso20", self.request_header.Signature, signed, self.contract) == "OK":
                code = "OK"
        if code != "OK":
            return self._fail("MeteringConfirmationReq", code)
        assert self.receipt_interval is not None
        self._receipt_pending, self._receipt_due_at = False, self._now + self.receipt_interval
        self.receipts += 1
        return cm.MeteringConfirmationResType(ResponseCode="OK"), False, "MeteringConfirmationReq"

    def _DC_WeldingDetectionReq(self, msg: dc.DC_WeldingDetectionReqType) -> Handled:
        v, _ = self.hardware.present()
        return dc.DC_WeldingDetectionResType(ResponseCode="OK", EVSEPresentVoltage=rational(v)), False, \
            "DC_WeldingDetectionReq"

    def _SessionStopReq(self, msg: cm.SessionStopReqType) -> Handled:
        kind = str(msg.ChargingSession)
        if kind == "ServiceRenegotiation":  # ServiceDiscoveryRes said ServiceRenegotiationSupported=false
            return self._fail("SessionStopReq", "FAILED_NoServiceRenegotiationSupported")
        if kind == "Pause" and self.paused_sessions is not None and self.selected and self.auth_service:
            self.paused_sessions.store(Iso20PausedSession(self.session_id, self.evcc_id, self.auth_service,
                                                          self.selected))
            return cm.SessionStopResType(ResponseCode="OK"), True, "paused"
        return cm.SessionStopResType(ResponseCode="OK"), True, "stopped"
