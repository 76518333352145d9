"""ISO 15118-2 charger session, sans-IO: AC and DC, ExternalPayment (EIM) and Contract (PnC),
renegotiation, pause and resume.

Same shape as every session (:class:`edge.v2g.session.SessionCore`): ``handle(payload_type, payload, now)
-> (payload type, response, ended)``. Which request may follow
which is the table ``NEXT``: the whole protocol in one place. A state is the last request, qualified
where the next step depends on what it said (payment option, energy transfer mode, charge progress).
Contract decisions (chain, signatures, backend authorization, certificate installation) are asked of a
:class:`~edge.v2g.pnc.PlugAndCharge`; the session owns the GenChallenge and the ResponseCodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import exi
from edge.controller import CarNeeds
from edge.v2g.dc import DcSession
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.pnc import ContractChain, PlugAndCharge
from edge.v2g.session import AnswerLater, PausedSessions, ReceiptSchedule
from edge.v2g.timers import ISO2 as ISO2_TIMERS
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType

_STOP = "SessionStopReq"
NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"ServiceDiscoveryReq", _STOP},
    "ServiceDiscoveryReq": {"ServiceDetailReq", "PaymentServiceSelectionReq", _STOP},
    "ServiceDetailReq": {"ServiceDetailReq", "PaymentServiceSelectionReq", _STOP},
    "PaymentServiceSelectionReq:ExternalPayment": {"AuthorizationReq", _STOP},
    "PaymentServiceSelectionReq:Contract": {"PaymentDetailsReq", "CertificateInstallationReq",
                                            "CertificateUpdateReq", _STOP},
    "CertificateInstallationReq": {"PaymentDetailsReq", _STOP},
    "CertificateUpdateReq": {"PaymentDetailsReq", _STOP},
    "PaymentDetailsReq": {"AuthorizationReq", _STOP},
    "AuthorizationReq:Ongoing": {"AuthorizationReq", _STOP},
    "AuthorizationReq": {"ChargeParameterDiscoveryReq", _STOP},
    # DC
    "ChargeParameterDiscoveryReq:DC": {"ChargeParameterDiscoveryReq", "CableCheckReq", _STOP},
    # pre-charge only once the isolation check has finished (a car that pre-charges earlier is refused)
    "CableCheckReq:Ongoing": {"CableCheckReq", _STOP},
    "CableCheckReq": {"PreChargeReq", _STOP},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Start:DC": {"CurrentDemandReq", "PowerDeliveryReq", _STOP},
    "CurrentDemandReq": {"CurrentDemandReq", "MeteringReceiptReq", "PowerDeliveryReq", _STOP},
    "MeteringReceiptReq:DC": {"CurrentDemandReq", "PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Stop:DC": {"WeldingDetectionReq", _STOP},
    "WeldingDetectionReq": {"WeldingDetectionReq", _STOP},
    # AC
    "ChargeParameterDiscoveryReq:AC": {"ChargeParameterDiscoveryReq", "PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Start:AC": {"ChargingStatusReq", "PowerDeliveryReq", _STOP},
    "ChargingStatusReq": {"ChargingStatusReq", "MeteringReceiptReq", "PowerDeliveryReq", _STOP},
    "MeteringReceiptReq:AC": {"ChargingStatusReq", "PowerDeliveryReq", _STOP},
    "PowerDeliveryReq:Stop:AC": {_STOP},
    # renegotiation (AC or DC): a new schedule, then straight back to PowerDelivery Start
    "PowerDeliveryReq:Renegotiate": {"ChargeParameterDiscoveryReq", _STOP},
    "ChargeParameterDiscoveryReq:renegotiated": {"ChargeParameterDiscoveryReq", "PowerDeliveryReq", _STOP},
}
#: where PowerDelivery may say what (the table lets PowerDeliveryReq in; its ChargeProgress decides)
_PROGRESS_FROM = {
    "Start": {"PreChargeReq", "ChargeParameterDiscoveryReq:AC", "ChargeParameterDiscoveryReq:renegotiated"},
    "Renegotiate": {"CurrentDemandReq", "ChargingStatusReq", "MeteringReceiptReq:DC", "MeteringReceiptReq:AC"},
}

MSG_BODY_NS = "urn:iso:15118:2:2013:MsgBody"
AC_MODES = ("AC_single_phase_core", "AC_three_phase_core")
#: a -2 schedule covers 24 h (the car renegotiates or charges on with the last entry after that)
SCHEDULE_HORIZON_S = 86400
CHARGE_SERVICE_ID = 1
CERTIFICATE_SERVICE_ID = 2  # ServiceCategory ContractCertificate: installation and update


def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


value = from_physical


@dataclass(frozen=True, slots=True)
class PausedSession:
    """What a paused session keeps until the car resumes it (SessionSetupReq with its SessionID)."""

    session_id: bytes
    evcc_id: bytes
    payment_option: str
    energy_mode: str | None
    schedule_id: int


#: the paused -2 sessions of one charging point (pause/resume)
Iso2PausedSessions = PausedSessions[PausedSession]


@dataclass
class Iso2Session(DcSession):
    PROTO = "iso2"
    B = b
    T = t
    MESSAGE = V2G_Message
    BODY = BodyType
    HEADER = MessageHeaderType
    NEXT = NEXT
    DEFAULT_TIMERS = ISO2_TIMERS

    evse_id: str = "DE*EDG*E0001*1"
    meter_id: str = "edge-sim"
    schedule_id: int = 1
    pnc: PlugAndCharge | None = None  # offers Contract when set
    receipt_interval: float | None = None  # Contract: ask for a signed MeteringReceipt this often (s)
    paused_sessions: PausedSessions[PausedSession] | None = None  # pause/resume, kept by the charging point
    wall_clock: Callable[[], float] = time.time  # certificate validity and EVSETimeStamp
    # what happened, for the caller and the tests
    renegotiations: int = 0
    resumed: bool = False
    evcc_id: bytes = b""
    payment_option: str | None = None
    energy_mode: str | None = None
    contract: ContractChain | None = None
    receipts: int = 0
    ev_max_current: float = 0.0  # AC: the car's EVMaxCurrent
    schedule_pmax: float | None = None  # W, the PMax of the schedule the car was given (its first entry)
    schedule_plan: list[tuple[float, float]] = field(default_factory=list)  # (session time, PMax) given to the car
    max_schedule_entries: int = 24  # what the car said it takes (MaxEntriesSAScheduleTuple), within the schema's
    _gen_challenge: bytes | None = None
    _last_meter: t.MeterInfoType | None = None
    _offered_payment: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.receipts_due = ReceiptSchedule(self.receipt_interval)

    # ------------------------------------------------------------------ what is offered
    def payment_options(self) -> list[str]:
        return ["Contract", "ExternalPayment"] if self.pnc is not None else ["ExternalPayment"]

    def energy_modes(self) -> list[str]:
        modes = ["DC_extended"] if self.hardware.dc_limits() is not None else []
        ac = self.hardware.ac_limits()
        if ac is not None:
            modes += ["AC_three_phase_core", "AC_single_phase_core"] if ac.phases == 3 else ["AC_single_phase_core"]
        return modes

    def _charge_service(self) -> t.ChargeServiceType:
        modes = [self.energy_mode] if self.resumed and self.energy_mode else self.energy_modes()
        return t.ChargeServiceType(CHARGE_SERVICE_ID, None, "EVCharging", None, False,
                                   t.SupportedEnergyTransferModeType(modes))

    def _charger_max_power(self) -> float:
        """The charger's power limit for the car's energy mode."""
        if self.energy_mode in AC_MODES:
            ac = self.power.ac_limits()
            return ac.max_power if self.energy_mode == "AC_three_phase_core" else ac.max_power / ac.phases
        return self.power.dc_limits().max_power

    def _max_power(self) -> float:
        """The charger's power limit for the car's energy mode, within the controller's command."""
        return self._schedule_power(self._charger_max_power())

    def _schedule(self) -> t.SAScheduleListType:
        """The PMax schedule: the charger's power limit within the controller's commands over the next 24 h
        (the CSMS's composite schedule when it has profiles; one entry otherwise), at most as many entries as
        the car takes (MaxEntriesSAScheduleTuple); renegotiated when the controller allows more than it says."""
        self.told()
        charger = self._charger_max_power()
        plan = self.controller.schedule(self._now, SCHEDULE_HORIZON_S, self.max_schedule_entries)
        self.schedule_plan = [(self._now + start, max(0.0, min(charger, command.max_w))) for start, command in plan]
        self.schedule_pmax = self.schedule_plan[0][1]
        entries = [t.PMaxScheduleEntryType(t.RelativeTimeIntervalType(int(start - self._now),
                                                                       SCHEDULE_HORIZON_S if n == len(plan) - 1
                                                                       else None), None, pv(pmax, "W"))
                   for n, (start, pmax) in enumerate(self.schedule_plan)]
        return t.SAScheduleListType([t.SAScheduleTupleType(self.schedule_id, t.PMaxScheduleType(entries))])

    def _scheduled_pmax(self) -> float | None:
        """The PMax the car's schedule gives now (the entry in force)."""
        if not self.schedule_plan:
            return self.schedule_pmax
        return next((pmax for start, pmax in reversed(self.schedule_plan) if start <= self._now),
                    self.schedule_plan[0][1])

    def _ac_status(self, notification: str = "None") -> t.AC_EVSEStatusType:
        return t.AC_EVSEStatusType(self.notification_delay(notification), notification, False)

    def _ac_current(self) -> float:
        """The current per phase an AC car may draw now: the charger's, within the controller's command."""
        ac = self.power.ac_limits()
        phases = ac.phases if self.energy_mode == "AC_three_phase_core" else 1
        return max(0.0, min(ac.max_current, self.command().max_w / (ac.nominal_voltage * phases)))

    def _ac_parameter(self) -> t.AC_EVSEChargeParameterType:
        ac = self.power.ac_limits()
        return t.AC_EVSEChargeParameterType(self._ac_status(), pv(ac.nominal_voltage, "V"), pv(ac.max_current, "A"))

    def _meter(self) -> t.MeterInfoType:
        self._last_meter = t.MeterInfoType(self.meter_id, round(self.hardware.energy_wh()), None, None,
                                           int(self.wall_clock()))
        return self._last_meter

    def _receipt_required(self) -> bool:
        """Contract only (V2G2-691): ask for a signed receipt every ``receipt_interval`` seconds."""
        return self.receipts_due.required(self._now, contract=self.payment_option == "Contract")

    def _complete_failed(self, res_name: str, res: Any) -> None:
        if hasattr(res, "EVSEID") and res.EVSEID is None:
            res.EVSEID = self.evse_id
        if hasattr(res, "SAScheduleTupleID") and res.SAScheduleTupleID is None:
            res.SAScheduleTupleID = self.schedule_id
        has_ac, has_dc = hasattr(res, "AC_EVSEStatus"), hasattr(res, "DC_EVSEStatus")
        if has_ac and (self.energy_mode in AC_MODES or not has_dc):
            res.AC_EVSEStatus = self._ac_status()
            if has_dc:
                res.DC_EVSEStatus = None
        if res_name == "ServiceDiscoveryRes":
            res.PaymentOptionList = t.PaymentOptionListType(self.payment_options())
            res.ChargeService = self._charge_service()
        elif res_name == "ServiceDetailRes":
            res.ServiceID = 0
        elif res_name == "PaymentDetailsRes":
            res.GenChallenge, res.EVSETimeStamp = bytes(16), int(self.wall_clock())
        elif res_name == "ChargeParameterDiscoveryRes":
            if self.energy_mode in AC_MODES:
                res.AC_EVSEChargeParameter, res.DC_EVSEChargeParameter = self._ac_parameter(), None
            elif self.hardware.dc_limits() is not None:
                res.DC_EVSEChargeParameter = self._evse_parameter()
            else:
                res.AC_EVSEChargeParameter, res.DC_EVSEChargeParameter = self._ac_parameter(), None
        elif res_name in ("CertificateInstallationRes", "CertificateUpdateRes"):
            res.SAProvisioningCertificateChain = t.CertificateChainType(None, b"")
            res.ContractSignatureCertChain = t.CertificateChainType("id2", b"")
            res.ContractSignatureEncryptedPrivateKey = t.ContractSignatureEncryptedPrivateKeyType("id3", b"")
            res.DHpublickey = t.DiffieHellmanPublickeyType("id4", b"")
            res.eMAID = t.EMAIDType("id5", "0" * 14)  # the schema wants 14-15 characters even here
            if res_name == "CertificateUpdateRes":
                res.RetryCounter = 0

    # ------------------------------------------------------------------ session, services, payment
    def _SessionSetupReq(self, req: b.SessionSetupReqType):
        self.evcc_id = req.EVCCID or b""
        paused = self.paused_sessions.take(self.header.SessionID, self.evcc_id) if self.paused_sessions else None
        if paused is None:
            return b.SessionSetupResType("OK_NewSessionEstablished", self.evse_id, int(self.wall_clock())), False, \
                "SessionSetupReq"
        # V2G2-756: the same SessionID again joins the paused session: same payment and energy mode
        self.session_id, self.resumed, self.schedule_id = paused.session_id, True, paused.schedule_id
        self.payment_option, self.energy_mode = paused.payment_option, paused.energy_mode
        return b.SessionSetupResType("OK_OldSessionJoined", self.evse_id, int(self.wall_clock())), False, \
            "SessionSetupReq"

    def _ServiceDiscoveryReq(self, req: b.ServiceDiscoveryReqType):
        self._offered_payment = [self.payment_option] if self.resumed and self.payment_option \
            else self.payment_options()
        services = None
        if "Contract" in self._offered_payment:
            services = t.ServiceListType([t.ServiceType(CERTIFICATE_SERVICE_ID, "Certificate", "ContractCertificate",
                                                        None, True)])
        res = b.ServiceDiscoveryResType("OK", t.PaymentOptionListType(self._offered_payment), self._charge_service(),
                                        services)
        return res, False, "ServiceDiscoveryReq"

    def _ServiceDetailReq(self, req: b.ServiceDetailReqType):
        if req.ServiceID == CHARGE_SERVICE_ID:
            return b.ServiceDetailResType("OK", CHARGE_SERVICE_ID), False, "ServiceDetailReq"
        if req.ServiceID == CERTIFICATE_SERVICE_ID and "Contract" in self._offered_payment:
            sets = [t.ParameterSetType(i, [t.ParameterType("Service", stringValue=name)])
                    for i, name in ((1, "Installation"), (2, "Update"))]
            return b.ServiceDetailResType("OK", CERTIFICATE_SERVICE_ID, t.ServiceParameterListType(sets)), False, \
                "ServiceDetailReq"
        return self._fail("ServiceDetailReq", "FAILED_ServiceIDInvalid")

    def _PaymentServiceSelectionReq(self, req: b.PaymentServiceSelectionReqType):
        services = [s.ServiceID for s in req.SelectedServiceList.SelectedService] if req.SelectedServiceList else []
        option = str(req.SelectedPaymentOption)
        if option not in self._offered_payment:
            return self._fail("PaymentServiceSelectionReq", "FAILED_PaymentSelectionInvalid")
        if CHARGE_SERVICE_ID not in services:
            return self._fail("PaymentServiceSelectionReq", "FAILED_NoChargeServiceSelected")
        known = {CHARGE_SERVICE_ID} | ({CERTIFICATE_SERVICE_ID} if option == "Contract" else set())
        if not set(services) <= known:
            return self._fail("PaymentServiceSelectionReq", "FAILED_ServiceSelectionInvalid")
        self.payment_option = option
        return b.PaymentServiceSelectionResType("OK"), False, f"PaymentServiceSelectionReq:{option}"

    def _CertificateInstallationReq(self, req: b.CertificateInstallationReqType):
        answer = self.pnc.install_certificate(self.PROTO, req, self.header.Signature, raw=self.raw_request)
        if answer.response_code == "Ongoing":  # -2 has no Ongoing here: the car's connection waits
            raise AnswerLater
        if answer.response_code != "OK" or answer.body is None:
            return self._fail("CertificateInstallationReq", answer.response_code)
        self.response_signature = answer.signature
        return answer.body, False, "CertificateInstallationReq"

    def _CertificateUpdateReq(self, req: b.CertificateUpdateReqType):
        answer = self.pnc.update_certificate(self.PROTO, req, self.header.Signature, raw=self.raw_request)
        if answer.response_code == "Ongoing":
            raise AnswerLater
        if answer.response_code != "OK" or answer.body is None:
            return self._fail("CertificateUpdateReq", answer.response_code)
        self.response_signature = answer.signature
        return answer.body, False, "CertificateUpdateReq"

    def _PaymentDetailsReq(self, req: b.PaymentDetailsReqType):
        chain = req.ContractSignatureCertChain
        subs = tuple(chain.SubCertificates.Certificate) if chain.SubCertificates else ()
        self.contract = ContractChain(chain.Certificate, subs, req.eMAID)
        code = self.pnc.check_contract(self.PROTO, self.contract, self.wall_clock())
        if code != "OK":
            return self._fail("PaymentDetailsReq", code)
        self._gen_challenge = self.random(16)
        return b.PaymentDetailsResType("OK", self._gen_challenge, int(self.wall_clock())), False, "PaymentDetailsReq"

    def _AuthorizationReq(self, req: b.AuthorizationReqType):
        if self.payment_option == "Contract":
            code = self._check_contract_authorization(req)
            if code == "Ongoing":
                if self._overdue("authorization", self.timers.ongoing):
                    return self._fail("AuthorizationReq", "FAILED")
                return b.AuthorizationResType("OK", "Ongoing"), False, "AuthorizationReq:Ongoing"
            if code != "OK":
                return self._fail("AuthorizationReq", code)
        if self.state != "AuthorizationReq":  # once per session, not for each repeated request
            contract = self.payment_option == "Contract" and self.contract is not None
            self.controller.authorized(self.car(), "PnC" if contract else "EIM",
                                       self.contract.emaid if contract and self.contract else None)
        return b.AuthorizationResType("OK", "Finished"), False, "AuthorizationReq"

    def _check_contract_authorization(self, req: b.AuthorizationReqType) -> str:
        """The challenge this session issued, signed with the contract key, and the backend's word."""
        if self.state != "AuthorizationReq:Ongoing":  # a repeated request while the backend decides
            if req.GenChallenge != self._gen_challenge or not req.Id:
                return "FAILED_ChallengeInvalid"
            if self.header.Signature is None:
                return "FAILED_SignatureError"
            signed = [exi.Fragment(MSG_BODY_NS, "AuthorizationReq", req)]
            code = self.pnc.check_signature(self.PROTO, self.header.Signature, signed, self.contract)
            if code != "OK":
                return code
        return self.pnc.authorize(self.PROTO, self.contract)

    # ------------------------------------------------------------------ charge parameters, power
    def _ChargeParameterDiscoveryReq(self, req: b.ChargeParameterDiscoveryReqType):
        if req.MaxEntriesSAScheduleTuple:  # the car's limit on PMaxSchedule entries (the schema allows 1024)
            self.max_schedule_entries = max(1, min(int(req.MaxEntriesSAScheduleTuple), 1024))
        mode = str(req.RequestedEnergyTransferMode)
        renegotiated = self.state in ("PowerDeliveryReq:Renegotiate", "ChargeParameterDiscoveryReq:renegotiated")
        if mode not in self.energy_modes() or (renegotiated and mode != self.energy_mode):
            return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongEnergyTransferMode")
        self.energy_mode = mode
        if mode in AC_MODES:
            p, ac = req.AC_EVChargeParameter, self.power.ac_limits()
            if p is None or value(p.EVMaxCurrent) < ac.min_current:
                return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
            self.ev_max_current = value(p.EVMaxCurrent)
            phases = ac.phases if mode == "AC_three_phase_core" else 1
            self.controller.car_needs(CarNeeds(self.PROTO, "AC", "scheduled",
                                               value(p.EVMaxVoltage) * self.ev_max_current * phases,
                                               departure_time=p.DepartureTime, target_energy_wh=value(p.EAmount)),
                                      self.car())
            res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, self._ac_parameter())
            following = "ChargeParameterDiscoveryReq:AC"
        else:
            p, lim = req.DC_EVChargeParameter, self.power.dc_limits()
            if p is None or p.EVMaximumVoltageLimit is None or p.EVMaximumCurrentLimit is None:
                return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
            self._note_ev_limits(p)
            assert self.ev_limits is not None
            if self.ev_limits.max_voltage < lim.min_voltage:
                return self._fail("ChargeParameterDiscoveryReq", "FAILED_WrongChargeParameter")
            res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, None,
                                                   self._evse_parameter())
            following = "ChargeParameterDiscoveryReq:DC"
        return res, False, "ChargeParameterDiscoveryReq:renegotiated" if renegotiated else following

    def _PowerDeliveryReq(self, req: b.PowerDeliveryReqType):
        progress = str(req.ChargeProgress)
        ac = self.energy_mode in AC_MODES
        if progress in _PROGRESS_FROM and self.state not in _PROGRESS_FROM[progress]:
            return self._fail("PowerDeliveryReq", "FAILED_SequenceError")
        if progress == "Start" and req.SAScheduleTupleID != self.schedule_id:
            return self._fail("PowerDeliveryReq", "FAILED_TariffSelectionInvalid")
        if progress == "Start" and not self._profile_fits(req.ChargingProfile):
            return self._fail("PowerDeliveryReq", "FAILED_ChargingProfileInvalid")
        if progress == "Start" and req.ChargingProfile is not None:  # the car's plan, for the CSMS (K15)
            self.controller.schedule_chosen(self.car(), [(float(e.ChargingProfileEntryStart or 0),
                                                          value(e.ChargingProfileEntryMaxPower))
                                                         for e in req.ChargingProfile.ProfileEntry
                                                         if e.ChargingProfileEntryMaxPower is not None])
        if progress == "Start" and self.charger_stops:  # the charger asked for the stop: no power again
            return self._fail("PowerDeliveryReq", "FAILED")
        if progress == "Start":
            if ac:
                self.power.ac_start(min(self._ac_current(), self.ev_max_current))
            self.power.contactors(True)
            self.controller.energy_transfer_started(self._now, self.car())
            self.receipts_due.charging_started(self._now)
        elif progress == "Stop":  # power off (DC: the output discharges for the welding check)
            self.power_off()
        else:  # Renegotiate: no current until the new schedule is agreed (DC holds its voltage)
            self.power.hold(ac)
            self.renegotiations += 1
        status = {"AC_EVSEStatus": self._ac_status()} if ac else {"DC_EVSEStatus": self._status()}
        res = b.PowerDeliveryResType("OK", **status)
        following = f"PowerDeliveryReq:{progress}"
        return res, False, following if progress == "Renegotiate" else f"{following}:{'AC' if ac else 'DC'}"

    def _schedule_outdated(self) -> bool:
        scheduled = self._scheduled_pmax()
        return scheduled is not None and self._max_power() > scheduled * 1.05 + 1.0

    def _profile_fits(self, profile: t.ChargingProfileType | None) -> bool:
        """A charging profile the car sends must stay within the schedule's PMax (V2G2-293)."""
        if profile is None:
            return True
        if not self.schedule_plan:
            limit = self._max_power()
            return all(value(e.ChargingProfileEntryMaxPower) <= limit * 1.001 for e in profile.ProfileEntry)
        start = self.schedule_plan[0][0]

        def pmax_at(offset: float) -> float:  # the schedule entry in force ``offset`` s after its start
            return next((p for t0, p in reversed(self.schedule_plan) if t0 - start <= offset), self.schedule_plan[0][1])

        return all(value(e.ChargingProfileEntryMaxPower) <= pmax_at(e.ChargingProfileEntryStart or 0) * 1.001
                   for e in profile.ProfileEntry)

    def _ChargingStatusReq(self, req: b.ChargingStatusReqType):
        # the meter says what flowed; the car manages its own draw within the current it is given
        notification = self._loop_notification(renegotiation=True)
        if notification == "StopCharging" and self.stop_ignored():
            return self._fail("ChargingStatusReq", "FAILED")
        current = 0.0 if notification == "StopCharging" else min(self._ac_current(), self.ev_max_current)
        self.power.ac_start(current)
        res = b.ChargingStatusResType("OK", self.evse_id, self.schedule_id, pv(current, "A"), self._meter(),
                                      self._receipt_required(), self._ac_status(notification))
        return res, False, "ChargingStatusReq"

    def _CurrentDemandReq(self, req: b.CurrentDemandReqType):
        lim = self.power.dc_limits()
        notification = self._loop_notification(renegotiation=True)
        if notification == "StopCharging" and self.stop_ignored():
            return self._fail("CurrentDemandReq", "FAILED")
        setpoint = self.power.dc_stopping() if notification == "StopCharging" else self._current_demand(req)
        v, i = self.hardware.present()
        res = b.CurrentDemandResType(
            "OK", self._status(notification=notification), pv(v, "V"), pv(i, "A"), setpoint.current_limited,
            setpoint.voltage_limited, setpoint.power_limited, pv(lim.max_voltage, "V"), pv(setpoint.max_current, "A"),
            pv(setpoint.max_power, "W"), self.evse_id, self.schedule_id, self._meter(), self._receipt_required())
        return res, False, "CurrentDemandReq"

    def _MeteringReceiptReq(self, req: b.MeteringReceiptReqType):
        ac = self.energy_mode in AC_MODES
        if not self.receipts_due.pending:
            return self._fail("MeteringReceiptReq", "FAILED_SequenceError")
        sent = self._last_meter
        matches = (req.SessionID == self.session_id and req.MeterInfo is not None and sent is not None
                   and req.MeterInfo.MeterReading == sent.MeterReading and req.MeterInfo.MeterID == sent.MeterID)
        code = "FAILED_MeteringSignatureNotValid"
        if matches and req.Id and self.header.Signature is not None:
            signed = [exi.Fragment(MSG_BODY_NS, "MeteringReceiptReq", req)]
            if self.pnc.check_signature(self.PROTO, self.header.Signature, signed, self.contract) == "OK":
                code = "OK"
        if code != "OK":
            return self._fail("MeteringReceiptReq", code)
        self.receipts_due.received(self._now)
        self.receipts += 1
        status = {"AC_EVSEStatus": self._ac_status()} if ac else {"DC_EVSEStatus": self._status()}
        return b.MeteringReceiptResType("OK", **status), False, f"MeteringReceiptReq:{'AC' if ac else 'DC'}"

    def _SessionStopReq(self, req: b.SessionStopReqType):
        if str(req.ChargingSession) == "Pause" and self.paused_sessions is not None and self.payment_option:
            self.paused_sessions.store(PausedSession(self.session_id, self.evcc_id, self.payment_option,
                                                    self.energy_mode, self.schedule_id))
            return b.SessionStopResType("OK"), True, "paused"
        return b.SessionStopResType("OK"), True, "stopped"
