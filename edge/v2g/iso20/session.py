"""ISO 15118-20 charger session, sans-IO: one session for every energy service this charger offers (DC,
DC_BPT, AC, AC_BPT), in Scheduled and Dynamic control mode, EIM and Plug & Charge, metering confirmation,
schedule renegotiation, pause and resume, and the charger-initiated notifications (Terminate,
ScheduleRenegotiation).

``Iso20Session.handle(payload_type, payload, now) -> (response payload type, response | None, ended)``,
the contract of every session (:class:`edge.v2g.session.SessionCore`, which holds the loop). Which
request may follow which is the table ``NEXT``: the whole protocol in one place, for AC and DC alike.
Its entries are *steps*: a request's name without its AC_/DC_ prefix ("ChargeLoopReq" is AC_ChargeLoopReq
in an AC session, DC_ChargeLoopReq in a DC one); a request of the other kind is out of sequence. The SAP
namespace (``protocol``: iso20-ac or iso20-dc) fixes the kind; the service chosen in ServiceSelection
(plain or BPT) and its control mode decide which control-mode elements the handlers read and write.
DC-only steps (cable check, pre-charge, welding detection) exist only in DC sessions: AC requests never
have those names, and AC PowerDelivery Start may follow ScheduleExchange directly (``_START_FROM``).

-20 has no V2G_Message envelope: each message is its own root element in one of three schemas
(CommonMessages 0x8002, AC 0x8003, DC 0x8004), the header carries a TimeStamp, and the ResponseCodes
have three classes (OK_*, WARNING_*: the session goes on, FAILED*: it ends). Every power decision goes
through :class:`~edge.v2g.power.PowerStage`; what the car may get comes from the charging point's
:class:`~edge.controller.ChargingController`. Export only on a BPT service of an authorised session.

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

Per-phase AC values: the base element (EVSEMaximumChargePower, EVSETargetActivePower, ...) carries the
total over all phases; a car that adds _L2/_L3 values gets them summed (they then mean one phase each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import exi
from edge.controller import CarNeeds, PowerCommand
from edge.pki.folder import emaid_of_leaf
from edge.v2g.pnc import ContractChain, PlugAndCharge
from edge.v2g.power import CarAcLimits, CarDcLimits, DcSetpoint, SignQuirks
from edge.v2g.session import PausedSessions, ReceiptSchedule, Request, SessionCore
from edge.v2g.timers import ISO20 as ISO20_TIMERS
from edge.v2g.timers import SessionTimers
from exi.model import iso20_ac as ac
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc
from exi.model.iso20_commontypes import responseCodeType

from .messages import (
    BPT_CHANNEL_UNIFIED,
    BPT_SERVICES,
    COMMON_NS,
    CONNECTOR_AC_SINGLE_PHASE,
    CONNECTOR_AC_THREE_PHASE,
    CONNECTOR_DC_EXTENDED,
    CONTROL_MODE_DYNAMIC,
    CONTROL_MODE_SCHEDULED,
    ENERGY_SERVICES,
    GENERATOR_MODE_GRID_FOLLOWING,
    ISLANDING_DETECTION_ACTIVE,
    MOBILITY_NEEDS_BY_EVCC,
    MOBILITY_NEEDS_BY_EVCC_AND_SECC,
    NO_SESSION,
    PAYLOAD_TYPES,
    PRICING_NONE,
    REQUESTS,
    SCHEMA_OF_PAYLOAD_TYPE,
    SERVICE_AC,
    SERVICE_AC_BPT,
    SERVICE_DC,
    SERVICE_DC_BPT,
    from_rational,
    header,
    rational,
    request_name,
    response_class,
)

log = logging.getLogger("edge.v2g")

_STOP = "SessionStopReq"
#: step -> the steps that may follow (a step is a request name without its AC_/DC_ prefix)
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
    "ServiceSelectionReq": {"ChargeParameterDiscoveryReq", _STOP},
    "ChargeParameterDiscoveryReq": {"ScheduleExchangeReq", _STOP},
    # DC: PowerDelivery here only to stop (Start needs cable check and pre-charge); AC: Start or Stop
    "ScheduleExchangeReq": {"CableCheckReq", "PowerDeliveryReq", _STOP},
    # pre-charge only once the isolation check has finished (a car that pre-charges earlier is refused)
    "CableCheckReq:Ongoing": {"CableCheckReq", _STOP},
    "CableCheckReq": {"PreChargeReq", _STOP},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", _STOP},
    # the car is still working out its power profile (EVProcessing=Ongoing): PowerDelivery again
    "PowerDeliveryReq:EVOngoing": {"PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Start": {"ChargeLoopReq", "PowerDeliveryReq", _STOP},
    "ChargeLoopReq": {"ChargeLoopReq", "MeteringConfirmationReq", "PowerDeliveryReq", _STOP},
    "MeteringConfirmationReq": {"ChargeLoopReq", "PowerDeliveryReq", _STOP},
    # schedule renegotiation: a new ScheduleExchange, then straight back to PowerDelivery Start
    "PowerDeliveryReq:ScheduleRenegotiation": {"ScheduleExchangeReq", _STOP},
    "ScheduleExchangeReq:renegotiated": {"PowerDeliveryReq", _STOP},
    # DC: welding detection after the stop; AC goes straight to SessionStop (no AC_ welding request exists)
    "PowerDeliveryReq:Stop": {"WeldingDetectionReq", _STOP},
    "WeldingDetectionReq": {"WeldingDetectionReq", _STOP},
}
#: where PowerDelivery Start may come from, per kind (the table lets PowerDeliveryReq in; this decides)
_START_FROM = {
    "dc": frozenset({"PreChargeReq", "PowerDeliveryReq:EVOngoing", "ScheduleExchangeReq:renegotiated"}),
    "ac": frozenset({"ScheduleExchangeReq", "PowerDeliveryReq:EVOngoing", "ScheduleExchangeReq:renegotiated"}),
}
_RENEGOTIATION_FROM = frozenset({"PowerDeliveryReq:Start", "ChargeLoopReq", "MeteringConfirmationReq"})
#: the steps after which the 0.5 s charge-loop sequence timeout applies ([V2G20-1500], [V2G20-1502])
LOOP_STATES = frozenset({"ChargeLoopReq"})
#: request name -> step name (the kind prefix dropped); the kind is checked in _decode
STEPS: dict[str, str] = {name: name[3:] if name[:3] in ("AC_", "DC_") else name for name in REQUESTS}

_CODES = frozenset(c.value for c in responseCodeType)
#: what the car may pick in AuthorizationReq, in our order of preference
AUTH_PNC, AUTH_EIM = "PnC", "EIM"
SCHEDULE_ID = 1
SCHEDULE_DURATION_S = 86_400  # one entry for a day: the charger's limit until the CSMS's profiles join
#: the parameter sets offered per service (Tables 205-210): ParameterSetID 1 Scheduled, 2 Dynamic
PARAMETER_SET_OF_MODE = {CONTROL_MODE_SCHEDULED: 1, CONTROL_MODE_DYNAMIC: 2}
MODE_OF_PARAMETER_SET = {set_id: mode for mode, set_id in PARAMETER_SET_OF_MODE.items()}
CONTROL_MODE_NAMES = {CONTROL_MODE_SCHEDULED: "scheduled", CONTROL_MODE_DYNAMIC: "dynamic"}

Handled = tuple[Any, bool, str]  # (response without header, session ends, next state)


def _phases_total(values: list[Any]) -> float | None:
    """An AC value and its optional _L2/_L3 companions as one total (see the module docstring)."""
    if values[0] is None:
        return None
    return sum(from_rational(v) for v in values if v is not None)


def _ac_value(obj: Any, name: str) -> float | None:
    return _phases_total([getattr(obj, name, None), getattr(obj, name + "_L2", None), getattr(obj, name + "_L3", None)])


@dataclass(frozen=True, slots=True)
class Iso20PausedSession:
    """What a paused -20 session keeps until the car resumes it (SessionSetupReq with its SessionID)."""

    session_id: bytes
    evcc_id: str
    auth_service: str
    service: tuple[int, int]  # (ServiceID, ParameterSetID) selected


#: the paused -20 sessions of one charging point (pause/resume)
Iso20PausedSessions = PausedSessions[Iso20PausedSession]


#: what the car said in DC_ChargeParameterDiscoveryReq (kept under its old name for callers)
EvDcLimits = CarDcLimits


@dataclass
class Iso20Session(SessionCore):
    NEXT: ClassVar[dict[str, set[str]]] = NEXT
    DEFAULT_TIMERS: ClassVar[SessionTimers] = ISO20_TIMERS
    LOOP_STATES: ClassVar[frozenset[str]] = LOOP_STATES

    protocol: str = "iso20-dc"  # the SAP namespace chosen: iso20-dc or iso20-ac
    evse_id: str = "DE*EDG*E0001*1"
    meter_id: str = "edge-sim"
    pnc: PlugAndCharge | None = None  # offers PnC when set
    receipt_interval: float | None = None  # PnC: ask for a signed MeteringConfirmation this often (s)
    paused_sessions: PausedSessions[Iso20PausedSession] | None = None  # pause/resume, kept by the charging point
    free_service: bool = False  # ServiceList FreeService of the energy services
    bpt: bool = True  # offer the BPT services when the board can export
    sign_quirks: SignQuirks = field(default_factory=SignQuirks)  # cars declared to write discharge values otherwise
    control_modes: tuple[int, ...] = (CONTROL_MODE_SCHEDULED, CONTROL_MODE_DYNAMIC)  # offered, in this order
    wall_clock: Callable[[], float] = time.time  # header TimeStamps, certificate validity
    stop_requested: bool = False  # set by the charger (a fault): the next ChargeLoopRes says Terminate
    # what happened, for the caller and the tests
    evcc_id: str = ""
    resumed: bool = False
    auth_service: str | None = None
    contract: ContractChain | None = None
    selected: tuple[int, int] | None = None  # (ServiceID, ParameterSetID)
    ev_limits: CarDcLimits | None = None  # DC
    ev_ac_limits: CarAcLimits | None = None  # AC
    schedule_power: float | None = None  # W, the schedule agreed in ScheduleExchange (scheduled mode)
    last_target: float | None = None  # W, the last target told the car (dynamic) or set for it
    receipts: int = 0
    renegotiations: int = 0
    ev_clock_offset: float | None = None  # the car's TimeStamp minus our clock (cars' clocks drift: noted, not refused)
    request_header: ct.MessageHeaderType | None = None  # the request's header (its Signature, for PnC)
    _offered_auth: list[str] = field(default_factory=list)
    _gen_challenge: bytes | None = None
    _pnc_request: cm.PnC_AReqAuthorizationModeType | None = None  # the one checked, while the backend decides
    _paused: Iso20PausedSession | None = None  # the paused session this one resumed
    _renegotiating: bool = False
    _last_meter: ct.MeterInfoType | None = None
    _charger_notified: str | None = None  # the stop/pause notification the car was given

    def __post_init__(self) -> None:
        if self.protocol not in ("iso20-dc", "iso20-ac"):
            raise ValueError(f"an ISO 15118-20 session is iso20-dc or iso20-ac, not {self.protocol!r}")
        super().__post_init__()
        self.receipts_due = ReceiptSchedule(self.receipt_interval)

    @property
    def kind(self) -> str:
        """"ac" or "dc": what the SAP namespace allows."""
        return self.protocol.removeprefix("iso20-")

    @property
    def service(self) -> int | None:
        return self.selected[0] if self.selected else None

    @property
    def bidirectional(self) -> bool:
        return self.service in BPT_SERVICES

    def describe(self) -> str:
        service = ENERGY_SERVICES.get(self.service or 0)
        mode = CONTROL_MODE_NAMES.get(self.control_mode() or 0)
        return ", ".join(x for x in (f"{service} {mode}" if service else None, self.auth_service) if x)

    def control_mode(self) -> int | None:
        """The ControlMode of the parameter set selected (None before ServiceSelection)."""
        return MODE_OF_PARAMETER_SET[self.selected[1]] if self.selected else None

    # ------------------------------------------------------------------ the loop's protocol parts
    def _decode(self, payload_type: int, payload: bytes) -> Request | None:
        schema = SCHEMA_OF_PAYLOAD_TYPE.get(payload_type)
        if schema is None:  # ACDP, WPT, ... or SAP again: nothing this session can answer in
            return None
        try:
            msg = exi.decode(schema, payload, deviations=self.request_deviations)
        except exi.DecodeError:
            return None
        name = request_name(msg)
        if name is None or REQUESTS[name] != schema or msg.Header is None:
            return None
        self.request_header = msg.Header
        if msg.Header.TimeStamp is not None:
            self.ev_clock_offset = msg.Header.TimeStamp - self.wall_clock()
        step = STEPS[name]
        if schema != "iso20-common" and schema != self.protocol:
            step = name  # an AC request in a DC session (or the other way round): no step of this table
        return Request(name, step, msg.Header.SessionID, msg, PAYLOAD_TYPES[schema])

    def _encode(self, request: Request, response: Any) -> bytes:
        signature = response.Header.Signature if response.Header is not None else None  # a signed response keeps it
        response.Header = header(self.session_id, self.wall_clock(), signature)
        return exi.encode(REQUESTS[request.name], response)

    def request_stop(self) -> None:
        """The charger wants to end the charge: the next ChargeLoopRes tells the car (Terminate)."""
        self.stop_requested = True

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
            "ServiceParameterList": lambda: cm.ServiceParameterListType([cm.ParameterSetType(0, [
                cm.ParameterType(Name="ControlMode", intValue=CONTROL_MODE_SCHEDULED)])]),
            "AuthorizationServices": lambda: [AUTH_EIM],
            "CertificateInstallationService": lambda: False,
            "EIM_ASResAuthorizationMode": cm.EIM_ASResAuthorizationModeType,
            "DC_CPDResEnergyTransferMode": lambda: self._placeholder_dc_parameters(),
            "AC_CPDResEnergyTransferMode": lambda: ac.AC_CPDResEnergyTransferModeType(
                EVSEMaximumChargePower=rational(0), EVSEMinimumChargePower=rational(0),
                EVSENominalFrequency=rational(50)),
            "Scheduled_SEResControlMode": lambda: self._scheduled_control_mode(lim.max_power if lim else 0.0),
            "EVSEPresentVoltage": lambda: rational(0),
            "EVSEPresentCurrent": lambda: rational(0),
            "EVSEPowerLimitAchieved": lambda: False,
            "EVSECurrentLimitAchieved": lambda: False,
            "EVSEVoltageLimitAchieved": lambda: False,
            "Scheduled_DC_CLResControlMode": dc.Scheduled_DC_CLResControlModeType,
            "Scheduled_AC_CLResControlMode": ac.Scheduled_AC_CLResControlModeType,
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

    def _placeholder_dc_parameters(self) -> dc.DC_CPDResEnergyTransferModeType:
        zero = rational(0)
        return dc.DC_CPDResEnergyTransferModeType(zero, zero, zero, zero, zero, zero)

    def _iso20_code(self, code: str) -> str:
        """A decision's code as a -20 ResponseCode ("Ongoing" passes): a code from another protocol is a bug
        somewhere else, answered with FAILED rather than a message that cannot be encoded."""
        if code in _CODES or code == "Ongoing":
            return code
        self.notes.append(f"{code!r} is no ISO 15118-20 ResponseCode; answered FAILED")
        return "FAILED"

    # ------------------------------------------------------------------ what is offered
    def offered_services(self) -> list[int]:
        """The energy services this session offers: the SAP kind's, on the power path the board has,
        BPT first when the board can export (the car picks; cars that can discharge prefer it)."""
        if self.kind == "dc":
            lim = self.hardware.dc_limits()
            plain, bpt, present = SERVICE_DC, SERVICE_DC_BPT, lim is not None
            can_export = lim is not None and lim.bidirectional
        else:
            ac_lim = self.hardware.ac_limits()
            plain, bpt, present = SERVICE_AC, SERVICE_AC_BPT, ac_lim is not None
            can_export = ac_lim is not None and ac_lim.bidirectional
        if not present:
            return []
        services = [bpt] if self.bpt and can_export else []
        services.append(plain)
        if self._paused is not None:  # a resumed session keeps its service
            services = [s for s in services if s == self._paused.service[0]]
        return services

    def _parameter_sets(self, service: int) -> dict[int, dict[str, int]]:
        """ParameterSetID -> parameters for ``service`` (Tables 205-210): one set per control mode offered."""
        sets: dict[int, dict[str, int]] = {}
        for mode in self.control_modes:
            needs = MOBILITY_NEEDS_BY_EVCC if mode == CONTROL_MODE_SCHEDULED else MOBILITY_NEEDS_BY_EVCC_AND_SECC
            if service in (SERVICE_AC, SERVICE_AC_BPT):
                lim = self.power.ac_limits()
                params = {"Connector": CONNECTOR_AC_THREE_PHASE if lim.phases == 3 else CONNECTOR_AC_SINGLE_PHASE,
                          "ControlMode": mode, "EVSENominalVoltage": round(lim.nominal_voltage),
                          "MobilityNeedsMode": needs, "Pricing": PRICING_NONE}
            else:
                params = {"Connector": CONNECTOR_DC_EXTENDED, "ControlMode": mode, "MobilityNeedsMode": needs,
                          "Pricing": PRICING_NONE}
            if service in BPT_SERVICES:
                params |= {"BPTChannel": BPT_CHANNEL_UNIFIED, "GeneratorMode": GENERATOR_MODE_GRID_FOLLOWING}
            if service == SERVICE_AC_BPT:
                params["GridCodeIslandingDetectionMethod"] = ISLANDING_DETECTION_ACTIVE
            sets[PARAMETER_SET_OF_MODE[mode]] = params
        if self._paused is not None and self._paused.service[0] == service:  # a resumed session keeps its set
            sets = {k: v for k, v in sets.items() if k == self._paused.service[1]}
        return sets

    def _energy_services(self) -> cm.ServiceListType:
        return cm.ServiceListType([cm.ServiceType(ServiceID=s, FreeService=self.free_service)
                                   for s in self.offered_services() or [SERVICE_DC if self.kind == "dc"
                                                                         else SERVICE_AC]])

    def _parameter_list(self, service: int) -> cm.ServiceParameterListType:
        return cm.ServiceParameterListType([
            cm.ParameterSetType(set_id, [cm.ParameterType(Name=n, intValue=v) for n, v in params.items()])
            for set_id, params in self._parameter_sets(service).items()])

    def _scheduled_control_mode(self, power: float) -> cm.Scheduled_SEResControlModeType:
        """One schedule: ``power`` for a day (import positive; negative: the car discharges, BPT only). It
        carries a flat one-level price schedule: [V2G20-2176] asks for one, EVerest's testers agreed to
        ignore that, and Josev's EV refuses a ChargingSchedule without."""
        anchor = int(self.wall_clock())
        entry = cm.PowerScheduleEntryType(Duration=SCHEDULE_DURATION_S, Power=rational(power))
        power_schedule = cm.PowerScheduleType(
            TimeAnchor=anchor, PowerScheduleEntries=cm.PowerScheduleEntryListType([entry]))
        prices = cm.PriceLevelScheduleType(
            Id="price1", TimeAnchor=anchor, PriceScheduleID=1, NumberOfPriceLevels=1,
            PriceLevelScheduleEntries=cm.PriceLevelScheduleEntryListType(
                [cm.PriceLevelScheduleEntryType(Duration=SCHEDULE_DURATION_S, PriceLevel=0)]))
        schedule = cm.ChargingScheduleType(PowerSchedule=power_schedule, PriceLevelSchedule=prices)
        return cm.Scheduled_SEResControlModeType([cm.ScheduleTupleType(ScheduleTupleID=SCHEDULE_ID,
                                                                       ChargingSchedule=schedule)])

    def _report_power_profile(self, profile: cm.EVPowerProfileType | None) -> None:
        """The car's plan (its EVPowerProfile: durations and powers), for the CSMS (K15)."""
        entries = profile.EVPowerProfileEntries.EVPowerProfileEntry if profile and profile.EVPowerProfileEntries else []
        periods, start = [], 0.0
        for entry in entries:
            if entry.Power is not None:
                periods.append((start, from_rational(entry.Power)))
            start += entry.Duration or 0
        self.controller.schedule_chosen(self.car(), periods)

    def _meter(self) -> ct.MeterInfoType:
        self._last_meter = ct.MeterInfoType(MeterID=self.meter_id,
                                            ChargedEnergyReadingWh=round(self.hardware.energy_wh()),
                                            BPT_DischargedEnergyReadingWh=round(self.hardware.energy_exported_wh())
                                            if self.bidirectional else None,
                                            MeterTimestamp=int(self.wall_clock()))
        return self._last_meter

    def _receipt_required(self) -> bool:
        """PnC only: ask for a signed MeteringConfirmation every ``receipt_interval`` seconds."""
        return self.receipts_due.required(self._now, contract=self.auth_service == AUTH_PNC)

    # ------------------------------------------------------------------ session, authorization, services
    def _SessionSetupReq(self, msg: cm.SessionSetupReqType) -> Handled:
        assert self.request_header is not None
        self.evcc_id = msg.EVCCID or ""
        quirk = self.sign_quirks.for_car(self.evcc_id)
        if quirk is not None:  # a car declared to write discharge values the other way
            self.signs = self.power.signs = quirk
            self.notes.append(f"sign quirk for EVCCID {self.evcc_id}: {quirk}")
            log.info("car %s: sign quirk %s applied", self.evcc_id, quirk)
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
            self._gen_challenge = self.random(16)
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
        answer = self.pnc.install_certificate("iso20", msg, self.request_header.Signature, raw=self.raw_request)
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
        if self.auth_service is None:
            pnc = selected == AUTH_PNC and self.contract is not None
            self.controller.authorized(self.car(), "PnC" if pnc else "EIM",
                                       self.contract.emaid if pnc and self.contract else None)
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
        if msg.ServiceID not in self.offered_services():  # WPT, ACDP, the other kind's, a VAS: not here
            res = self._failed("ServiceDetailReq", "FAILED_ServiceIDInvalid")
            res.ServiceID = msg.ServiceID
            return res, True, self.state
        return cm.ServiceDetailResType(ResponseCode="OK", ServiceID=msg.ServiceID,
                                       ServiceParameterList=self._parameter_list(msg.ServiceID)), False, \
            "ServiceDetailReq"

    def _ServiceSelectionReq(self, msg: cm.ServiceSelectionReqType) -> Handled:
        chosen = msg.SelectedEnergyTransferService
        if chosen is None or chosen.ServiceID not in ENERGY_SERVICES:  # e.g. a value-added service's ID
            return self._fail("ServiceSelectionReq", "FAILED_NoEnergyTransferServiceSelected")
        offered = {(service, set_id) for service in self.offered_services() for set_id in self._parameter_sets(service)}
        vas = msg.SelectedVASList.SelectedService if msg.SelectedVASList else []
        if (chosen.ServiceID, chosen.ParameterSetID) not in offered or vas:  # no VAS offered
            self.notes.append(f"{ENERGY_SERVICES[chosen.ServiceID]} parameter set {chosen.ParameterSetID} "
                              "was not offered")
            return self._fail("ServiceSelectionReq", "FAILED_ServiceSelectionInvalid")
        self.selected = (chosen.ServiceID, chosen.ParameterSetID)
        if self.bidirectional:  # negotiated, and the session is authorised (ServiceSelection follows Authorization)
            self.power.allow_export()
        return cm.ServiceSelectionResType(ResponseCode="OK"), False, "ServiceSelectionReq"

    # ------------------------------------------------------------------ charge parameters, schedule
    def _ChargeParameterDiscoveryReq(self, msg: Any) -> Handled:
        if self.kind == "dc":
            return self._dc_charge_parameters(msg)
        return self._ac_charge_parameters(msg)

    def _dc_charge_parameters(self, msg: dc.DC_ChargeParameterDiscoveryReqType) -> Handled:
        bpt = self.bidirectional
        p = msg.BPT_DC_CPDReqEnergyTransferMode if bpt else msg.DC_CPDReqEnergyTransferMode
        lim = self.power.dc_limits()
        if p is None:  # the other service's parameters (plain for BPT or the other way round)
            return self._fail("DC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        signs = self.signs
        ev = CarDcLimits(max_voltage=from_rational(p.EVMaximumVoltage),
                         max_current=from_rational(p.EVMaximumChargeCurrent),
                         max_power=from_rational(p.EVMaximumChargePower), min_voltage=from_rational(p.EVMinimumVoltage),
                         max_discharge_current=signs.limit_from_wire(from_rational(p.EVMaximumDischargeCurrent),
                                                                     self.notes, "EVMaximumDischargeCurrent")
                         if bpt else 0.0,
                         max_discharge_power=signs.limit_from_wire(from_rational(p.EVMaximumDischargePower),
                                                                   self.notes, "EVMaximumDischargePower")
                         if bpt else 0.0)
        if ev.max_voltage < lim.min_voltage or ev.min_voltage > lim.max_voltage or not ev.max_current \
                or not ev.max_power or ev.max_current < 0 or ev.max_power < 0:
            return self._fail("DC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        self.ev_limits = ev
        self._tell_controller(max_charge=ev.max_power, max_discharge=ev.max_discharge_power)
        res = dc.DC_ChargeParameterDiscoveryResType(ResponseCode="OK")
        if bpt:
            res.BPT_DC_CPDResEnergyTransferMode = self._evse_dc_parameters(bpt=True)
        else:
            res.DC_CPDResEnergyTransferMode = self._evse_dc_parameters(bpt=False)
        return res, False, "ChargeParameterDiscoveryReq"

    def _evse_dc_parameters(self, bpt: bool) -> Any:
        lim = self.power.dc_limits()
        common = {"EVSEMaximumChargePower": rational(lim.max_power),
                  "EVSEMinimumChargePower": rational(lim.min_current * lim.min_voltage),
                  "EVSEMaximumChargeCurrent": rational(lim.max_current),
                  "EVSEMinimumChargeCurrent": rational(lim.min_current),
                  "EVSEMaximumVoltage": rational(lim.max_voltage), "EVSEMinimumVoltage": rational(lim.min_voltage)}
        if not bpt:
            return dc.DC_CPDResEnergyTransferModeType(**common)
        to_wire = self.signs.limit_to_wire
        return dc.BPT_DC_CPDResEnergyTransferModeType(
            **common, EVSEMaximumDischargePower=rational(to_wire(lim.max_discharge_power)),
            EVSEMinimumDischargePower=rational(0),
            EVSEMaximumDischargeCurrent=rational(to_wire(lim.max_discharge_current)),
            EVSEMinimumDischargeCurrent=rational(0))

    def _ac_charge_parameters(self, msg: ac.AC_ChargeParameterDiscoveryReqType) -> Handled:
        bpt = self.bidirectional
        p = msg.BPT_AC_CPDReqEnergyTransferMode if bpt else msg.AC_CPDReqEnergyTransferMode
        lim = self.power.ac_limits()
        max_power = _ac_value(p, "EVMaximumChargePower") if p is not None else None
        if p is None or max_power is None or max_power <= 0:
            return self._fail("AC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        discharge = self.signs.limit_from_wire(_ac_value(p, "EVMaximumDischargePower") or 0.0, self.notes,
                                               "EVMaximumDischargePower") if bpt else 0.0
        self.ev_ac_limits = CarAcLimits(max_power=max_power, min_power=_ac_value(p, "EVMinimumChargePower") or 0.0,
                                        max_discharge_power=discharge)
        if self.ev_ac_limits.min_power > lim.max_power:
            return self._fail("AC_ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
        self._tell_controller(max_charge=max_power, max_discharge=discharge)
        common = {"EVSEMaximumChargePower": rational(lim.max_power),
                  "EVSEMinimumChargePower": rational(lim.min_current * lim.nominal_voltage * lim.phases),
                  "EVSENominalFrequency": rational(50)}
        res = ac.AC_ChargeParameterDiscoveryResType(ResponseCode="OK")
        if bpt:
            res.BPT_AC_CPDResEnergyTransferMode = ac.BPT_AC_CPDResEnergyTransferModeType(
                **common, EVSEMaximumDischargePower=rational(self.signs.limit_to_wire(lim.max_discharge_power)),
                EVSEMinimumDischargePower=rational(0))
        else:
            res.AC_CPDResEnergyTransferMode = ac.AC_CPDResEnergyTransferModeType(**common)
        return res, False, "ChargeParameterDiscoveryReq"

    def _tell_controller(self, max_charge: float | None, max_discharge: float) -> None:
        assert self.service is not None
        mode = self.control_mode()
        self.controller.car_needs(CarNeeds(self.protocol, ENERGY_SERVICES[self.service],
                                           CONTROL_MODE_NAMES.get(mode or 0, "scheduled"), max_charge, max_discharge),
                                  self.car())

    def _ScheduleExchangeReq(self, msg: cm.ScheduleExchangeReqType) -> Handled:
        mode = self.control_mode()
        following = "ScheduleExchangeReq:renegotiated" if self._renegotiating else "ScheduleExchangeReq"
        if mode == CONTROL_MODE_DYNAMIC:
            req = msg.Dynamic_SEReqControlMode
            if req is None:  # not the control mode agreed in ServiceSelection
                return self._fail("ScheduleExchangeReq", "FAILED")
            needs = self.controller.needs
            if needs is not None:  # what the car needs, for the controller (and later the CSMS)
                self.controller.car_needs(CarNeeds(
                    needs.protocol, needs.service, needs.control_mode, needs.max_charge_power,
                    needs.max_discharge_power, departure_time=req.DepartureTime,
                    target_energy_wh=from_rational(req.EVTargetEnergyRequest) if req.EVTargetEnergyRequest else None,
                    min_energy_wh=from_rational(req.EVMinimumEnergyRequest) if req.EVMinimumEnergyRequest else None,
                    max_energy_wh=from_rational(req.EVMaximumEnergyRequest) if req.EVMaximumEnergyRequest else None),
                    self.car())
            self.told()
            wishes = self.controller.wishes
            departure = wishes.departure_time if wishes.departure_time is not None else req.DepartureTime
            res = cm.ScheduleExchangeResType(ResponseCode="OK", EVSEProcessing="Finished",
                                             Dynamic_SEResControlMode=cm.Dynamic_SEResControlModeType(
                                                 DepartureTime=departure, MinimumSOC=wishes.minimum_soc,
                                                 TargetSOC=wishes.target_soc))
            return res, False, following
        if msg.Scheduled_SEReqControlMode is None:
            return self._fail("ScheduleExchangeReq", "FAILED")
        self.schedule_power = self._schedule_power_now()
        self.told()
        res = cm.ScheduleExchangeResType(ResponseCode="OK", EVSEProcessing="Finished",
                                         Scheduled_SEResControlMode=self._scheduled_control_mode(self.schedule_power))
        return res, False, following

    def _schedule_outdated(self) -> bool:
        """The controller changed its mind: does the car need a new schedule? Only when the direction
        changes (charge <-> discharge) or more power is allowed than the schedule says; a lower limit is
        enforced at once through the loop response's maximum power, without a renegotiation (which some
        cars do not support: Josev's EV ends the session on one)."""
        self.told()
        new, old = self._schedule_power_now(), self.schedule_power or 0.0
        return (new < 0) != (old < 0) or abs(new) > abs(old) * 1.05 + 1.0

    def _schedule_power_now(self) -> float:
        """The schedule's power now (import positive): the controller's target when it set one (negative:
        discharge, BPT only), else the most this car may import."""
        command = self.command()
        if self.kind == "dc":
            lim = self.power.dc_limits()
            car = self.ev_limits
            charge = min(lim.max_power, car.max_power) if car is not None and car.max_power else lim.max_power
            discharge = min(lim.max_discharge_power, car.max_discharge_power if car is not None else 0.0)
        else:
            charge, discharge = self.power.ac_window(self.ev_ac_limits, None)
        charge, discharge = min(charge, max(0.0, command.max_w)), min(discharge, max(0.0, -command.min_w))
        if not self.power.export_allowed:
            discharge = 0.0
        if command.target_w is None:
            return charge
        target = command.target_w
        if target < 0 and not self.power.export_allowed:
            self.notes.append(f"the power command asked for export ({target:g} W) without BPT: scheduled 0 W")
            return 0.0
        return max(-discharge, min(target, charge))

    # ------------------------------------------------------------------ DC: isolation, pre-charge
    def _CableCheckReq(self, msg: dc.DC_CableCheckReqType) -> Handled:
        assert self.timers is not None
        verdict = self.power.cable_check(self._overdue("cable check", self.timers.cable_check))
        if verdict == "Failed":
            return self._fail("DC_CableCheckReq", "FAILED")
        done = verdict == "Finished"
        res = dc.DC_CableCheckResType(ResponseCode="OK", EVSEProcessing="Finished" if done else "Ongoing")
        return res, False, "CableCheckReq" if done else "CableCheckReq:Ongoing"

    def _PreChargeReq(self, msg: dc.DC_PreChargeReqType) -> Handled:
        assert self.timers is not None
        if self._overdue("pre-charge", self.timers.pre_charge):
            return self._fail("DC_PreChargeReq", "FAILED")
        v = self.power.pre_charge(from_rational(msg.EVTargetVoltage), self.ev_limits)
        return dc.DC_PreChargeResType(ResponseCode="OK", EVSEPresentVoltage=rational(v)), False, "PreChargeReq"

    # ------------------------------------------------------------------ power delivery
    def _PowerDeliveryReq(self, msg: cm.PowerDeliveryReqType) -> Handled:
        progress = str(msg.ChargeProgress)
        if progress == "Standby":  # not offered: the car goes on (Start) or stops
            return cm.PowerDeliveryResType(ResponseCode="WARNING_StandbyNotAllowed"), False, self.state
        if progress == "Start" and self.state not in _START_FROM[self.kind]:
            return self._fail("PowerDeliveryReq", "FAILED_SequenceError")
        if progress == "ScheduleRenegotiation" and self.state not in _RENEGOTIATION_FROM:
            return self._fail("PowerDeliveryReq", "FAILED_SequenceError")
        ok = cm.PowerDeliveryResType(ResponseCode="OK")
        if progress == "Stop":  # power off (DC: the output discharges for the welding check)
            self.power_off()
            return ok, False, "PowerDeliveryReq:Stop"
        if progress == "ScheduleRenegotiation":  # no current until the new schedule is agreed; DC voltage holds
            self.power.hold(ac=self.kind == "ac")
            self.renegotiations += 1
            self._renegotiating = True
            return ok, False, "PowerDeliveryReq:ScheduleRenegotiation"
        if self._charger_notified == "Terminate":  # the charger asked for the stop: no power again
            return self._fail("PowerDeliveryReq", "FAILED")
        if str(msg.EVProcessing) == "Ongoing":  # Start announced, the car's power profile not ready yet
            return ok, False, "PowerDeliveryReq:EVOngoing"
        code = self._check_power_profile(msg.EVPowerProfile, msg.BPT_ChannelSelection)
        if code != "OK":
            return self._fail("PowerDeliveryReq", code)
        self._report_power_profile(msg.EVPowerProfile)
        self.power.contactors(True)
        self.controller.energy_transfer_started(self._now, self.car())
        self._renegotiating = False
        self.receipts_due.charging_started(self._now)
        return ok, False, "PowerDeliveryReq:Start"

    def _check_power_profile(self, profile: cm.EVPowerProfileType | None, channel: Any) -> str:
        """The car's plan must fit the control mode agreed: scheduled: the offered schedule and its power
        (discharge only with BPT); dynamic: no schedule named. A discharge channel only with BPT."""
        if channel is not None and str(channel) == "Discharge" and not self.bidirectional:
            self.notes.append("BPT_ChannelSelection Discharge without a BPT service")
            return "FAILED_EVPowerProfileInvalid"
        if profile is None:  # optional in practice: the schedule then stands as offered
            return "OK"
        if self.control_mode() == CONTROL_MODE_DYNAMIC:
            return "OK" if profile.Dynamic_EVPPTControlMode is not None else "FAILED_EVPowerProfileInvalid"
        if profile.Scheduled_EVPPTControlMode is None:
            return "FAILED_EVPowerProfileInvalid"
        if profile.Scheduled_EVPPTControlMode.SelectedScheduleTupleID != SCHEDULE_ID:
            return "FAILED_ScheduleSelectionInvalid"
        entries = profile.EVPowerProfileEntries.EVPowerProfileEntry if profile.EVPowerProfileEntries else []
        schedule = self.schedule_power or 0.0
        high = max(schedule, 0.0) * 1.001
        low = min(schedule, 0.0) * 1.001 if self.bidirectional else 0.0
        if any(not low <= from_rational(e.Power) <= high for e in entries):
            self.notes.append(f"the car's power profile leaves the schedule ({low:g}..{high:g} W)")
            return "FAILED_EVPowerProfileInvalid"
        return "OK"

    # ------------------------------------------------------------------ the charge loop
    def _loop_status(self) -> tuple[ct.EVSEStatusType | None, ct.MeterInfoType | None]:
        """EVSEStatus of a ChargeLoopRes: the charger's stop or pause first, then a renegotiation the
        controller's change needs (scheduled mode; dynamic mode carries the new target itself), then a
        metering confirmation due."""
        notification = None
        if self.stop_requested or self.charger_stop() is not None:
            notification = "Terminate"
            if self._charger_notified != "Terminate":
                self.notes.append(f"charger asked the car to stop: {self.charger_stop() or 'request_stop'}")
        elif self.control_mode() == CONTROL_MODE_SCHEDULED and self.controller_changed() \
                and self._schedule_outdated():
            notification = "ScheduleRenegotiation"
        elif self._receipt_required():
            return ct.EVSEStatusType(NotificationMaxDelay=0, EVSENotification="MeteringConfirmation"), self._meter()
        if notification is None:
            return None, None
        self._charger_notified = notification
        return ct.EVSEStatusType(NotificationMaxDelay=self.notification_delay(notification),
                                 EVSENotification=notification), None

    def _ChargeLoopReq(self, msg: Any) -> Handled:
        status, meter = self._loop_status()
        if status is not None and status.EVSENotification == "Terminate" and self.stop_ignored():
            return self._fail(type(msg).__name__.removesuffix("Type"), "FAILED")
        if meter is None and msg.MeterInfoRequested:
            meter = self._meter()
        stopping = status is not None and status.EVSENotification == "Terminate"
        if self.kind == "dc":
            res = self._dc_loop(msg, stopping)
        else:
            res = self._ac_loop(msg, stopping)
        if res is None:  # not the control mode agreed
            return self._fail(type(msg).__name__.removesuffix("Type"), "FAILED")
        res.EVSEStatus, res.MeterInfo = status, meter
        dynamic = next((getattr(res, n) for n in ("BPT_Dynamic_DC_CLResControlMode", "Dynamic_DC_CLResControlMode",
                                                  "BPT_Dynamic_AC_CLResControlMode", "Dynamic_AC_CLResControlMode")
                        if getattr(res, n, None) is not None), None)
        if dynamic is not None:  # the charger's wishes ride along in every dynamic loop response
            wishes = self.controller.wishes
            dynamic.DepartureTime, dynamic.MinimumSOC, dynamic.TargetSOC = (
                wishes.departure_time, wishes.minimum_soc, wishes.target_soc)
        return res, False, "ChargeLoopReq"

    def _agreed_control_mode(self, msg: Any, kind: str) -> tuple[Any, Any]:
        """(scheduled, dynamic): a loop request's control-mode element of the service and mode agreed in
        ServiceSelection (BPT_ or plain); the other one, and any element not agreed, is None."""
        prefix, mode = "BPT_" if self.bidirectional else "", self.control_mode()
        scheduled = getattr(msg, f"{prefix}Scheduled_{kind}_CLReqControlMode") if mode == CONTROL_MODE_SCHEDULED \
            else None
        dynamic = getattr(msg, f"{prefix}Dynamic_{kind}_CLReqControlMode") if mode == CONTROL_MODE_DYNAMIC else None
        return scheduled, dynamic

    def _dc_loop(self, msg: dc.DC_ChargeLoopReqType, stopping: bool) -> dc.DC_ChargeLoopResType | None:
        scheduled, dynamic = self._agreed_control_mode(msg, "DC")
        if scheduled is None and dynamic is None:
            return None
        request = scheduled if scheduled is not None else dynamic
        car = self._car_dc_limits_in(request)
        command = self.command()
        if stopping:
            setpoint = self.power.dc_stopping()
        elif scheduled is not None:
            # the schedule bounds the car's own target: [0, schedule] when it charges, [schedule, 0] when it
            # discharges (a charging schedule allows no export, a discharging one no import)
            schedule = self.schedule_power if self.schedule_power is not None else command.max_w
            bounded = PowerCommand(max_w=min(command.max_w, schedule), min_w=0.0) if schedule >= 0 else \
                PowerCommand(max_w=0.0, min_w=max(command.min_w, schedule))
            setpoint = self.power.dc_demand(from_rational(scheduled.EVTargetVoltage),
                                            self.signs.target_from_wire(from_rational(scheduled.EVTargetCurrent)),
                                            car, bounded)
        else:
            setpoint = self.power.dc_dynamic(car, command)
        self.last_target = setpoint.current * max(setpoint.voltage, self.hardware.present()[0])
        v, i = self.hardware.present()
        res = dc.DC_ChargeLoopResType(
            ResponseCode="OK", EVSEPresentCurrent=rational(self.signs.target_to_wire(i)),
            EVSEPresentVoltage=rational(v),
            EVSEPowerLimitAchieved=setpoint.power_limited, EVSECurrentLimitAchieved=setpoint.current_limited,
            EVSEVoltageLimitAchieved=setpoint.voltage_limited)
        self._dc_loop_limits(res, setpoint, scheduled is not None)
        return res

    def _car_dc_limits_in(self, request: Any) -> CarDcLimits | None:
        """The car's limits as updated in a loop request (its maxima may change while it charges)."""
        base = self.ev_limits
        if base is None:
            return None
        updates: dict[str, float] = {}
        for attr, name in (("max_power", "EVMaximumChargePower"), ("max_current", "EVMaximumChargeCurrent"),
                           ("max_voltage", "EVMaximumVoltage")):
            value = getattr(request, name, None)
            if value is not None:
                updates[attr] = min(from_rational(value), getattr(base, attr) or from_rational(value))
        for attr, name in (("max_discharge_power", "EVMaximumDischargePower"),
                           ("max_discharge_current", "EVMaximumDischargeCurrent")):
            value = getattr(request, name, None)
            if value is not None:
                updates[attr] = min(self.signs.limit_from_wire(from_rational(value), self.notes, name),
                                    getattr(base, attr))
        if not updates:
            return base
        return CarDcLimits(**{"max_voltage": base.max_voltage, "max_current": base.max_current,
                              "max_power": base.max_power, "min_voltage": base.min_voltage,
                              "max_discharge_current": base.max_discharge_current,
                              "max_discharge_power": base.max_discharge_power, **updates})

    def _dc_loop_limits(self, res: dc.DC_ChargeLoopResType, setpoint: DcSetpoint, scheduled: bool) -> None:
        lim = self.power.dc_limits()
        to_wire = self.signs.limit_to_wire
        charge = {"EVSEMaximumChargePower": rational(setpoint.max_power),
                  "EVSEMaximumChargeCurrent": rational(setpoint.max_current),
                  "EVSEMaximumVoltage": rational(lim.max_voltage)}
        discharge = {"EVSEMaximumDischargePower": rational(to_wire(setpoint.max_discharge_power)),
                     "EVSEMaximumDischargeCurrent": rational(to_wire(setpoint.max_discharge_current)),
                     "EVSEMinimumVoltage": rational(lim.min_voltage)}
        bpt = self.bidirectional
        if scheduled:
            if bpt:
                res.BPT_Scheduled_DC_CLResControlMode = dc.BPT_Scheduled_DC_CLResControlModeType(**charge, **discharge)
            else:
                res.Scheduled_DC_CLResControlMode = dc.Scheduled_DC_CLResControlModeType(**charge)
            return
        # dynamic: the charger's own min/max powers bound what its power module does; the car follows the current
        charge["EVSEMinimumChargePower"] = rational(0)
        if bpt:
            res.BPT_Dynamic_DC_CLResControlMode = dc.BPT_Dynamic_DC_CLResControlModeType(
                **charge, **discharge, EVSEMinimumDischargePower=rational(0))
        else:
            res.Dynamic_DC_CLResControlMode = dc.Dynamic_DC_CLResControlModeType(**charge)

    def _ac_loop(self, msg: ac.AC_ChargeLoopReqType, stopping: bool) -> ac.AC_ChargeLoopResType | None:
        scheduled, dynamic = self._agreed_control_mode(msg, "AC")
        bpt = self.bidirectional
        request = scheduled if scheduled is not None else dynamic
        if request is None:
            return None
        car = self.ev_ac_limits
        if car is not None:  # the car's maxima may fall while it charges
            car_max = _ac_value(request, "EVMaximumChargePower")
            car_discharge = _ac_value(request, "EVMaximumDischargePower")
            car = CarAcLimits(
                min(car.max_power, car_max) if car_max is not None else car.max_power, car.min_power,
                min(car.max_discharge_power, self.signs.limit_from_wire(car_discharge, self.notes,
                                                                        "EVMaximumDischargePower"))
                if car_discharge is not None else car.max_discharge_power)
        if stopping:
            setpoint = self.power.ac_power(car, PowerCommand(max_w=0.0))
        elif scheduled is not None:
            # the car follows the schedule: the charger's target is the schedule's power, within the limits
            schedule = self.schedule_power if self.schedule_power is not None else self._schedule_power_now()
            setpoint = self.power.ac_power(car, PowerCommand(max_w=max(0.0, schedule), min_w=min(0.0, schedule),
                                                             target_w=schedule))
        else:
            setpoint = self.power.ac_power(car, self.command())
        self.last_target = setpoint.power
        target = rational(self.signs.target_to_wire(setpoint.power))
        present_power = rational(self.signs.target_to_wire(self._ac_present_power()))
        res = ac.AC_ChargeLoopResType(ResponseCode="OK", EVSETargetFrequency=None)
        if scheduled is not None:
            cls = ac.BPT_Scheduled_AC_CLResControlModeType if bpt else ac.Scheduled_AC_CLResControlModeType
            setattr(res, ("BPT_" if bpt else "") + "Scheduled_AC_CLResControlMode",
                    cls(EVSETargetActivePower=target, EVSEPresentActivePower=present_power))
        else:
            cls = ac.BPT_Dynamic_AC_CLResControlModeType if bpt else ac.Dynamic_AC_CLResControlModeType
            setattr(res, ("BPT_" if bpt else "") + "Dynamic_AC_CLResControlMode",
                    cls(EVSETargetActivePower=target, EVSEPresentActivePower=present_power))
        return res

    def _ac_present_power(self) -> float:
        lim = self.power.ac_limits()
        v, i = self.hardware.present()
        return v * i * lim.phases

    def _MeteringConfirmationReq(self, msg: cm.MeteringConfirmationReqType) -> Handled:
        assert self.request_header is not None
        if not self.receipts_due.pending or self.pnc is None or self.contract is None:
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
        self.receipts_due.received(self._now)
        self.receipts += 1
        return cm.MeteringConfirmationResType(ResponseCode="OK"), False, "MeteringConfirmationReq"

    def _WeldingDetectionReq(self, msg: dc.DC_WeldingDetectionReqType) -> Handled:
        v, _ = self.hardware.present()
        return dc.DC_WeldingDetectionResType(ResponseCode="OK", EVSEPresentVoltage=rational(v)), False, \
            "WeldingDetectionReq"

    def _SessionStopReq(self, msg: cm.SessionStopReqType) -> Handled:
        kind = str(msg.ChargingSession)
        if kind == "ServiceRenegotiation":  # ServiceDiscoveryRes said ServiceRenegotiationSupported=false
            return self._fail("SessionStopReq", "FAILED_NoServiceRenegotiationSupported")
        if kind == "Pause" and self.paused_sessions is not None and self.selected and self.auth_service:
            self.paused_sessions.store(Iso20PausedSession(self.session_id, self.evcc_id, self.auth_service,
                                                          self.selected))
            return cm.SessionStopResType(ResponseCode="OK"), True, "paused"
        return cm.SessionStopResType(ResponseCode="OK"), True, "stopped"


#: the name callers and tests knew when -20 had only DC: one session serves every service now
Iso20DcSession = Iso20Session
