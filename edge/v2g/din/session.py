"""DIN SPEC 70121 DC charger session (ExternalPayment), sans-IO.

``DinSession.handle(payload, now)`` takes one EXI request and returns the EXI response and whether
the session is over. Which request may follow which is the table ``NEXT`` below, the whole protocol
in one place (h11 style). A request out of order gets its own response type with
FAILED_SequenceError and ends the session; a wrong SessionID gets FAILED_UnknownSession; a request
that does not decode ends the session without a response (there is nothing to answer in).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import exi
from edge.hardware import ChargerHardware
from edge.v2g.physical import from_physical, to_physical
from edge.v2g.timers import DIN as timers_DIN
from edge.v2g.timers import SessionTimers
from exi.model import din_msgbody as b
from exi.model import din_msgdatatypes as t
from exi.model.din_msgdef import BodyType, V2G_Message
from exi.model.din_msgheader import MessageHeaderType

# which requests may come next, after each request (the session starts at "start")
NEXT: dict[str, set[str]] = {
    "start": {"SessionSetupReq"},
    "SessionSetupReq": {"ServiceDiscoveryReq", "SessionStopReq"},
    "ServiceDiscoveryReq": {"ServicePaymentSelectionReq", "SessionStopReq"},
    "ServicePaymentSelectionReq": {"ContractAuthenticationReq", "SessionStopReq"},
    "ContractAuthenticationReq": {"ContractAuthenticationReq", "ChargeParameterDiscoveryReq", "SessionStopReq"},
    "ChargeParameterDiscoveryReq": {"ChargeParameterDiscoveryReq", "CableCheckReq", "SessionStopReq"},
    "CableCheckReq": {"CableCheckReq", "PreChargeReq", "SessionStopReq"},
    "PreChargeReq": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:on": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "CurrentDemandReq": {"CurrentDemandReq", "PowerDeliveryReq", "SessionStopReq"},
    "PowerDeliveryReq:off": {"WeldingDetectionReq", "SessionStopReq", "PowerDeliveryReq"},
    "WeldingDetectionReq": {"WeldingDetectionReq", "SessionStopReq"},
}



def pv(x: float, unit: str) -> t.PhysicalValueType:
    return to_physical(t.PhysicalValueType, x, unit)


value = from_physical


@dataclass
class DinSession:
    hardware: ChargerHardware
    evse_id: bytes = b"\x00"  # DIN: hexBinary, often one byte
    state: str = "start"
    session_id: bytes = field(default_factory=lambda: os.urandom(8))
    done: bool = False
    timers: SessionTimers = field(default_factory=lambda: timers_DIN)
    phase_started: dict[str, float] = field(default_factory=dict)  # first request of a timed phase
    _now: float = 0.0
    stats: dict[str, list[float]] = field(default_factory=dict)  # request -> response times used (s)
    ev_target: tuple[float, float] = (0.0, 0.0)

    def handle(self, payload: bytes, now: float) -> tuple[bytes | None, bool]:
        t0 = time.perf_counter()
        try:
            msg = exi.decode("din", payload)
        except exi.DecodeError:
            self.done = True
            return None, True
        name, req = _request(msg.Body)
        if name is None:
            self.done = True
            return None, True
        self.hardware.update(now)
        self._now = now
        res_name = name[:-3] + "Res"
        if name != "SessionSetupReq" and msg.Header.SessionID != self.session_id:
            res, end = self._failed(res_name, "FAILED_UnknownSession"), True
        else:
            allowed = NEXT[self.state]
            if name not in allowed:
                res, end = self._failed(res_name, "FAILED_SequenceError"), True
            else:
                res, end, self.state = getattr(self, "_" + name)(req)
        out = exi.encode("din", V2G_Message(MessageHeaderType(self.session_id), BodyType(**{res_name: res})))
        self.stats.setdefault(name, []).append(time.perf_counter() - t0)
        self.done = end
        if end:
            self.hardware.set_contactors(False)
            self.hardware.set_dc_target(0, 0)
        return out, end

    # ------------------------------------------------------------------ status helpers
    def _status(self, code: str = "EVSE_Ready") -> t.DC_EVSEStatusType:
        return t.DC_EVSEStatusType(self.hardware.isolation(), code, 0, "None")

    def _failed(self, res_name: str, code: str):
        """A response of the right type with every required element, carrying a failure code."""
        cls = getattr(b, res_name + "Type")
        res = cls()
        res.ResponseCode = code
        for fname, default in (("DC_EVSEStatus", self._status("EVSE_Shutdown")),
                               ("EVSEProcessing", "Finished"), ("EVSEPresentVoltage", pv(0, "V")),
                               ("EVSEPresentCurrent", pv(0, "A")), ("EVSECurrentLimitAchieved", False),
                               ("EVSEVoltageLimitAchieved", False), ("EVSEPowerLimitAchieved", False),
                               ("EVSEID", self.evse_id)):
            if hasattr(res, fname) and getattr(res, fname) is None:
                setattr(res, fname, default)
        if res_name == "ServiceDiscoveryRes":
            res.PaymentOptions = t.PaymentOptionsType(["ExternalPayment"])
            res.ChargeService = self._charge_service()
        if res_name == "ChargeParameterDiscoveryRes":
            res.SAScheduleList, res.DC_EVSEChargeParameter = self._schedule(), self._evse_parameter()
        return res

    def _charge_service(self) -> t.ServiceChargeType:
        return t.ServiceChargeType(t.ServiceTagType(1, None, "EVCharging"), False, "DC_extended")

    def _schedule(self) -> t.SAScheduleListType:
        entry = t.PMaxScheduleEntryType(t.RelativeTimeIntervalType(0, 86400), None,
                                        min(32767, round(self.hardware.dc_limits().max_power / 10)))
        return t.SAScheduleListType([t.SAScheduleTupleType(1, t.PMaxScheduleType(1, [entry]))])

    def _evse_parameter(self) -> t.DC_EVSEChargeParameterType:
        lim = self.hardware.dc_limits()
        return t.DC_EVSEChargeParameterType(
            self._status(), pv(lim.max_current, "A"), pv(lim.max_power, "W"), pv(lim.max_voltage, "V"),
            pv(lim.min_current, "A"), pv(lim.min_voltage, "V"), None, pv(1, "A"), None)

    # ------------------------------------------------------------------ requests
    def _SessionSetupReq(self, req: b.SessionSetupReqType):
        return b.SessionSetupResType("OK_NewSessionEstablished", self.evse_id, None), False, "SessionSetupReq"

    def _ServiceDiscoveryReq(self, req):
        res = b.ServiceDiscoveryResType("OK", t.PaymentOptionsType(["ExternalPayment"]), self._charge_service())
        return res, False, "ServiceDiscoveryReq"

    def _ServicePaymentSelectionReq(self, req: b.ServicePaymentSelectionReqType):
        if req.SelectedPaymentOption != "ExternalPayment":
            return b.ServicePaymentSelectionResType("FAILED_PaymentSelectionInvalid"), True, self.state
        return b.ServicePaymentSelectionResType("OK"), False, "ServicePaymentSelectionReq"

    def _ContractAuthenticationReq(self, req):
        return b.ContractAuthenticationResType("OK", "Finished"), False, "ContractAuthenticationReq"

    def _ChargeParameterDiscoveryReq(self, req: b.ChargeParameterDiscoveryReqType):
        p = req.DC_EVChargeParameter
        lim = self.hardware.dc_limits()
        if p is None or value(p.EVMaximumVoltageLimit) < lim.min_voltage:
            res = self._failed("ChargeParameterDiscoveryRes", "FAILED_WrongChargeParameter")
            return res, True, self.state
        res = b.ChargeParameterDiscoveryResType("OK", "Finished", self._schedule(), None, None,
                                               self._evse_parameter())
        return res, False, "ChargeParameterDiscoveryReq"

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
        target_v = min(value(req.EVTargetVoltage), self.hardware.dc_limits().max_voltage)
        self.hardware.set_dc_target(target_v, min(value(req.EVTargetCurrent), 2.0))
        v, _ = self.hardware.present()
        return b.PreChargeResType("OK", self._status(), pv(v, "V")), False, "PreChargeReq"

    def _PowerDeliveryReq(self, req: b.PowerDeliveryReqType):
        on = bool(req.ReadyToChargeState)
        self.hardware.set_contactors(on)
        if not on:
            self.hardware.set_dc_target(0, 0)
        res = b.PowerDeliveryResType("OK", None, self._status(), None)
        return res, False, "PowerDeliveryReq:" + ("on" if on else "off")

    def _CurrentDemandReq(self, req: b.CurrentDemandReqType):
        lim = self.hardware.dc_limits()
        tv, ti = value(req.EVTargetVoltage), value(req.EVTargetCurrent)
        self.ev_target = (tv, ti)
        self.hardware.set_dc_target(min(tv, lim.max_voltage), min(ti, lim.max_current))
        v, i = self.hardware.present()
        res = b.CurrentDemandResType(
            "OK", self._status(), pv(v, "V"), pv(i, "A"), ti > lim.max_current, tv > lim.max_voltage,
            v * ti > lim.max_power, pv(lim.max_voltage, "V"), pv(lim.max_current, "A"), pv(lim.max_power, "W"))
        return res, False, "CurrentDemandReq"

    def _WeldingDetectionReq(self, req):
        v, _ = self.hardware.present()
        return b.WeldingDetectionResType("OK", self._status(), pv(v, "V")), False, "WeldingDetectionReq"

    def _SessionStopReq(self, req):
        return b.SessionStopResType("OK"), True, "stopped"


def _request(body: BodyType | None) -> tuple[str | None, object]:
    if body is None:
        return None, None
    for name in NEXT["start"] | {n for s in NEXT.values() for n in s}:
        req = getattr(body, name, None)
        if req is not None:
            return name, req
    return None, None
