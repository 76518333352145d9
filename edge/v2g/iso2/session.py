"""ISO 15118-2 DC charger session with external identification (EIM), sans-IO.

Same shape as the DIN session: ``handle(payload, now) -> (response, ended)``, the order of requests
in the table ``NEXT``. Renegotiation (PowerDelivery Renegotiate -> ChargeParameterDiscovery) is in the
table; PnC (PaymentDetails, Authorization with GenChallenge), AC and pause/resume come next.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import exi
from edge.hardware import ChargerHardware
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.timers import ISO2 as timers_ISO2
from edge.v2g.timers import SessionTimers
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType

NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"ServiceDiscoveryReq", "SessionStopReq"},
    "ServiceDiscoveryReq": {"PaymentServiceSelectionReq", "SessionStopReq"},
    "PaymentServiceSelectionReq": {"AuthorizationReq", "SessionStopReq"},
    "AuthorizationReq": {"AuthorizationReq", "ChargeParameterDiscoveryReq", "SessionStopReq"},
    "ChargeParameterDiscoveryReq": {"ChargeParameterDiscoveryReq", "CableCheckReq", "SessionStopReq"},
    "CableCheckReq": {"CableCheckReq", "PreChargeReq", "SessionStopReq"},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Start": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "CurrentDemandReq": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Renegotiate": {"ChargeParameterDiscoveryReq", "SessionStopReq"},
    # after a renegotiation the car goes straight back to PowerDelivery Start (no cable check again)
    "ChargeParameterDiscoveryReq:renegotiated": {"ChargeParameterDiscoveryReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:Stop": {"WeldingDetectionReq", "SessionStopReq"},
    "WeldingDetectionReq": {"WeldingDetectionReq", "SessionStopReq"},
}
REQUESTS = sorted({n for allowed in NEXT.values() for n in allowed})


def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


value = from_physical


@dataclass
class Iso2DcSession:
    hardware: ChargerHardware
    evse_id: str = "DE*EDG*E0001*1"
    state: str = "start"
    session_id: bytes = field(default_factory=lambda: os.urandom(8))
    done: bool = False
    schedule_id: int = 1
    timers: SessionTimers = field(default_factory=lambda: timers_ISO2)
    phase_started: dict[str, float] = field(default_factory=dict)  # first request of a timed phase
    _now: float = 0.0
    stats: dict[str, list[float]] = field(default_factory=dict)
    renegotiations: int = 0

    def handle(self, payload: bytes, now: float) -> tuple[bytes | None, bool]:
        t0 = time.perf_counter()
        try:
            msg = exi.decode("iso2", payload)
        except exi.DecodeError:
            self.done = True
            return None, True
        name = next((n for n in REQUESTS if getattr(msg.Body, n, None) is not None), None)
        if name is None:
            self.done = True
            return None, True
        req = getattr(msg.Body, name)
        self.hardware.update(now)
        self._now = now
        res_name = name[:-3] + "Res"
        if name != "SessionSetupReq" and msg.Header.SessionID != self.session_id:
            res, end = self._failed(res_name, "FAILED_UnknownSession"), True
        elif name not in NEXT[self.state]:
            res, end = self._failed(res_name, "FAILED_SequenceError"), True
        else:
            res, end, self.state = getattr(self, "_" + name)(req)
        out = exi.encode("iso2", V2G_Message(MessageHeaderType(self.session_id), BodyType(**{res_name: res})))
        self.stats.setdefault(name, []).append(time.perf_counter() - t0)
        self.done = end
        if end:
            self.hardware.set_contactors(False)
            self.hardware.set_dc_target(0, 0)
        return out, end

    # ------------------------------------------------------------------ helpers
    def _status(self, code: str = "EVSE_Ready", notification: str = "None") -> t.DC_EVSEStatusType:
        return t.DC_EVSEStatusType(0, notification, self.hardware.isolation(), code)

    def _evse_parameter(self) -> t.DC_EVSEChargeParameterType:
        lim = self.hardware.dc_limits()
        return t.DC_EVSEChargeParameterType(
            self._status(), pv(lim.max_current, "A"), pv(lim.max_power, "W"), pv(lim.max_voltage, "V"),
            pv(lim.min_current, "A"), pv(lim.min_voltage, "V"), None, pv(1, "A"), None)

    def _schedule(self) -> t.SAScheduleListType:
        """One PMax schedule from the charger's power limit (the CSMS's profiles join with OCPP)."""
        entry = t.PMaxScheduleEntryType(t.RelativeTimeIntervalType(0, 86400), None,
                                        pv(self.hardware.dc_limits().max_power, "W"))
        return t.SAScheduleListType([t.SAScheduleTupleType(self.schedule_id, t.PMaxScheduleType([entry]))])

    def _failed(self, res_name: str, code: str):
        cls = getattr(b, res_name + "Type")
        res = cls()
        res.ResponseCode = code
        for fname, default in (("DC_EVSEStatus", self._status("EVSE_Shutdown")), ("EVSEProcessing", "Finished"),
                               ("EVSEPresentVoltage", pv(0, "V")), ("EVSEPresentCurrent", pv(0, "A")),
                               ("EVSECurrentLimitAchieved", False), ("EVSEVoltageLimitAchieved", False),
                               ("EVSEPowerLimitAchieved", False), ("EVSEID", self.evse_id),
                               ("SAScheduleTupleID", self.schedule_id), ("EVSEMaximumVoltageLimit", None)):
            if hasattr(res, fname) and getattr(res, fname) is None and default is not None:
                setattr(res, fname, default)
        if res_name == "ServiceDiscoveryRes":
            res.PaymentOptionList = t.PaymentOptionListType(["ExternalPayment"])
            res.ChargeService = self._charge_service()
        if res_name == "ChargeParameterDiscoveryRes":
            res.DC_EVSEChargeParameter = self._evse_parameter()
        return res

    def _charge_service(self) -> t.ChargeServiceType:
        modes = t.SupportedEnergyTransferModeType(["DC_extended"])
        return t.ChargeServiceType(1, None, "EVCharging", None, False, modes)

    # ------------------------------------------------------------------ requests
    def _SessionSetupReq(self, req):
        return b.SessionSetupResType("OK_NewSessionEstablished", self.evse_id, int(time.time())), False, \
            "SessionSetupReq"

    def _ServiceDiscoveryReq(self, req):
        res = b.ServiceDiscoveryResType("OK", t.PaymentOptionListType(["ExternalPayment"]), self._charge_service())
        return res, False, "ServiceDiscoveryReq"

    def _PaymentServiceSelectionReq(self, req: b.PaymentServiceSelectionReqType):
        services = [s.ServiceID for s in req.SelectedServiceList.SelectedService] if req.SelectedServiceList else []
        if req.SelectedPaymentOption != "ExternalPayment":
            return b.PaymentServiceSelectionResType("FAILED_PaymentSelectionInvalid"), True, self.state
        if 1 not in services:
            return b.PaymentServiceSelectionResType("FAILED_NoChargeServiceSelected"), True, self.state
        return b.PaymentServiceSelectionResType("OK"), False, "PaymentServiceSelectionReq"

    def _AuthorizationReq(self, req):
        return b.AuthorizationResType("OK", "Finished"), False, "AuthorizationReq"

    def _ChargeParameterDiscoveryReq(self, req: b.ChargeParameterDiscoveryReqType):
        p = req.DC_EVChargeParameter
        lim = self.hardware.dc_limits()
        if req.RequestedEnergyTransferMode != "DC_extended" or p is None or \
                value(p.EVMaximumVoltageLimit) < lim.min_voltage:
            return self._failed("ChargeParameterDiscoveryRes", "FAILED_WrongChargeParameter"), True, self.state
        res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, None, self._evse_parameter())
        renegotiated = self.state in ("PowerDeliveryReq:Renegotiate", "ChargeParameterDiscoveryReq:renegotiated")
        return res, False, "ChargeParameterDiscoveryReq" + (":renegotiated" if renegotiated else "")

    def _overdue(self, phase: str, limit: float) -> bool:
        """True once ``phase`` has lasted longer than ``limit`` (measured from its first request)."""
        started = self.phase_started.setdefault(phase, self._now)
        return self._now - started > limit

    def _CableCheckReq(self, req):
        self.hardware.start_isolation_check()
        done = self.hardware.isolation() == "Valid"
        if not done and self._overdue("cable check", self.timers.cable_check):
            return self._failed("CableCheckRes", "FAILED"), True, self.state
        if done:
            self.hardware.set_dc_target(0, 0)
        res = b.CableCheckResType("OK", self._status("EVSE_Ready" if done else "EVSE_IsolationMonitoringActive"),
                                  "Finished" if done else "Ongoing")
        return res, False, "CableCheckReq"

    def _PreChargeReq(self, req: b.PreChargeReqType):
        if self._overdue("pre-charge", self.timers.pre_charge):
            return self._failed("PreChargeRes", "FAILED"), True, self.state
        self.hardware.set_dc_target(min(value(req.EVTargetVoltage), self.hardware.dc_limits().max_voltage),
                                    min(value(req.EVTargetCurrent), 2.0))
        v, _ = self.hardware.present()
        return b.PreChargeResType("OK", self._status(), pv(v, "V")), False, "PreChargeReq"

    def _PowerDeliveryReq(self, req: b.PowerDeliveryReqType):
        progress = str(req.ChargeProgress)
        starts_from = ("PreChargeReq", "ChargeParameterDiscoveryReq:renegotiated")
        if (progress == "Start" and self.state not in starts_from) or \
                (progress == "Renegotiate" and self.state != "CurrentDemandReq"):
            return self._failed("PowerDeliveryRes", "FAILED_SequenceError"), True, self.state
        if progress == "Start" and req.SAScheduleTupleID != self.schedule_id:
            return self._failed("PowerDeliveryRes", "FAILED_TariffSelectionInvalid"), True, self.state
        if progress == "Start":
            self.hardware.set_contactors(True)
        elif progress == "Stop":  # power off: the output discharges for the welding check
            self.hardware.set_dc_target(0, 0)
            self.hardware.set_contactors(False)
        else:  # Renegotiate: hold the voltage, no current until the new schedule is agreed
            self.hardware.set_dc_target(self.hardware.present()[0], 0)
            self.renegotiations += 1
        res = b.PowerDeliveryResType("OK", None, self._status(), None)
        return res, False, f"PowerDeliveryReq:{progress}"

    def _CurrentDemandReq(self, req: b.CurrentDemandReqType):
        lim = self.hardware.dc_limits()
        tv, ti = value(req.EVTargetVoltage), value(req.EVTargetCurrent)
        self.hardware.set_dc_target(min(tv, lim.max_voltage), min(ti, lim.max_current))
        v, i = self.hardware.present()
        meter = t.MeterInfoType("edge-sim", round(self.hardware.energy_wh()), None, None, int(time.time()))
        res = b.CurrentDemandResType(
            "OK", self._status(), pv(v, "V"), pv(i, "A"), ti > lim.max_current, tv > lim.max_voltage,
            v * ti > lim.max_power, pv(lim.max_voltage, "V"), pv(lim.max_current, "A"), pv(lim.max_power, "W"),
            self.evse_id, self.schedule_id, meter, False)
        return res, False, "CurrentDemandReq"

    def _WeldingDetectionReq(self, req):
        v, _ = self.hardware.present()
        return b.WeldingDetectionResType("OK", self._status(), pv(v, "V")), False, "WeldingDetectionReq"

    def _SessionStopReq(self, req: b.SessionStopReqType):
        return b.SessionStopResType("OK"), True, "stopped"
